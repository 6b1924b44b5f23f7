"""memprox in the environments real users and CI boxes have: an ASCII locale or PYTHONIOENCODING,
a deleted current folder, odd MEMPROX_CACHE and HOME values, non-UTF-8 names, other PYTHONHASHSEEDs.

Each end-to-end check runs the CLI as a subprocess with the environment changed (the locale and the
hash seed are fixed when a process starts); the others call the function that decided it.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from harness import console
from harness.cli import main
from harness.datasets import default_cache_dir, load_dataset
from harness.errors import HarnessError

REPO = Path(__file__).resolve().parents[1]
#: The tiniest run the CLI accepts: one proxy, one task, one epoch, in this process (add --dataset, --subset).
TINY = ["run", "--proxies", "csl", "--tasks", "mislabeled", "--noise-rates", "0.1", "--seeds", "1", "--epochs", "1",
        "--bootstrap", "0", "--executor", "inprocess", "--no-progress"]


def _env(tmp_path: Path, **changes: str | None) -> dict[str, str]:
    """This process's environment with memprox importable, the cache under tmp_path, and `changes`
    (None: unset)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "MEMPROX_CACHE": str(tmp_path / "cache")}
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def _memprox(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """`python -m harness ARGS`, its output as bytes (what the stream really got)."""
    return subprocess.run([sys.executable, "-m", "harness", *args], env=env, cwd=cwd, capture_output=True,
                          timeout=timeout)


def _stream(encoding: str, errors: str = "strict") -> io.TextIOWrapper:
    return io.TextIOWrapper(io.BytesIO(), encoding=encoding, errors=errors)


def _written(stream: io.TextIOWrapper) -> bytes:
    stream.flush()
    return stream.buffer.getvalue()  # type: ignore[attr-defined]


# --- printing to a stream that is not UTF-8 ----------------------------------------------------------------------
def test_a_line_with_symbols_on_an_ascii_stdout_is_printed_in_ascii() -> None:
    """PYTHONIOENCODING=ascii (or LC_ALL=C, PYTHONUTF8=0): the leaderboard's `mean ± std` raised
    UnicodeEncodeError after training; now memprox's symbols become ASCII, other text escapes."""
    out = _stream("ascii")
    console.write_line("mean ± std · é → 中", out)
    assert _written(out) == b"mean +- std - \\xe9 -> \\u4e2d\n"


def test_a_stream_that_encodes_the_text_gets_it_unchanged() -> None:
    latin = _stream("latin-1")
    console.write_line("mean ± std · café → x", latin)
    assert _written(latin) == "mean ± std · café -> x\n".encode("latin-1")  # only → has no Latin-1 byte
    utf8 = _stream("utf-8")
    console.write_line("± · → 中", utf8)
    assert _written(utf8) == "± · → 中\n".encode()


def test_stderr_gets_ascii_symbols_not_backslash_escapes() -> None:
    """stderr's backslashreplace printed `digits (N=300) \\xb7 mlp`: readable now."""
    plain = console.encodable("plan 1.2 s · load 0.1 s", _stream("ascii", "backslashreplace"))
    assert plain == "plan 1.2 s - load 0.1 s"


def test_a_paths_undecodable_bytes_go_out_as_they_came_in() -> None:
    """Under LC_ALL=C a UTF-8 folder name arrives as surrogates; stdout's surrogateescape writes the bytes back."""
    out = _stream("ascii", "surrogateescape")
    console.write_line("leaderboard: /tmp/\udcc3\udca9 ± x", out)
    assert _written(out) == b"leaderboard: /tmp/\xc3\xa9 +- x\n"


def test_a_latin1_folder_name_on_a_strict_utf8_stdout_is_escaped() -> None:
    """PYTHONIOENCODING=utf-8 (strict) and --out with a Latin-1 byte: the `leaderboard: PATH` line raised
    `surrogates not allowed` after training (exit 1, traceback)."""
    out = _stream("utf-8")
    console.write_line("leaderboard: /tmp/lat\udce9/leaderboard.csv · ok", out)
    assert _written(out) == "leaderboard: /tmp/lat\\udce9/leaderboard.csv · ok\n".encode()


def test_the_cli_on_an_ascii_stdout_prints_the_leaderboard_and_exits_0(tmp_path: Path) -> None:
    """End to end: the table is printed (exit 0), not lost to a UnicodeEncodeError after training (exit 1)."""
    env = _env(tmp_path, PYTHONIOENCODING="ascii")
    args = [*TINY, "--dataset", "digits", "--subset", "150", "--out", str(tmp_path / "out"), "--store",
            str(tmp_path / "store")]
    proc = _memprox(args, env, tmp_path)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-2000:]
    assert b"### mislabeled: auroc (mean +- std over 1 seed(s))" in proc.stdout
    assert proc.stdout.isascii() and proc.stderr.isascii()
    assert b"\\xb7" not in proc.stderr and b" - mlp - 1 epoch - " in proc.stderr  # the header line, plain


