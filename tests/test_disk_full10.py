"""Writes that really fail after training, not monkeypatched ones: the CLI runs in a subprocess whose
file size limit (RLIMIT_FSIZE, SIGXFSZ ignored) is dropped to 0 just as one stage starts writing, so
every write of that stage fails in the kernel with EFBIG, as a full disk fails with ENOSPC. No root,
no mount: these run everywhere. Where the tests run as root and may mount, a real tmpfs is filled
(ENOSPC) too. Each checks: exit code, one line naming the path and the fix, no traceback, every stored
run kept and reused, nothing half-written left, an earlier leaderboard intact.
"""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Runs `python -m harness` with DF_AT="module:function" wrapped: DF_LIMIT (bytes) becomes the file
#: size limit when it is called (and the old one again after it with DF_RESTORE=1); DF_FILL=PATH
#: fills PATH's file system instead. DF_MIN_FREE lowers the free-space check (a small tmpfs).
DRIVER = textwrap.dedent('''
    import errno, importlib, os, resource, signal, sys
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    import harness.cli, harness.io
    if "DF_MIN_FREE" in os.environ:
        harness.io.MIN_FREE_BYTES = int(os.environ["DF_MIN_FREE"])

    def fill(path):
        with open(path, "ab", buffering=0) as f:
            for chunk in (1 << 20, 1 << 12, 1):
                try:
                    while True:
                        f.write(b"x" * chunk)
                except OSError as e:
                    assert e.errno == errno.ENOSPC, e

    def fill_inodes(folder):
        try:
            for i in range(1 << 20):
                open(os.path.join(folder, f"inode{i}"), "x").close()
        except OSError as e:
            assert e.errno == errno.ENOSPC, e

    if os.environ.get("DF_AT"):
        mod, name = os.environ["DF_AT"].split(":")
        owner, _, name = name.rpartition(".")
        where = importlib.import_module(mod)
        where = getattr(where, owner) if owner else where
        orig = getattr(where, name)

        def hooked(*a, **k):
            old = resource.getrlimit(resource.RLIMIT_FSIZE)
            if "DF_FILL" in os.environ:
                fill(os.environ["DF_FILL"])
            elif "DF_FILL_INODES" in os.environ:
                fill_inodes(os.environ["DF_FILL_INODES"])
            else:
                resource.setrlimit(resource.RLIMIT_FSIZE, (int(os.environ["DF_LIMIT"]), old[1]))
            try:
                return orig(*a, **k)
            finally:
                if os.environ.get("DF_RESTORE"):
                    resource.setrlimit(resource.RLIMIT_FSIZE, old)

        if owner:
            setattr(where, name, hooked)
        for m in [] if owner else list(sys.modules.values()):
            if getattr(m, name, None) is orig:
                setattr(m, name, hooked)
    from harness.console import main
    sys.exit(main())
''')


def _run(tmp: Path, at: str = "", *, limit: int = 0, restore: bool = False, fill: Path | None = None,
         store: Path | None = None, out: Path | None = None, extra: tuple[str, ...] = (),
         min_free: int | None = None, fill_inodes: Path | None = None, epochs: int = 2) -> subprocess.CompletedProcess:
    driver = tmp / "driver.py"
    driver.write_text(DRIVER)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MEMPROX_CACHE": str(tmp / "cache"), "DF_AT": at,
           "DF_LIMIT": str(limit), "MEMPROX_TEST_ID": uuid.uuid4().hex}
    env.pop("DF_RESTORE", None)
    env.pop("DF_FILL", None)
    env.pop("DF_FILL_INODES", None)
    if fill_inodes is not None:
        env["DF_FILL_INODES"] = str(fill_inodes)
    if restore:
        env["DF_RESTORE"] = "1"
    if fill is not None:
        env["DF_FILL"] = str(fill)
    if min_free is not None:
        env["DF_MIN_FREE"] = str(min_free)
    return subprocess.run([sys.executable, str(driver), *_args(tmp, store, out, extra, epochs)], env=env,
                          capture_output=True, text=True, timeout=120, cwd=tmp)


def _args(tmp: Path, store: Path | None = None, out: Path | None = None, extra: tuple[str, ...] = (),
          epochs: int = 2) -> list[str]:
    return ["run", "--proxies", "csl", "--tasks", "mislabeled", "--seeds", "1", "--noise-rates", "0.1",
            "--epochs", str(epochs), "--subset", "200", "--device", "cpu", "--executor", "inprocess", "--no-progress",
            "--store", str(store or tmp / "store"), "--out", str(out or tmp / "out"), *extra]


def _run_here(tmp: Path, capfd: pytest.CaptureFixture[str]) -> str:
    """The same command with nothing refused, in this process (a subprocess costs seconds of imports;
    only a refused write needs one, for its file size limit): its `runs:` line."""
    from harness.cli import main

    capfd.readouterr()
    code = main(_args(tmp))
    out, err = capfd.readouterr()
    assert code == 0, err[-3000:]
    return next(line for line in (out + err).splitlines() if line.startswith("runs:"))


