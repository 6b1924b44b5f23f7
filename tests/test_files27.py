"""--out under attack (files27): memprox deletes or overwrites only files it wrote, and never loses what it
computed. A folder made where a recorded output of this experiment goes inside `scores/` passed the check with
--overwrite and stopped the run after training (and the refusal without it advised --overwrite); an --out whose
name is not UTF-8 crashed staging on its marker; hard links and symlinks of a user's are replaced, never written
through.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
from dataclasses import replace
from pathlib import Path

import pytest

import harness.config
from harness.errors import HarnessError, StorageError
from harness.experiment import Experiment
from harness.outputs import RECORD, STAGING_MARKER, check_out, staging

SCORE = "scores/noise=0.1_seed0.csv"


def _record_holds(out: Path) -> dict[str, str]:
    files = json.loads((out / RECORD).read_text())["files"]
    for rel, sha in files.items():
        assert hashlib.sha256((out / rel).read_bytes()).hexdigest() == sha, rel
    return files


@pytest.mark.parametrize("overwrite", [False, True], ids=["plain", "overwrite"])
def test_a_folder_at_a_recorded_score_file_is_refused_before_training(make_config, overwrite: bool) -> None:
    """Before: with --overwrite the check passed, the run trained, and publishing refused the folder; without it
    the refusal said '--overwrite to replace it', which could not."""
    cfg = make_config(epochs=1)
    Experiment(cfg).run()
    (cfg.out / SCORE).unlink()
    (cfg.out / SCORE).mkdir()
    (cfg.out / SCORE / "mine.txt").write_text("precious")
    with pytest.raises(HarnessError) as caught:
        Experiment(replace(cfg, overwrite=overwrite))  # the check runs as the experiment is set up
    message = str(caught.value)
    assert f"{cfg.out / SCORE} is a folder, where memprox writes its {SCORE}; move it away" in message
    assert "--overwrite" not in message
    assert (cfg.out / SCORE / "mine.txt").read_text() == "precious"


def test_a_file_where_a_recorded_output_has_its_folder_is_named_once(tmp_path: Path) -> None:
    """A blocker on the way to several recorded files is one item of the line."""
    from harness.outputs import _check_in_the_way

    (tmp_path / "figures").write_text("mine")
    with pytest.raises(HarnessError) as caught:
        _check_in_the_way(tmp_path, ("scores",), ["figures/a.png", "figures/b.png"])
    assert str(caught.value) == (f"--out {tmp_path}: {tmp_path / 'figures'} is a file, where memprox writes the "
                                 "folder of its figures/a.png; move it away and rerun")


def test_a_read_only_scores_folder_is_refused_before_training(make_config, monkeypatch) -> None:
    """Before: only --out itself was probed, so a `scores/` that takes no new file (chmod 555 while --out is
    writable; simulated, as root ignores modes) let the run train, and the swap was refused after it."""
    cfg = make_config(epochs=1)
    Experiment(cfg).run()
    scores, real = (cfg.out / "scores").resolve(), tempfile.mkstemp

    def refused(*args, **kwargs):
        if Path(kwargs.get("dir", "")) == scores:
            raise PermissionError(errno.EACCES, "Permission denied", str(scores / ".write-test-x"))
        return real(*args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", refused)
    with pytest.raises(HarnessError) as caught:
        Experiment(replace(cfg, recipe=replace(cfg.recipe, epochs=2), overwrite=True))
    assert str(caught.value) == (f"output folder {scores} is not writable (Permission denied); make it writable or "
                                 "pass another --out")


def test_the_staging_marker_of_an_out_that_is_not_utf8_holds_its_bytes(tmp_path: Path) -> None:
    """Before: UnicodeEncodeError (surrogates not allowed) as the marker was written, after training."""
    out = tmp_path / os.fsdecode(b"caf\xe9")
    with staging(out) as tmp:
        assert tmp is not None
        marker = tmp / STAGING_MARKER
        assert os.fsencode(out) in marker.read_bytes()
        assert str(out) in marker.read_text(encoding="utf-8", errors="surrogateescape")


def test_an_out_that_is_not_utf8_is_written_and_rewritten(make_config, tmp_path: Path, monkeypatch) -> None:
    """With config's refusal of such an --out taken away, a run publishes into it, and a rerun swaps new outputs
    in (its journal names the folder) with nothing left beside it."""
    monkeypatch.setattr(harness.config, "_check_out_text", lambda out: None, raising=False)
    out = tmp_path / os.fsdecode(b"r\xe9sultats")
    cfg = make_config(epochs=1, out=out)
    Experiment(cfg).run()
    first = (out / "leaderboard.csv").read_bytes()
    Experiment(replace(cfg, recipe=replace(cfg.recipe, epochs=2), overwrite=True)).run()
    assert (out / "leaderboard.csv").read_bytes() != first
    assert SCORE in _record_holds(out)
    assert sorted(os.listdir(os.fsencode(tmp_path))) == [b"r\xe9sultats", b"store"]


def test_a_hard_link_of_an_output_keeps_the_old_bytes_and_a_link_named_like_one_keeps_its_target(
        make_config, tmp_path: Path) -> None:
    """An output is replaced by a rename, never rewritten in place: a user's hard link of it keeps what it held,
    and a symlink named leaderboard.csv is replaced (with --overwrite), its target untouched."""
    cfg = make_config(epochs=1)
    Experiment(cfg).run()
    mine = tmp_path / "mine"
    mine.mkdir()
    os.link(cfg.out / "leaderboard.csv", mine / "kept.csv")
    kept = (mine / "kept.csv").read_bytes()
    (mine / "notes.csv").write_text("notes")
    (cfg.out / "raw.csv").unlink()
    (cfg.out / "raw.csv").symlink_to(mine / "notes.csv")
    with pytest.raises(HarnessError, match="raw.csv was changed after memprox wrote it"):
        Experiment(cfg)
    Experiment(replace(cfg, recipe=replace(cfg.recipe, epochs=2), overwrite=True)).run()
    assert (mine / "kept.csv").read_bytes() == kept != (cfg.out / "leaderboard.csv").read_bytes()
    assert (mine / "notes.csv").read_text() == "notes"
    assert not (cfg.out / "raw.csv").is_symlink() and "raw.csv" in _record_holds(cfg.out)


def test_a_relative_out_whose_current_folder_is_deleted_while_training_is_one_line(make_config, tmp_path: Path,
                                                                                   monkeypatch) -> None:
    """Before: FileNotFoundError from os.getcwd as the outputs were staged, a traceback after training."""
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    exp = Experiment(make_config(epochs=1, out=Path("rel")))
    real_execute = exp.execute

    def execute_then_delete_the_folder():
        ran = real_execute()
        here.rmdir()
        return ran

    monkeypatch.setattr(exp, "execute", execute_then_delete_the_folder)
    with pytest.raises(StorageError) as caught:
        exp.run()
    assert str(caught.value) == ("cannot write outputs: the current folder no longer exists (deleted or moved), so "
                                 "the relative --out rel leads nowhere; cd to the folder to write them in and rerun: "
                                 "every run is kept in the store")
    assert all(exp.store.get(spec) is not None for spec in exp.plan.runs)


def test_a_relative_out_checked_where_the_current_folder_is_gone_says_so(tmp_path: Path, monkeypatch) -> None:
    """Before: '--out rel cannot be resolved ([Errno 2] ...); pass a path without a symbolic link loop'."""
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    with pytest.raises(HarnessError, match=r"^the current folder no longer exists \(deleted or moved\), so the "
                       r"relative --out rel leads nowhere; cd to an existing folder, or pass an absolute --out$"):
        check_out(Path("rel"), "x", False, tmp_path / "store")