# --- the process's environment -----------------------------------------------------------------------------------
def test_a_deleted_current_folder_is_one_error_line(tmp_path: Path) -> None:
    """Importing torch there died with `Intel oneMKL FATAL ERROR: Cannot load libtorch_cpu.so`."""
    gone = tmp_path / "gone"
    gone.mkdir()
    code = ("import os, runpy, sys; os.chdir(sys.argv[1]); os.rmdir(sys.argv[1]); sys.argv = ['memprox', 'run']; "
            "runpy.run_module('harness', run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", code, str(gone)], env=_env(tmp_path), capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr == ("error: the current folder no longer exists (deleted or moved); cd to an existing "
                           "folder and rerun\n")


@pytest.mark.parametrize("value", [" ", "/data/cache ", " /data/cache"])
def test_memprox_cache_with_white_space_at_an_end_is_refused(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """MEMPROX_CACHE=' ' put the run store in a folder named ' ' of the current folder."""
    monkeypatch.setenv("MEMPROX_CACHE", value)
    with pytest.raises(HarnessError, match=r"^MEMPROX_CACHE '.*' begins or ends with white space; set it"):
        default_cache_dir()


def test_an_empty_memprox_cache_is_unset_and_an_empty_home_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """HOME='' made ~/.cache/memprox `/.cache/memprox` (a store at the file system's root)."""
    monkeypatch.setenv("MEMPROX_CACHE", "")
    monkeypatch.setenv("HOME", "/home/someone")
    assert default_cache_dir() == Path("/home/someone/.cache/memprox")
    monkeypatch.setenv("HOME", "")
    with pytest.raises(HarnessError, match=r"^HOME is set but empty, .* would be /.cache/memprox; set HOME"):
        default_cache_dir()
    monkeypatch.setenv("MEMPROX_CACHE", "/somewhere")
    assert default_cache_dir() == Path("/somewhere")  # MEMPROX_CACHE does not need HOME


def test_the_cli_names_memprox_cache_and_exits_2(tmp_path: Path) -> None:
    proc = _memprox(["store", "info"], _env(tmp_path, MEMPROX_CACHE=" "), tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.decode().startswith("error: MEMPROX_CACHE ' ' begins or ends with white space")
    assert not (tmp_path / " ").exists()


def test_a_cgroup_name_that_is_not_ascii_is_read_under_an_ascii_locale(tmp_path: Path) -> None:
    """/proc/self/cgroup was read in the locale's encoding: UnicodeDecodeError under LC_ALL=C."""
    name = os.fsencode(str(tmp_path)) + b"/job\xc3\xa9"
    os.makedirs(name + b"/x")
    with open(name + b"/x/cpu.max", "wb") as f:
        f.write(b"100000 100000\n")
    (tmp_path / "cgroup").write_bytes(b"0::/job\xc3\xa9/x\n")
    code = ("import sys; from pathlib import Path; from harness.executors.cpus import cgroup_cpu_quota; "
            "print(cgroup_cpu_quota(Path(sys.argv[1]), Path(sys.argv[2])))")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path), str(tmp_path / "cgroup")], capture_output=True,
                          text=True, timeout=60, env=_env(tmp_path, LC_ALL="C", LANG="C", PYTHONUTF8="0"))
    assert (proc.returncode, proc.stdout) == (0, "1.0\n"), proc.stderr


def test_pythonwarnings_error_makes_a_warning_one_error_line_not_a_traceback(tmp_path: Path) -> None:
    """A CI box exports PYTHONWARNINGS=error for its test suite; memprox's advice (--download on digits)
    became a UserWarning traceback with exit 1."""
    args = [*TINY, "--dataset", "digits", "--subset", "150", "--download", "--store", str(tmp_path / "s"),
            "--out", str(tmp_path / "out")]
    proc = _memprox(args, _env(tmp_path, PYTHONWARNINGS="error"), tmp_path)
    lines = proc.stderr.decode().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, lines
    assert lines[0].startswith("error: --download has no effect on --dataset digits")
    assert lines[0].endswith("(a warning, raised as an error by PYTHONWARNINGS or -W error: unset it to go on with "
                             "the warning)")
    assert not (tmp_path / "out").exists()