def _error_line(proc: subprocess.CompletedProcess) -> str:
    """The one line the failure printed (warnings aside), after checking there is no traceback."""
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    return errors[0]


def _runs_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return next(line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("runs:"))


def _tree(folder: Path) -> dict[str, str]:
    """Every file under `folder` (hidden ones included) -> SHA-256 of its bytes."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _debris(tmp: Path) -> list[str]:
    """Temporary files and folders memprox left: staging or set-aside folders beside --out, temp
    entries in runs/, checkpoint temps in partial/."""
    found = [p.name for p in tmp.iterdir() if p.name.startswith(".out.")]
    for sub in ("runs", "partial"):
        folder = tmp / "store" / sub
        found += [p.name for p in folder.iterdir() if p.name.startswith(".")] if folder.is_dir() else []
    return found


# --- RLIMIT_FSIZE: real EFBIG from the kernel, no root needed ---------------------------------------


def test_outputs_refused_by_the_file_system_name_the_file_and_the_fix(tmp_path: Path, capfd) -> None:
    """The line named the hidden staging folder (`.out.tmp-PID-XXXX/scores/...`, gone when read) and
    sent a user whose disk or file size limit ran out to the folder's permissions ("rerun once the
    folder is writable")."""
    proc = _run(tmp_path, "harness.outputs:write")
    assert proc.returncode == 1
    line = _error_line(proc)
    out = tmp_path / "out"
    assert f"{out}/scores/noise=0.1_seed0.csv (File too large)" in line, line
    assert "raise the file size limit (ulimit -f)" in line and "kept in the store" in line
    assert ".out.tmp-" not in line
    assert not out.exists() and _debris(tmp_path) == []
    assert _run_here(tmp_path, capfd) == "runs: 0 trained, 1 reused from the store"


def _rewrite_refused(tmp_path: Path, stages: tuple[str, ...], capfd: pytest.CaptureFixture[str]) -> None:
    """A complete run, then reruns whose writes at `stages` the file system refuses: the earlier
    outputs stay byte for byte (record included), nothing is left behind, nothing is retrained."""
    _run_here(tmp_path, capfd)
    out = tmp_path / "out"
    before, runs = _tree(out), _tree(tmp_path / "store" / "runs")
    assert {"leaderboard.csv", "leaderboard.md", "raw.csv", "summary.json", ".memprox-outputs.json"} <= set(before)
    for stage in stages:
        proc = _run(tmp_path, stage)
        assert proc.returncode == 1, (stage, proc.stderr[-2000:])
        line = _error_line(proc)
        assert "File too large" in line and str(out) in line
        assert _tree(out) == before and _tree(tmp_path / "store" / "runs") == runs, stage
        assert _debris(tmp_path) == [], stage


def test_an_earlier_leaderboard_survives_when_the_journal_of_its_swap_is_refused(tmp_path: Path, capfd) -> None:
    """The last write before the swap into --out (its journal): every new output is staged by then."""
    _rewrite_refused(tmp_path, ("harness.file_swap:swap_files",), capfd)


@pytest.mark.slow
def test_an_earlier_leaderboard_survives_a_rewrite_refused_at_any_stage(tmp_path: Path, capfd) -> None:
    _rewrite_refused(tmp_path, ("harness.outputs:staging", "harness.outputs:write", "harness.outputs:write_record"),
                     capfd)


def test_a_store_entry_the_file_system_refuses_leaves_no_entry_and_is_trained_again(tmp_path: Path, capfd) -> None:
    proc = _run(tmp_path, "harness.store:_write_arrays")
    assert proc.returncode == 1
    line = _error_line(proc)
    assert f"cannot write run store entry {tmp_path / 'store' / 'runs'}" in line and "runs already stored" in line
    assert list((tmp_path / "store" / "runs").iterdir()) == [] and _debris(tmp_path) == []
    assert not (tmp_path / "out").exists()
    assert _run_here(tmp_path, capfd) == "runs: 1 trained, 0 reused from the store"


def test_a_checkpoint_the_file_system_refuses_is_a_warning_with_its_errno(tmp_path: Path) -> None:
    """torch's zip writer reports a refused write as "[enforce fail at inline_container.cc:...]
    unexpected pos 128 vs 0": the warning now says what the file system said."""
    proc = _run(tmp_path, "harness.checkpoints:save_checkpoint", restore=True, extra=("--checkpoint-every", "1e-6"))
    assert _runs_line(proc) == "runs: 1 trained, 0 reused from the store"
    warned = [line for line in proc.stderr.splitlines() if "cannot write a checkpoint" in line]
    assert warned and all("(File too large); training goes on without it" in w for w in warned), warned
    assert "inline_container" not in proc.stderr
    assert list((tmp_path / "store" / "partial").iterdir()) == [] and _debris(tmp_path) == []


