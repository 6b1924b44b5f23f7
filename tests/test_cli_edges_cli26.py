"""Command-line edges a careless or unlucky user meets (cli26): each refused before training, in one line."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from _cli_process import TINY
from _cli_process import run_cli as _cli


def test_unknown_mplbackend_is_refused_before_training(tmp_path: Path) -> None:
    """MPLBACKEND=qt4agg (a backend matplotlib dropped in 3.5) made `import matplotlib` raise ValueError
    when the suspects task drew its figure: after training, a traceback, exit 1, no output written."""
    done = _cli(["run", *TINY, "--tasks", "suspects", "--store", str(tmp_path / "store"), "--out",
                 str(tmp_path / "out")], tmp_path, MPLBACKEND="qt4agg")
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and lines[0].startswith("error: MPLBACKEND='qt4agg' is not a backend"), done.stderr
    assert "suspects task imports matplotlib" in lines[0] and "MPLBACKEND=agg" in lines[0]
    assert not (tmp_path / "store").exists() and not (tmp_path / "out").exists()  # nothing trained, nothing written


def test_unknown_mplbackend_is_no_concern_of_tasks_without_figures(monkeypatch: pytest.MonkeyPatch) -> None:
    """mislabeled, duplicates, cost and memorization draw nothing: they ran with such a backend and still do,
    without importing matplotlib for the check."""
    from harness.config import check_figure_backend

    monkeypatch.setenv("MPLBACKEND", "qt4agg")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # importing it now would raise ImportError
    assert check_figure_backend(("mislabeled", "duplicates", "cost", "memorization", "no-such-task")) is None


def test_a_path_given_to_a_dataset_that_takes_none_is_no_data_folder(tmp_path: Path) -> None:
    """`--dataset digits:/tmp` with --out under /tmp was refused as "--out ... is inside the dataset folder
    /tmp", a folder digits never reads, instead of by the loader's "dataset 'digits' takes no path"."""
    from types import SimpleNamespace

    from harness.config import data_folders

    def folders(dataset: str) -> tuple[Path, ...]:
        return data_folders(SimpleNamespace(dataset=dataset, data_root=None))

    assert folders(f"digits:{tmp_path}") == ()
    assert folders(f"cifar10:{tmp_path}") == ()
    assert folders(f"imagefolder:{tmp_path}") == (tmp_path,)
    assert folders(f"npz:{tmp_path / 'd.npz'}") == (tmp_path / "d.npz",)
    assert folders(f"plugin-not-loaded:{tmp_path}") == (tmp_path,)  # it may read the path: kept apart from --out
    done = _cli(["run", *TINY, "--tasks", "mislabeled", "--dataset", f"digits:{tmp_path}", "--out",
                 str(tmp_path / "out")], tmp_path)
    assert done.returncode == 2 and done.stderr.strip() == (
        f"error: dataset 'digits' takes no path (got 'digits:{tmp_path}'); use --dataset digits"), done.stderr


@pytest.mark.parametrize("command", [["info"], ["prune", "--all", "--dry-run"]])
def test_store_commands_given_a_folder_inside_a_store_name_the_store(tmp_path: Path, capsys, command) -> None:
    """`store info --store ~/.cache/memprox/store/runs` (tab completion goes one folder too far) said the folder
    "holds no run store (no runs/ folder)", which left the user to guess that the store is its parent."""
    from harness.cli import main

    store = tmp_path / "store"
    (store / "runs" / "0123456789abcdef0123").mkdir(parents=True)
    (store / "partial").mkdir()
    for inside, shown in (("runs", "runs/"), ("partial", "partial/"), ("runs/0123456789abcdef0123",
                                                                        "runs/0123456789abcdef0123/")):
        assert main(["store", *command, "--store", str(store / inside)]) == 2
        err = capsys.readouterr().err
        assert err == f"error: --store {store / inside} is {shown} of the run store {store}, not a store; pass " \
                      f"--store {store}\n"
    assert main(["store", *command, "--store", str(tmp_path / "elsewhere")]) == 2  # no store above: as before
    assert "does not exist; pass the --store your runs were trained into" in capsys.readouterr().err
    assert sorted(p.name for p in store.rglob("*")) == ["0123456789abcdef0123", "partial", "runs"]  # nothing made


@pytest.mark.parametrize("flag", ["--out", "--store", "--data-root"])
def test_a_dash_for_a_folder_is_refused_not_made_a_folder_named_dash(tmp_path: Path, monkeypatch, capsys,
                                                                     flag: str) -> None:
    """`--out -` (the convention for stdout) trained, wrote and printed as asked, into a new folder named
    '-' of the current folder, which `rm -r -` then does not remove; `./-` still names such a folder."""
    from harness.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MEMPROX_CACHE", str(tmp_path / "cache"))
    args = ["run", *TINY, "--tasks", "mislabeled", "--dataset", "mnist" if flag == "--data-root" else "digits"]
    assert main([*args, flag, "-"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {flag} - names no stream here: {flag} is a folder") and err.count("\n") == 1
    assert err.rstrip().endswith(f"pass a folder, or {flag} ./- for one named '-'")
    assert not (tmp_path / "-").exists()


@pytest.mark.parametrize(("command", "line"), [
    (["info"], "interrupted; nothing was changed"),
    (["prune", "--all", "--dry-run"], "interrupted; nothing was changed"),  # it removes nothing (attackc26)
    (["prune", "--all"], "interrupted; what was removed is gone whole, the rest is kept whole, rerun to resume")])
def test_ctrl_c_in_a_store_command_says_what_it_did(tmp_path: Path, monkeypatch, capsys, command, line) -> None:
    """A Ctrl-C while `store info` read the store printed a run's line: "runs that finished are kept in the
    store, rerun to resume", for a command that trains nothing."""
    import harness.store_report as store_report
    from harness.cli import main

    def interrupted(root: Path):
        raise KeyboardInterrupt

    (tmp_path / "runs").mkdir()
    monkeypatch.setattr(store_report, "scan", interrupted)
    assert main(["store", *command, "--store", str(tmp_path)]) == 130
    assert capsys.readouterr().err == line + "\n"


def test_an_out_path_that_is_not_utf8_is_refused_before_training(tmp_path: Path, monkeypatch, capsys) -> None:
    """`--out $'bad\\xff'` (a Latin-1 name), or a UTF-8 one read under LC_ALL=C with PYTHONUTF8=0, trained every
    run and then ended in a UnicodeEncodeError traceback writing --out's staging note: every output lost."""
    from harness.cli import main

    monkeypatch.setenv("MEMPROX_CACHE", str(tmp_path / "cache"))
    out = tmp_path / os.fsdecode(b"bad\xff")
    assert main(["run", *TINY, "--tasks", "mislabeled", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: --out {str(out)!r} is not valid UTF-8 text; pass an --out whose path is UTF-8 (rename " \
                  "the folder, e.g. with convmv -f latin1 -t utf8)\n"
    assert not (tmp_path / "cache").exists() and not out.exists()  # nothing trained, nothing written
    monkeypatch.chdir(tmp_path)
    assert main(["run", *TINY, "--tasks", "mislabeled", "--out", "café"]) == 0  # UTF-8 read as UTF-8: fine
    assert (tmp_path / "café" / "leaderboard.csv").is_file()