# --- names that are not UTF-8 text, and UTF-8 names in an ASCII locale -------------------------------------------
def test_a_utf8_dataset_path_read_as_ascii_blames_the_locale_not_the_name() -> None:
    """Under LC_ALL=C with PYTHONUTF8=0 `é` arrives as surrogates; the error said the valid UTF-8 name
    was not UTF-8 and to rename it. A Latin-1 name still gets the rename advice."""
    with pytest.raises(HarnessError, match=r"is UTF-8, but this Python reads names as .* rerun with PYTHONUTF8=1"):
        load_dataset("npz:/data/caf\udcc3\udca9.npz")
    with pytest.raises(HarnessError, match=r"is not valid UTF-8 text; rename it"):
        load_dataset("npz:/data/caf\udce9.npz")


def test_a_utf8_image_name_read_as_ascii_blames_the_locale(tmp_path: Path) -> None:
    from harness.datasets.imagefolder import _check_utf8

    with pytest.raises(HarnessError, match=r"^image .*is UTF-8, but this Python reads names as .*PYTHONUTF8=1"):
        _check_utf8(tmp_path / "chat \udcc3\udca9" / "1.png", tmp_path)
    with pytest.raises(HarnessError, match=r"^image .*is not valid UTF-8 text; rename it, e\.g\. with `convmv"):
        _check_utf8(tmp_path / "chat \udce9" / "1.png", tmp_path)


def test_a_utf8_noisy_labels_path_read_as_ascii_is_refused_before_planning(make_config) -> None:
    """Its setting label (`labels=PATH`) raised UnicodeEncodeError from the planner: a traceback."""
    with pytest.raises(HarnessError, match=r"^--noisy-labels '/d/caf\\udcc3\\udca9.npy' is UTF-8, but this Python"):
        make_config(noise_rates=(), noisy_labels="/d/caf\udcc3\udca9.npy").validate()
    with pytest.raises(HarnessError, match=r"^--reference 'fz:/d/\\udce9.npz' is not valid UTF-8 text; rename"):
        make_config(tasks=("memorization",), reference="fz:/d/\udce9.npz").validate()


def test_the_cli_in_an_ascii_locale_refuses_a_utf8_image_folder_before_training(tmp_path: Path) -> None:
    from PIL import Image

    for cls in ("chat é", "dog"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((8, 8, 3), i * 40, dtype=np.uint8)).save(tmp_path / "imgs" / cls / f"{i}.png")
    env = _env(tmp_path, LC_ALL="C", LANG="C", PYTHONUTF8="0", PYTHONIOENCODING=None)
    args = [*TINY, "--dataset", f"imagefolder:{tmp_path / 'imgs'}", "--subset", "6", "--store", str(tmp_path / "s")]
    proc = _memprox(args, env, tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.decode("ascii").splitlines()
    assert len(lines) == 1 and "is UTF-8, but this Python reads names as ascii" in lines[0], lines
    assert not (tmp_path / "s" / "runs").exists() or not any((tmp_path / "s" / "runs").iterdir())


def test_npz_class_names_as_latin1_bytes_are_one_error(tmp_path: Path) -> None:
    """A UnicodeDecodeError traceback, exit 1, before."""
    path = tmp_path / "b.npz"
    np.savez(path, x=np.zeros((4, 2), np.float32), y=np.array([0, 1, 0, 1]), classes=np.array([b"caf\xe9", b"dog"]))
    with pytest.raises(HarnessError, match=r"class name b'caf\\xe9' is not valid UTF-8 text; save classes as str"):
        load_dataset(f"npz:{path}")
    np.savez(path, x=np.zeros((4, 2), np.float32), y=np.array([0, 1, 0, 1]), classes=np.array([b"caf\xc3\xa9", b"d"]))
    assert load_dataset(f"npz:{path}").classes == ("café", "d")


# --- files are UTF-8 whatever the locale -----------------------------
def test_atomic_write_text_writes_utf8_under_an_ascii_locale(tmp_path: Path) -> None:
    """leaderboard.md (`mean ± std`) crashed the write phase under LC_ALL=C PYTHONUTF8=0 (exit 1, traceback)."""
    text = "'mean \\u00b1 std \\u00e9'"  # escaped: a -c command under C must be ASCII
    code = f"import sys; from harness.io import atomic_write_text; atomic_write_text(sys.argv[1], {text})"
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "t.md")], capture_output=True, text=True,
                          timeout=60, env=_env(tmp_path, LC_ALL="C", LANG="C", PYTHONUTF8="0"))
    assert proc.returncode == 0, proc.stderr[-500:]
    assert (tmp_path / "t.md").read_bytes() == "mean ± std é".encode()


