"""The unknown-dataset hint on odd paths (attack23): one line, exit 2, the kind that reads the file."""

from __future__ import annotations

import pytest

from tests.test_bad_input import argv, assert_refused, no_training  # noqa: F401  (the fixture)


@pytest.mark.parametrize("name, needle", [
    # the hint used to be dropped when the home of ~user could not be found, or the name was too
    # long for the file system: the suffix alone says the kind
    ("~nosuchuser23/x.npz", "; did you mean --dataset npz:~nosuchuser23/x.npz?"),
    ("x" * 300 + ".npz", f"; did you mean --dataset npz:{'x' * 300}.npz?"),
    ("~nosuchuser23/t.CSV", "; a CSV table is converted to an .npz file first"),
    # a line break in the name split the error over two lines
    ("bad\nname.npz", "; did you mean --dataset 'npz:bad\\nname.npz'?"),
])
def test_a_path_without_its_kind_gets_its_hint_on_one_line(tmp_path, capsys, no_training, name,  # noqa: F811
                                                            needle) -> None:
    assert_refused(tmp_path, capsys, argv(tmp_path, {"--dataset": name}), needle)


def test_a_folder_with_a_tab_in_its_name_is_quoted(tmp_path, capsys, no_training, monkeypatch) -> None:  # noqa: F811
    (tmp_path / "inputs" / "my\tphotos").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "inputs")
    assert_refused(tmp_path, capsys, argv(tmp_path, {"--dataset": "my\tphotos"}),
                   "; did you mean --dataset 'imagefolder:my\\tphotos' (a folder per class) or 'hf:my\\tphotos'")


def test_a_name_with_a_colon_is_hinted_only_when_it_is_an_existing_path(tmp_path, monkeypatch) -> None:
    """`harness.datasets.base` asks for a hint on every unknown name, colon or not (a colon names a
    kind): an existing file or folder with a colon gets its kind, an unknown kind (NPZ:x.npz) is no
    path to suggest npz: for (tests/test_newcomer_errors23.py has the first through load_dataset)."""
    from harness.datasets.names import path_hint

    monkeypatch.chdir(tmp_path)
    (tmp_path / "a:b.npz").write_bytes(b"")
    (tmp_path / "photos:2024").mkdir()
    assert path_hint("./a:b.npz") == "; did you mean --dataset npz:./a:b.npz?"
    assert path_hint("photos:2024").startswith("; did you mean --dataset imagefolder:photos:2024 ")
    assert path_hint("NPZ:x.npz") == ""
    assert path_hint("hf-hub:org/name") == ""


def test_a_folder_saved_by_hugging_face_datasets_is_hinted_as_hf(tmp_path) -> None:
    """A save_to_disk folder was offered imagefolder: first; its files say it is hf:."""
    from harness.datasets.names import path_hint

    for markers in (("state.json", "dataset_info.json"), ("dataset_dict.json",)):
        folder = tmp_path / markers[0].split(".")[0]
        folder.mkdir()
        for marker in markers:
            (folder / marker).write_text("{}")
        assert path_hint(str(folder)) == (f"; did you mean --dataset hf:{folder} (a Hugging Face dataset saved with "
                                          "save_to_disk)?")
    half = tmp_path / "half"  # state.json alone: hf: refuses it, so the hint must not send the user there only
    half.mkdir()
    (half / "state.json").write_text("{}")
    assert path_hint(str(half)).startswith(f"; did you mean --dataset imagefolder:{half} ")
    (tmp_path / "photos" / "cat").mkdir(parents=True)
    assert path_hint(str(tmp_path / "photos")).startswith(f"; did you mean --dataset imagefolder:{tmp_path}/photos ")
