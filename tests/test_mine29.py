"""mine29: attacks on the session's small cross-file changes. `store prune --dry-run` on a read-only file system said
"Permission denied" (the real prune: "Read-only file system"); a store of runs/ alone in a folder prune may not write
crashed on making locks/ there (its dry run said "would remove 1"); a recorder's `raise ... from` lost its cause
(`raise name_recorder(e) from None`)."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

import harness.store_report as store_report
from harness.cli import main
from harness.recorders.bank import RecorderBank, _named_call

RUN = ["run", "--no-progress", "--dataset", "digits", "--seeds", "1", "--noise-rates", "0.1", "--tasks", "mislabeled",
       "--epochs", "2", "--proxies", "final_loss", "--executor", "inprocess", "--threads", "1"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mine29")
    assert main([*RUN, "--store", str(root / "store"), "--out", str(root / "out")]) == 0
    return root / "store"


def _runs_only(trained: Path, tmp_path: Path) -> Path:
    """A store copied with its runs/ alone (no partial/, no locks/)."""
    store = tmp_path / "store"
    shutil.copytree(trained / "runs", store / "runs")
    return store


def test_dry_run_on_a_read_only_file_system_says_so(trained, tmp_path, monkeypatch, capsys) -> None:
    store = _runs_only(trained, tmp_path)
    real_statvfs, real_access = os.statvfs, os.access

    def statvfs(p):
        st = real_statvfs(p)
        return SimpleNamespace(f_flag=st.f_flag | os.ST_RDONLY) if Path(p).is_relative_to(store) else st

    monkeypatch.setattr(os, "statvfs", statvfs)
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p).is_relative_to(store)
                        else real_access(p, mode, **kw))
    capsys.readouterr()
    assert main(["store", "prune", "--all", "--dry-run", "--store", str(store)]) == 2
    err = capsys.readouterr().err
    assert f"run store folder {store / 'runs'} is not writable (Read-only file system)" in err
    assert "Permission denied" not in err and "would remove" not in err


def test_a_store_of_runs_alone_in_a_folder_prune_may_not_write(trained, tmp_path, monkeypatch, capsys) -> None:
    """prune makes locks/ in the store's folder: a read-only one crashed (PermissionError on mkdir) after the dry
    run had said 'would remove 1'; both now refuse naming that folder, and nothing is removed or made."""
    store = _runs_only(trained, tmp_path)
    real_probe, real_access = store_report.probe_writable, os.access

    def probe(folder):
        if Path(folder) == store:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(folder))
        return real_probe(folder)

    monkeypatch.setattr(store_report, "probe_writable", probe)
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == store else real_access(p, mode, **kw))
    for dry in (["--dry-run"], []):
        capsys.readouterr()
        assert main(["store", "prune", "--all", *dry, "--store", str(store)]) == 2
        err = capsys.readouterr().err
        assert f"run store folder {store} is not writable (Permission denied)" in err, err
        assert "would remove" not in err
    assert sorted(p.name for p in store.iterdir()) == ["runs"] and len(list((store / "runs").iterdir())) == 1
    monkeypatch.undo()
    capsys.readouterr()
    assert main(["store", "prune", "--all", "--dry-run", "--store", str(store)]) == 0
    assert "would remove 1" in capsys.readouterr().out


def _hook(epoch: int) -> None:
    try:
        {}["x"]
    except KeyError as k:
        raise ValueError("bad value") from k


def _hook_implicit(epoch: int) -> None:
    try:
        {}["x"]
    except KeyError:
        raise ValueError("bad value")  # noqa: B904 - the implicit context a traceback shows


@pytest.mark.parametrize("call", ["eval", "batch"])
def test_a_named_recorder_error_keeps_its_cause_and_context(call) -> None:
    def run(hook):
        if call == "eval":
            _named_call("boom_rec@code-0123", hook, 1)
        else:
            bank = SimpleNamespace(timed=False)
            RecorderBank._call(bank, "boom_rec@code-0123", lambda: hook(1))  # type: ignore[arg-type]

    with pytest.raises(ValueError) as info:
        run(_hook)
    assert str(info.value) == "bad value"  # the message kept, the recorder in a note
    assert isinstance(info.value.__cause__, KeyError)
    assert info.value.__notes__ == ["raised in recorder boom_rec (_hook)"] if call == "eval" else True
    with pytest.raises(ValueError) as info:
        run(_hook_implicit)
    assert isinstance(info.value.__context__, KeyError) and not info.value.__suppress_context__
    assert len(info.value.__notes__) == 1


def test_a_store_from_memprox_cache_among_other_files_says_how_to_move_it(tmp_path, monkeypatch, capsys) -> None:
    """No --store given: the refusal's fix ('pass a new or empty folder') named no variable to change."""
    cache = tmp_path / "cache"
    (cache / "store" / "runs" / "2024_host").mkdir(parents=True)  # a TensorBoard-like runs/ where the store would be
    (cache / "store" / "runs" / "2024_host" / "events").write_text("e")
    monkeypatch.setenv("MEMPROX_CACHE", str(cache))
    capsys.readouterr()
    assert main([*RUN, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"the run store {cache / 'store'} (from MEMPROX_CACHE={cache}) is a folder of other files (runs)" in err
    assert err.rstrip().endswith("set MEMPROX_CACHE to another folder (the store is its store/), or pass --store"), err
    assert sorted(p.name for p in (cache / "store").iterdir()) == ["runs"]