def test_atomic_write_gives_a_short_write_its_errno_and_the_final_name(tmp_path: Path) -> None:
    """numpy's short write raises OSError("3000 requested and 109 written") with no errno: the
    message hid that the disk (or the size limit) was full."""
    code = textwrap.dedent(f'''
        import resource, signal, numpy as np
        from pathlib import Path
        from harness.io import atomic_write
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
        def write(p):
            with open(p, "wb") as f:
                np.save(f, np.zeros(3000))
        try:
            atomic_write(Path({str(tmp_path)!r}) / "x.npy", write)
        except OSError as e:
            print(e.errno, e.strerror, e.filename, sep="|")
    ''')
    proc = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == f"{errno.EFBIG}|File too large|{tmp_path / 'x.npy'}", proc.stderr
    assert list(tmp_path.iterdir()) == []


# --- a real full file system (tmpfs; root only) -------------------------------------------------------


@pytest.fixture
def tmpfs(tmp_path: Path):
    """A 4 MiB tmpfs (the test skips where it cannot mount one: not root, no mount namespace)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs needs root")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.slow
def test_a_full_disk_after_training_names_the_output_and_says_free_some_space(tmpfs: Path) -> None:
    kw = {"store": tmpfs / "store", "out": tmpfs / "out", "min_free": 0}
    _runs_line(_run(tmpfs, **kw))
    before = _tree(tmpfs / "out")
    proc = _run(tmpfs, "harness.outputs:write", fill=tmpfs / "filler", **kw)
    assert proc.returncode == 1
    line = _error_line(proc)
    assert f"{tmpfs / 'out'}/" in line and "(No space left on device); free some space on its file system" in line
    assert _tree(tmpfs / "out") == before and _debris(tmpfs) == []
    (tmpfs / "filler").unlink()
    assert _runs_line(_run(tmpfs, **kw)) == "runs: 0 trained, 1 reused from the store"


def test_an_output_folder_on_a_full_disk_is_refused_before_training_with_the_fix(tmp_path: Path) -> None:
    """Out of inodes, the write probe failed with ENOSPC and the refusal said "is not writable ...;
    pass a writable --out" (its permissions were fine)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,nr_inodes=8", "tmpfs", str(mnt)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs needs root")
    try:
        for i in range(64):
            try:
                (mnt / f"f{i}").touch()
            except OSError as e:
                assert e.errno == errno.ENOSPC
                break
        from harness.errors import HarnessError
        from harness.outputs import check_out

        with pytest.raises(HarnessError) as info:
            check_out(mnt / "out", "id", False, tmp_path / "store")
        assert str(info.value) == (f"output folder {mnt / 'out'} is full (No space left on device); free some space "
                                   "on its file system or pass another --out")
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_store_out_of_inodes_when_an_entry_is_claimed_is_one_line(tmp_path: Path) -> None:
    """Out of inodes (a store of many small files), no lock file can be made for a new entry:
    `lock.acquire` raised OSError ENOSPC through `Runner._train_claimed`, a traceback."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,nr_inodes=64", "tmpfs", str(mnt)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs needs root")
    try:
        proc = _run(tmp_path, "harness.runner:Runner._train_claimed", store=mnt / "store", min_free=0,
                    fill_inodes=mnt)
        assert proc.returncode == 1
        line = _error_line(proc)
        assert f"{mnt / 'store' / 'locks'}" in line and "No space left on device" in line
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_store_entry_cut_short_says_the_disk_is_full_and_the_fix(tmp_path: Path) -> None:
    """np.save cut short by the file system raises OSError("1600 requested and 218 written") with no
    errno: the line said neither that room ran out nor to make room."""
    proc = _run(tmp_path, "harness.store:_write_arrays", limit=1000, epochs=8)  # arrays > stdio's buffer
    assert proc.returncode == 1
    line = _error_line(proc)
    assert "requested and" not in line and "(File too large)" in line and "raise the file size limit" in line, line


def test_torch_save_refused_by_the_file_system_is_an_oserror_naming_the_file(tmp_path: Path) -> None:
    """`atomic_write(path, lambda p: torch.save(obj, p))` (the transformers integration's tracker state)
    raised RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"): no
    file, no errno. `harness.checkpoints.torch_save` is the saver to pass it."""
    code = textwrap.dedent(f'''
        import resource, signal, torch
        from pathlib import Path
        from harness.checkpoints import torch_save
        from harness.io import atomic_write
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
        try:
            atomic_write(Path({str(tmp_path)!r}) / "state.pt", lambda p: torch_save({{"x": torch.zeros(5000)}}, p))
        except OSError as e:
            print(e.errno, e.strerror, e.filename, sep="|")
    ''')
    proc = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == f"{errno.EFBIG}|File too large|{tmp_path / 'state.pt'}", proc.stderr[-2000:]
    assert list(tmp_path.iterdir()) == []
