"""Review 3 of "never losing a user's files, never losing computed work": what a kill -9 leaves at
the edges of a publish is settled by the next run, and nothing else is touched.

Found by killing `python -m harness run` (SIGKILL from inside os.rename/os.replace) at each rename of
a publish: a kill at the first one (the journal of a swap into an existing --out) left a hidden
`.OUT.old-*` folder beside --out forever, and a kill at the rename of a new --out into place left a
whole copy of the outputs in a hidden `.OUT.tmp-*` folder forever (its marker was already dropped).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from test_output_safety import Killed, _dead_pid, _prepare

from harness import file_swap
from harness.outputs import RECORD, STAGING_LOCK, STAGING_MARKER, clean_stale, publish, read_record


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _beside(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


def _kill_at_first_rename(monkeypatch) -> None:
    def killed(*args, **kwargs):
        raise Killed

    monkeypatch.setattr(os, "rename", killed)
    monkeypatch.setattr(os, "replace", killed)


def test_a_kill_before_the_swap_journal_is_in_place_is_cleaned_by_the_next_run(tmp_path, monkeypatch) -> None:
    out = tmp_path / "out"
    staging, tmp = _prepare(out, "e1", {"leaderboard.csv": "old", "scores/a.csv": "old a"})
    publish(tmp, out, "e1", overwrite=False)
    staging.__exit__(None, None, None)
    (out / "notes.md").write_text("mine")
    before = _tree(out)
    staging, tmp = _prepare(out, "e1", {"leaderboard.csv": "new", "scores/a.csv": "new a"})
    def journal_killed(path, text):  # killed in the journal's atomic write: its temporary file is left
        (Path(path).parent / f".{Path(path).name}.q1w2e3r4").write_text(text[:10])
        raise Killed

    monkeypatch.setattr(file_swap, "atomic_write_text", journal_killed)
    monkeypatch.setattr(shutil, "rmtree", lambda *a, **k: None)  # a kill runs no clean-up
    with pytest.raises(Killed):
        publish(tmp, out, "e1", overwrite=False)
    monkeypatch.undo()
    staging.__exit__(None, None, None)
    (aside,) = [p for p in out.parent.iterdir() if p.name.startswith(".out.old-")]
    assert [p.name.startswith("..memprox-journal.json.") for p in aside.iterdir()] == [True]
    empty = tmp_path / f".out.old-{_dead_pid()}-empty"  # killed before even the temporary file
    empty.mkdir()
    lookalike = tmp_path / f".out.old-{_dead_pid()}-user"  # the temporary name beside a user's file
    lookalike.mkdir()
    (lookalike / "..memprox-journal.json.abc123").write_text("{")
    (lookalike / "thesis.tex").write_text("precious")
    clean_stale(out)
    assert _beside(out) == [lookalike.name]
    assert (lookalike / "thesis.tex").read_text() == "precious"
    assert _tree(out) == before


def test_a_kill_at_the_rename_of_a_new_out_into_place_is_cleaned_by_the_next_run(tmp_path, monkeypatch) -> None:
    out = tmp_path / "out"
    staging, tmp = _prepare(out, "e1", {"leaderboard.csv": "board", "scores/a.csv": "a"})
    _kill_at_first_rename(monkeypatch)  # after the marker and lock were dropped, before the rename
    with pytest.raises(Killed):
        publish(tmp, out, "e1", overwrite=False)
    monkeypatch.undo()
    assert tmp.is_dir() and not (tmp / STAGING_MARKER).exists() and not (tmp / STAGING_LOCK).exists()
    assert not out.exists() and read_record(tmp)[0] == "e1"
    no_record = tmp_path / f".out.tmp-{_dead_pid()}-user"  # the name alone, no marker, no record
    no_record.mkdir()
    (no_record / "thesis.tex").write_text("precious")
    clean_stale(out)
    assert _beside(out) == [no_record.name] and (no_record / "thesis.tex").read_text() == "precious"
    staging.__exit__(None, None, None)
    staging, tmp = _prepare(out, "e1", {"leaderboard.csv": "board", "scores/a.csv": "a"})
    publish(tmp, out, "e1", overwrite=False)
    staging.__exit__(None, None, None)
    assert _tree(out)["scores/a.csv"] == b"a" and (out / RECORD).is_file()
    assert _beside(out) == [no_record.name]


def test_unstarted_is_only_an_empty_folder_or_the_journals_temporary_file(tmp_path) -> None:
    folder = tmp_path / "aside"
    folder.mkdir()
    assert file_swap.unstarted(folder)
    (folder / "..memprox-journal.json.k3_x9abc").write_text("{")
    assert file_swap.unstarted(folder)
    (folder / ".memprox-journal.json").write_text("{}")
    assert not file_swap.unstarted(folder)
    assert not file_swap.unstarted(tmp_path / "missing")


def test_a_write_refused_while_evaluating_is_one_line_naming_the_file(make_config, monkeypatch) -> None:
    """A task's table or figure is written into the staging folder by `evaluate`, before `write`:
    a full disk there (pandas raises OSError without a file name) was a traceback, not an error line."""
    import harness.experiment as experiment
    from harness.errors import StorageError
    from harness.experiment import Experiment
    from harness.io import atomic_write

    cfg = make_config(epochs=1)
    Experiment(cfg).run()
    (cfg.out / "notes.md").write_text("mine")
    before = _tree(cfg.out)
    real = experiment.evaluate

    def evaluate(*args, **kwargs):
        found = real(*args, **kwargs)

        def full(path):
            raise OSError(27, "File too large")  # no file name, as pandas' to_csv raises it
        atomic_write(args[-1] / "memorization" / "reference_seed0.csv", full)
        return found

    monkeypatch.setattr(experiment, "evaluate", evaluate)
    exp = Experiment(cfg)
    with pytest.raises(StorageError, match=rf"for {cfg.out} to .*memorization/reference_seed0\.csv \(File too large\)"
                                           ".*every run is kept"):
        exp.run()
    assert _tree(cfg.out) == before
    assert _beside(cfg.out) == []
    assert all(exp.store.get(spec) is not None for spec in exp.plan.runs)


def test_an_out_name_too_long_for_its_working_folders_is_refused_before_training(tmp_path) -> None:
    """`.NAME.tmp-PID-RANDOM` is made beside --out after training: a name that fits the file system but
    leaves no room for that (236 to 240 bytes on most) passed the checks and failed after training."""
    from harness.errors import HarnessError
    from harness.outputs import check_out

    room = os.pathconf(tmp_path, "PC_NAME_MAX") - len(f"..tmp-{os.getpid()}-") - 8
    store = tmp_path / "store"
    check_out(tmp_path / ("a" * room), "e1", False, store)
    for out in (tmp_path / ("b" * (room + 1)), tmp_path / "new" / ("c" * (room + 1))):
        with pytest.raises(HarnessError, match="File name too long for the hidden working folders"):
            check_out(out, "e1", False, store)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
