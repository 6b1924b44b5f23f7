"""A data-quality engineer's first hour with memprox, from the README and docs/ alone (journey 20):
every output she is shown must be explained where the docs say it is, and a path given to the
wrong loader must be named for what it is, not as missing."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from harness import run_experiment
from harness.datasets import load_dataset
from harness.errors import HarnessError
from harness.presets import PRESETS

ROOT = Path(__file__).resolve().parents[1]
READING = (ROOT / "docs" / "reading-results.md").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def every_task(tmp_path_factory: pytest.TempPathFactory):
    """One small run of every task (digits, 300 samples, 1 epoch, K = 4): the rows a user reads."""
    folder = tmp_path_factory.mktemp("journey20")
    return run_experiment(proxies="csl,aum", tasks="mislabeled,duplicates,cost,memorization,theory,privacy,suspects",
                          seeds=1, epochs=1, noise_rates=[0.1], subset=300, task_args={"memorization": {"k": 4}},
                          bootstrap=100, executor="inprocess", store=folder / "store", out=folder / "out")


def _metric_table() -> dict[str, set[str]]:
    """reading-results.md's table of metrics: task -> the metric names its rows give."""
    section = READING.split("### Every metric in `leaderboard.csv`", 1)[1].split("\n#", 1)[0]
    names: dict[str, set[str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and re.fullmatch(r"[a-z_]+", cells[0]) and cells[0] != "task":
            names.setdefault(cells[0], set()).update(re.findall(r"`([^`]+)`", cells[1]))
    return names


def test_every_metric_of_every_task_is_explained_in_reading_results(every_task) -> None:
    """The quickstart sends the user to reading-results.md for the columns; 15 of the 36 metrics a
    run of every task writes (theory's, the reference's rows, cost's) were explained nowhere."""
    documented = _metric_table()
    board = every_task.leaderboard
    written = {(task, metric) for task, metric in zip(board["task"], board["metric"])}
    assert len(written) == 36
    missing = sorted((task, metric) for task, metric in written if metric not in documented.get(task, set()))
    assert missing == []


def test_every_row_that_names_no_proxy_is_explained(every_task) -> None:
    """Rows whose `proxy` is the reference or a theory figure (`csl vs memorization`) are named."""
    board = every_task.leaderboard
    others = sorted(set(board["proxy"]) - {"csl", "aum"})
    assert others == ["csl vs learning_time", "csl vs memorization", "learning_time histogram",
                      "learning_time vs memorization", "reference"]
    assert [name for name in others if f"`{name}`" not in READING] == []


def test_the_suspects_columns_are_listed_in_the_order_the_csv_has_them(every_task) -> None:
    """The files table listed `predicted` before `label_name` and the duplicate columns last; a
    reader matching the list against the file found them elsewhere."""
    row = next(line for line in READING.splitlines() if line.startswith("| `suspects/suspects_seed<s>.csv`"))
    listed = re.findall(r"`([a-z_]+)`", row.split("with the columns", 1)[1].split("then every proxy", 1)[0])
    columns = list(every_task.tables["suspects/suspects_seed0.csv"].columns)
    assert columns[-2:] == ["csl", "aum"]
    assert [c for c in listed if c in columns] == columns[:-2]  # digits has no `file` or `text`
    scores = every_task.scores["noise=0.1_seed0"]
    scores_row = next(line for line in READING.splitlines() if line.startswith("| `scores/<setting>_seed<k>.csv`"))
    assert [c for c in scores.columns if c not in ("csl", "aum") and f"`{c}`" not in scores_row] == []


def test_npz_given_a_folder_says_it_is_a_folder(tmp_path: Path) -> None:
    """`npz:` on an image folder said the folder "does not exist"."""
    (tmp_path / "imgs" / "cat").mkdir(parents=True)
    with pytest.raises(HarnessError) as caught:
        load_dataset(f"npz:{tmp_path / 'imgs'}")
    assert str(caught.value) == (f"npz:{tmp_path / 'imgs'}: {tmp_path / 'imgs'} is a folder, not a .npz file; pass "
                                 f"npz:PATH with a .npz file, or imagefolder:{tmp_path / 'imgs'} for a folder of "
                                 "class subfolders")


def test_imagefolder_given_a_file_says_it_is_a_file(tmp_path: Path) -> None:
    """`imagefolder:` on an .npz file said the folder "does not exist"."""
    np.savez(tmp_path / "mine.npz", x=np.zeros((4, 2), np.float32), y=np.array([0, 1, 0, 1]))
    with pytest.raises(HarnessError) as caught:
        load_dataset(f"imagefolder:{tmp_path / 'mine.npz'}")
    assert str(caught.value) == (f"imagefolder:{tmp_path / 'mine.npz'}: {tmp_path / 'mine.npz'} is a file, not a "
                                 f"folder; pass npz:{tmp_path / 'mine.npz'} for an array file")


def test_npz_given_a_csv_points_at_the_conversion(tmp_path: Path) -> None:
    """A CSV passed as it is got "not a zip archive; save it with numpy.savez", which names no way
    from a table with a text label column to x and y."""
    (tmp_path / "mine.csv").write_text("a,b,diagnosis\n1.0,2.0,benign\n3.0,4.0,malignant\n", encoding="utf-8")
    with pytest.raises(HarnessError, match=r"is a text table, which npz: does not read; convert it once to a \.npz "
                                           r"of numbers \(x\) and class ids \(y\), as docs/datasets\.md shows"):
        load_dataset(f"npz:{tmp_path / 'mine.csv'}")
    assert "A table of your own as a CSV file" in (ROOT / "docs" / "datasets.md").read_text(encoding="utf-8")


def test_the_docs_say_how_many_images_of_a_folder_the_default_preset_ranks() -> None:
    """`--tasks suspects` on an image folder ranks only the quick preset's first 4,000 images; the
    datasets page and the quickstart's "rank your own data" line did not say so."""
    cap = PRESETS["quick"].for_dataset("imagefolder:/data/mine").subset
    assert cap == 4000
    datasets = (ROOT / "docs" / "datasets.md").read_text(encoding="utf-8")
    folders = datasets.split("## Image folders", 1)[1].split("\n## ", 1)[0]
    assert f"trains on the first {cap:,} images of a larger folder" in folders
    assert "Every image must have one size" in folders
    quickstart = (ROOT / "docs" / "quickstart.md").read_text(encoding="utf-8")
    line = next(s for s in quickstart.splitlines() if "--tasks suspects" in s and "imagefolder:" in s)
    assert f"first {cap:,} images" in line
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    assert f"`--tasks suspects` ranks every sample (of an image folder, the default preset's first {cap:,}" in readme


def _table(path: Path, copy_under_other_label: bool) -> str:
    """60 random rows of 5 features, 2 classes; optionally row 60 repeats row 0 under the other label."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 5)).astype(np.float32), np.arange(60) % 2
    if copy_under_other_label:
        x, y = np.concatenate([x, x[:1]]), np.concatenate([y, 1 - y[:1]])
    np.savez(path, x=x, y=y)
    return f"npz:{path}"


@pytest.mark.parametrize(("copy", "said"), [(True, "1 pair, 1 with different labels, listed first"),
                                            (False, "none found")])
def test_the_duplicates_line_says_what_the_file_holds(tmp_path: Path, capsys, copy: bool, said: str) -> None:
    """The line read "(copies and near copies among the training samples, pairs with different labels
    first)" for an empty file as for one holding conflicting copies: the user had to open it to know."""
    from harness.cli import main

    out = tmp_path / "out"
    argv = ["run", "--dataset", _table(tmp_path / "t.npz", copy), "--tasks", "suspects", "--proxies", "csl",
            "--seeds", "1", "--epochs", "1", "--executor", "inprocess", "--no-progress",
            "--store", str(tmp_path / "store"), "--out", str(out)]
    assert main(argv) == 0
    line = next(s for s in capsys.readouterr().out.splitlines() if s.startswith("duplicates:"))
    assert line == (f"duplicates: {out / 'suspects' / 'duplicates.csv'}  (copies and near copies among the training "
                    f"samples: {said})")
    assert len(np.loadtxt(out / "suspects" / "duplicates.csv", delimiter=",", skiprows=1, usecols=0, ndmin=1)) == copy


def test_the_start_line_counts_in_the_singular_where_there_is_one(tmp_path: Path, capsys) -> None:
    """A first look (one seed, one setting, one proxy) read `1 proxies · 1 settings × 1 seeds · 1
    distinct runs`."""
    from harness.cli import main

    argv = ["run", "--dataset", _table(tmp_path / "t.npz", False), "--tasks", "suspects", "--proxies", "csl",
            "--seeds", "1", "--epochs", "1", "--executor", "inprocess", "--no-progress",
            "--store", str(tmp_path / "store"), "--out", str(tmp_path / "out")]
    assert main(argv) == 0
    line = next(s for s in capsys.readouterr().err.splitlines() if s.startswith("memprox: "))
    assert " · mlp · 1 epoch · 1 proxy · 1 setting × 1 seed · 1 distinct run · device " in line


def test_the_csv_tables_measurement_holds_as_the_datasets_page_states_it(tmp_path: Path) -> None:
    """datasets.md said the repeat under the other label came first; in four draws of the flipped
    rows it ranked 15th to 18th. The page now states what holds across draws; one draw checks it."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    x, y = data.data.astype(np.float32), data.target.copy()
    flipped = np.random.default_rng(0).choice(len(y), 15, replace=False)
    y[flipped] = 1 - y[flipped]
    x, y = np.concatenate([x, x[[10, 20, 30]]]), np.concatenate([y, [1 - y[10], y[20], y[30]]])
    np.savez(tmp_path / "t.npz", x=x, y=y, classes=np.array(data.target_names))
    result = run_experiment(dataset=f"npz:{tmp_path / 't.npz'}", proxies="csl,aum", tasks="suspects", seeds=1,
                            epochs=10, executor="inprocess", store=tmp_path / "store")
    ranks = result.tables["suspects/suspects_seed0.csv"].set_index("index")["rank"]
    wrong = [*flipped.tolist(), 569]
    assert ranks[wrong].max() <= 40 and (ranks[wrong] <= 15).sum() >= 11
    assert 1 < ranks[569] < ranks[10]  # above its original, not first
    pairs = result.tables["suspects/duplicates.csv"]
    assert pairs[["a", "b", "labels_differ"]].values.tolist() == [[10, 569, True], [20, 570, False], [30, 571, False]]
    page = " ".join((ROOT / "docs" / "datasets.md").read_text(encoding="utf-8").split())
    assert "all 16 were in CSL's top 40" in page and "above its original" in page
    assert "it put the repeat with the other label first" not in page


def test_stdout_holds_the_leaderboard_and_the_paths_the_quickstart_names(tmp_path: Path, capsys) -> None:
    """The quickstart said only the leaderboard and its path go to stdout; a suspects run also prints
    where the suspects and the duplicates are, which a script reading stdout must expect."""
    from harness.cli import main

    argv = ["run", "--dataset", _table(tmp_path / "t.npz", True), "--tasks", "suspects", "--proxies", "csl",
            "--seeds", "1", "--epochs", "1", "--executor", "inprocess", "--no-progress",
            "--store", str(tmp_path / "store"), "--out", str(tmp_path / "out")]
    assert main(argv) == 0
    printed = [line.split(":", 1)[0] for line in capsys.readouterr().out.splitlines()
               if line and not line.startswith(("#", "|"))]
    assert printed == ["leaderboard", "suspects", "duplicates"]
    quickstart = " ".join((ROOT / "docs" / "quickstart.md").read_text(encoding="utf-8").split())
    said = quickstart.split("the paths of what was written go to stdout", 1)[1].split("stderr", 1)[0]
    assert [name for name in printed if f"`{name}:`" not in said] == []


def test_the_test_copies_line_says_how_many_are_under_another_label(tmp_path: Path, capsys) -> None:
    """The warning said "3 of the 10 test samples copy a training sample, 1 under another label"; the
    line that names the file dropped the second half."""
    from harness.cli import main

    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(60, 5)).astype(np.float32), np.arange(60) % 2
    x_test = np.concatenate([x[:3], rng.normal(size=(7, 5)).astype(np.float32)])
    y_test = np.concatenate([[1 - y[0], y[1], y[2]], np.arange(7) % 2])
    np.savez(tmp_path / "t.npz", x=x, y=y, x_test=x_test, y_test=y_test)
    out = tmp_path / "out"
    argv = ["run", "--dataset", f"npz:{tmp_path / 't.npz'}", "--tasks", "suspects", "--proxies", "csl", "--seeds",
            "1", "--epochs", "1", "--executor", "inprocess", "--no-progress", "--store", str(tmp_path / "store"),
            "--out", str(out)]
    assert main(argv) == 0
    line = next(s for s in capsys.readouterr().out.splitlines() if s.startswith("test copies:"))
    assert line == (f"test copies: {out / 'suspects' / 'train_test_duplicates.csv'}  (3 of the 10 test samples copy a "
                    "training sample, 1 under another label)")


def test_a_label_file_is_hashed_where_it_is_read(tmp_path: Path, monkeypatch) -> None:
    """Planning hashed `--noisy-labels` by splitting at the first colon and without expanding `~`, so a
    file in `run:1/` ("label file .../run does not exist") or given as `--noisy-labels=~/labels.npy`
    (the shell leaves that `~`) was refused, though the loader reads both."""
    from harness.corruption import content_sha, read_label_file
    from harness.prepared import file_sha

    labels = np.arange(10) % 3
    folder = tmp_path / "run:1"
    folder.mkdir()
    np.savez(folder / "labels.npz", worse=labels, clean=labels)
    spec = f"{folder / 'labels.npz'}:worse"
    assert file_sha(spec) == content_sha((folder / "labels.npz").read_bytes())
    np.testing.assert_array_equal(read_label_file(spec, 10, 3, expected_sha=file_sha(spec)), labels)
    np.save(tmp_path / "labels.npy", labels)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert file_sha("~/labels.npy") == content_sha((tmp_path / "labels.npy").read_bytes())
    with pytest.raises(HarnessError, match=f"label file {tmp_path / 'nothere.npy'} does not exist"):
        file_sha("~/nothere.npy")


@pytest.mark.parametrize(("scale", "fix"), [(1 / 255, "save (x * 255).round().astype(np.uint8)"),
                                            (1.0, "save x.round().astype(np.uint8)")])
def test_float_images_in_an_npz_are_named_as_such(tmp_path: Path, scale: float, fix: str) -> None:
    """Pictures saved as floats (x / 255, a common habit) trained as features without a word: no image
    grid in the suspects figures, duplicates by feature distance. A table of features says nothing."""
    pixels = np.random.default_rng(0).integers(0, 256, size=(20, 3, 8, 8)).astype(np.float32) * scale
    y = np.arange(20) % 2
    np.savez(tmp_path / "f.npz", x=pixels, y=y)
    with pytest.warns(UserWarning, match=r"holds x of shape \(20, 3, 8, 8\) in float32: image-shaped, but npz: reads "
                                         r"only uint8 as images") as caught:
        dataset = load_dataset(f"npz:{tmp_path / 'f.npz'}")
    assert not dataset.is_image and str(caught[0].message).endswith(fix)
    np.savez(tmp_path / "t.npz", x=pixels.reshape(20, -1), y=y)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_dataset(f"npz:{tmp_path / 't.npz'}")