# --- determinism across processes ------------------------------------------------------------------------------
@pytest.mark.slow
def test_scores_leaderboard_and_store_addresses_do_not_depend_on_pythonhashseed(tmp_path: Path) -> None:
    """Set or dict order leaking into a digest, a column order or a random stream would change these."""
    args = ["run", "--dataset", "digits", "--proxies", "csl,curvature(n=2),aum,forgetting", "--tasks",
            "mislabeled,duplicates,suspects", "--noise-rates", "0.1,0.05", "--seeds", "1", "--epochs", "2",
            "--subset", "200", "--bootstrap", "20", "--executor", "inprocess", "--no-progress"]
    seen = []
    for seed in ("0", "1", "random"):
        out, store = tmp_path / f"out{seed}", tmp_path / f"store{seed}"
        proc = _memprox([*args, "--out", str(out), "--store", str(store)], _env(tmp_path, PYTHONHASHSEED=seed),
                        tmp_path, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        files = {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
                 if p.is_file() and p.name not in ("summary.json", ".memprox-outputs.json")}
        entries = {p.relative_to(store).as_posix(): p.read_bytes() for p in sorted((store / "runs").rglob("*.npy"))}
        summary = json.loads((out / "summary.json").read_text())
        identity = (summary["experiment"], [(r["label"], r["hash"], r["train_acc"]) for r in summary["runs"]])
        seen.append((files, entries, identity))
    assert seen[0][0] and seen[0][1]
    assert seen[0] == seen[1] == seen[2]


# --- a store shared by a group ---------------------------------------------------------------------------------
def test_a_lock_file_another_member_made_is_one_line_naming_it_and_the_group_fix(tmp_path: Path, monkeypatch) -> None:
    """Lock files stay after release with the maker's umask (644 under 022): another member who must
    train an entry again got a PermissionError traceback from filelock. Now: exit 1, one line."""
    if os.geteuid() != 0 or not Path("/usr/bin/setpriv").exists():
        pytest.skip("needs root and setpriv to act as a second user")
    shared = Path(tempfile.mkdtemp(prefix="memprox-group-"))  # tmp_path is root's 700: the other user cannot enter
    try:
        shared.chmod(0o777)
        args = ["run", "--dataset", "digits", "--proxies", "final_loss", "--tasks", "mislabeled", "--seeds", "1",
                "--epochs", "1", "--subset", "200", "--noise-rates", "0.1", "--store", str(shared / "store"),
                "--executor", "inprocess", "--no-progress"]
        env = _env(shared)
        monkeypatch.setenv("MEMPROX_CACHE", env["MEMPROX_CACHE"])  # the first member's run, in this process
        assert main([*args, "--out", str(shared / "first")]) == 0
        for p in [shared, *shared.rglob("*")]:
            p.chmod(0o777 if p.is_dir() else 0o666)
        locks = sorted((shared / "store" / "locks").iterdir())
        for lock in locks:
            lock.chmod(0o644)  # what a member with umask 022 leaves
        for entry in (shared / "store" / "runs").iterdir():
            shutil.rmtree(entry)  # to be trained again, by the other member
        env["HOME"] = str(shared)
        proc = subprocess.run(["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                               sys.executable, "-m", "harness", *args, "--out", str(shared / "second")],
                              env=env, cwd=shared, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 1, proc.stderr[-2000:]
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert any(str(lock) in errors[0] for lock in locks) and "(Permission denied)" in errors[0]
        assert "chmod -R g+w" in errors[0] and "umask 002" in errors[0]
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def test_prune_selection_reads_a_utf8_argument_kept_as_surrogates_as_the_manifests_hold_it() -> None:
    """Under LC_ALL=C with PYTHONUTF8=0, `--dataset imagefolder:/data/café` reaches argv as surrogates
    (the bytes kept by surrogateescape) and matched no entry; read back as UTF-8 it does."""
    from harness.store_report import _text

    assert _text("imagefolder:/data/caf\udcc3\udca9") == "imagefolder:/data/café"
    assert _text("digits") == "digits" and _text(None) is None
    assert _text("caf\udce9") == "caf\udce9"  # Latin-1 bytes: not UTF-8, left as given (it matches nothing)
