"""files29: ways to lose a user's files around --out and the run store (helper session 29)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.file_swap import RECORD
from harness.outputs import STAGING_LOCK, clean_stale, write_record


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _published(folder: Path, files: dict[str, str]) -> None:
    """`folder` as memprox publishes it: `files` and their record (no staging marker)."""
    for rel, text in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    write_record(folder, "e1")


OUTPUTS = {"leaderboard.csv": "board", "summary.json": "{}", "scores/a.csv": "a"}


@pytest.mark.parametrize("where", ["beside", "beside-mkdtemp-shaped", "inside"])
def test_an_output_folder_named_like_staging_keeps_the_users_files(tmp_path, where) -> None:
    """A folder memprox published (its record, no marker) whose name matches a staging folder's pattern of
    another --out, with a file of the user's put in it, was removed whole by the next run on that --out: the
    record alone was taken for a staging folder whose publish was killed before its rename."""
    out, dead = tmp_path / "out", _dead_pid()
    out.mkdir()
    name = {"beside": ".out.tmp-1", "beside-mkdtemp-shaped": f".out.tmp-{dead}-abcd1234",
            "inside": f"out/.memprox-tmp-{dead}-abcd1234"}[where]
    theirs = tmp_path / name
    theirs.mkdir()
    _published(theirs, OUTPUTS)
    (theirs / "thesis.tex").write_text("precious")
    clean_stale(out)
    assert (theirs / "thesis.tex").read_text() == "precious"
    assert (theirs / "leaderboard.csv").read_text() == "board" and (theirs / RECORD).is_file()


@pytest.mark.parametrize("lock", [False, True], ids=["lock-removed", "lock-left"])
def test_a_publish_killed_before_its_rename_is_still_cleaned(tmp_path, lock) -> None:
    """What a kill between removing the marker (and the lock) and renaming the staging folder leaves: still removed."""
    out, dead = tmp_path / "out", _dead_pid()
    out.mkdir()
    stale = tmp_path / f".out.tmp-{dead}-abcd1234"
    stale.mkdir()
    _published(stale, OUTPUTS)
    if lock:
        (stale / STAGING_LOCK).write_text("")
    clean_stale(out)
    assert not stale.exists()


@pytest.mark.parametrize("extra", ["changed", "link", "empty-folder"])
def test_a_killed_publish_with_anything_more_stays(tmp_path, extra) -> None:
    """A recorded file changed since, a link, or a folder no recorded file is in: not provably a staging folder."""
    out, dead = tmp_path / "out", _dead_pid()
    out.mkdir()
    stale = tmp_path / f".out.tmp-{dead}-abcd1234"
    stale.mkdir()
    _published(stale, OUTPUTS)
    if extra == "changed":
        (stale / "scores/a.csv").write_text("edited")
    elif extra == "link":
        (stale / "scores/link").symlink_to(tmp_path)
    else:
        (stale / "mine").mkdir()
    clean_stale(out)
    assert stale.is_dir() and (stale / "leaderboard.csv").read_text() == "board"


# --- a project's own runs/ (TensorBoard's) is not a run store ----------------------------------------------------


def _project(root: Path) -> None:
    (root / "runs" / "Dec05_12-00-00_host").mkdir(parents=True)
    (root / "runs" / "Dec05_12-00-00_host" / "events.out.tfevents.1").write_text("tensorboard")
    (root / "train.py").write_text("code")


@pytest.mark.parametrize("with_code", [True, False], ids=["project", "runs-alone"])
def test_a_projects_tensorboard_runs_is_not_taken_for_a_store(tmp_path, with_code) -> None:
    """`--store .` in a PyTorch project whose SummaryWriter wrote runs/<date>_<host>/ was accepted as an existing
    store: locks/ and partial/ were added among the user's files and the run stored into TensorBoard's runs/."""
    from harness.errors import HarnessError
    from harness.store import RunStore

    proj = tmp_path / "proj"
    _project(proj)
    if not with_code:
        (proj / "train.py").unlink()
    with pytest.raises(HarnessError, match=r"--store .*proj is a folder of other files \(runs") as e:
        RunStore(proj, create=False).check_writable()
    assert ("train.py" in str(e.value)) == with_code
    assert sorted(p.name for p in proj.iterdir()) == (["runs", "train.py"] if with_code else ["runs"])
    assert [p.name for p in (proj / "runs").iterdir()] == ["Dec05_12-00-00_host"]


@pytest.mark.parametrize("layout", ["store", "runs-of-entries", "old-store-with-a-note"])
def test_stores_stay_usable(tmp_path, layout) -> None:
    """A store (runs/ beside locks/ or partial/, whatever else is there), or a runs/ holding entries alone."""
    from harness.store import RunStore

    store = tmp_path / "store"
    (store / "runs" / ("0" * 20)).mkdir(parents=True)
    (store / "runs" / ".tmp-x").mkdir()
    if layout == "store":
        (store / "locks").mkdir()
        (store / "runs" / "notes.txt").write_text("mine")
    if layout == "old-store-with-a-note":
        (store / "notes.txt").write_text("mine")
    RunStore(store, create=False).check_writable()  # no refusal


# --- removing a folder never changes the mode of a file's other hard links -----------------------------------------


def test_rmtree_of_a_read_only_folder_leaves_hard_links_modes_alone(tmp_path, monkeypatch) -> None:
    """An unlink refused (a read-only entry folder; simulated, root ignores modes) made io.rmtree chmod the file
    0700 too, which every hard link of it shares: a `cp -al` backup of the store lost its mode (0444 -> 0700)."""
    import os
    import stat as st

    from harness import io

    entry, backup = tmp_path / "runs" / ".old-x", tmp_path / "backup"
    entry.mkdir(parents=True)
    backup.mkdir()
    (entry / "a.npy").write_bytes(b"array")
    os.link(entry / "a.npy", backup / "a.npy")
    os.chmod(backup / "a.npy", 0o444)
    real_unlink, refused = os.unlink, []

    def unlink(path, *args, **kwargs):
        if str(path).endswith("a.npy") and not refused:
            refused.append(path)
            raise PermissionError(13, "Permission denied", str(path))
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", unlink)
    io.rmtree(entry)
    assert refused and not entry.exists()
    assert st.S_IMODE(os.stat(backup / "a.npy").st_mode) == 0o444 and (backup / "a.npy").read_bytes() == b"array"


# --- a user's .npy in an older memprox's entry survives the run that recomputes it --------------------------------


def test_a_users_npy_in_an_unchecked_entry_survives_its_recompute(tmp_path) -> None:
    """An entry an older memprox stored (its manifest without a checksum) is recomputed by the next run that needs
    it; a `.npy` of the user's in it was counted as the store's (the manifest was taken as unreadable) and deleted
    with the old entry, though `store prune` keeps that entry for it."""
    import json

    import numpy as np

    from harness.cli import main

    args = ["run", "--no-progress", "--dataset", "digits", "--seeds", "1", "--noise-rates", "0.1", "--tasks",
            "mislabeled", "--epochs", "2", "--proxies", "final_loss", "--executor", "inprocess", "--threads", "1",
            "--store", str(tmp_path / "store")]
    assert main([*args, "--out", str(tmp_path / "out1")]) == 0
    (entry,) = (tmp_path / "store" / "runs").iterdir()
    manifest = json.loads((entry / "manifest.json").read_text())
    manifest.pop("manifest_sha256")  # as a memprox before 1 December 2026 wrote it
    (entry / "manifest.json").write_text(json.dumps(manifest))
    np.save(entry / "my_analysis.npy", np.arange(5))
    assert main([*args, "--out", str(tmp_path / "out2")]) == 0
    assert "manifest_sha256" in json.loads((entry / "manifest.json").read_text())  # recomputed, stored again
    assert np.array_equal(np.load(entry / "my_analysis.npy"), np.arange(5))
    assert [p.name for p in (tmp_path / "store" / "runs").iterdir()] == [entry.name]  # nothing left aside


@pytest.mark.parametrize("how", ["prune-damaged", "recompute"])
def test_a_users_npy_in_an_entry_whose_manifest_does_not_parse_survives(tmp_path, capsys, how) -> None:
    """Where no manifest names the store's arrays, any `.npy` counted as one: `store prune --damaged` removed an
    entry whose manifest.json did not parse with a user's `my_analysis.npy` in it, and a run recomputing it deleted
    the file with the old entry. A store array is named `KEY.NAME.npy`."""
    import numpy as np

    from harness.cli import main

    args = ["run", "--no-progress", "--dataset", "digits", "--seeds", "1", "--noise-rates", "0.1", "--tasks",
            "mislabeled", "--epochs", "2", "--proxies", "final_loss", "--executor", "inprocess", "--threads", "1",
            "--store", str(tmp_path / "store")]
    assert main([*args, "--out", str(tmp_path / "out1")]) == 0
    (entry,) = (tmp_path / "store" / "runs").iterdir()
    (entry / "manifest.json").write_text("garbage{")
    np.save(entry / "my_analysis.npy", np.arange(5))
    if how == "prune-damaged":
        capsys.readouterr()
        assert main(["store", "prune", "--damaged", "--store", str(tmp_path / "store")]) == 0
        assert "removed 0 of 0" in capsys.readouterr().out
        assert (entry / "manifest.json").read_text() == "garbage{"
    else:
        assert main([*args, "--out", str(tmp_path / "out2")]) == 0
        assert (entry / "manifest.json").read_text() != "garbage{"  # recomputed, stored again
    assert np.array_equal(np.load(entry / "my_analysis.npy"), np.arange(5))
