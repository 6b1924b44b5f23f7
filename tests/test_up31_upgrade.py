"""up31: upgrading from this morning's memprox (9b2283e) with a store, an --out folder, a checkpoint and a model
plugin in place (slow: each case runs memprox at 9b2283e from a git worktree, then today's, as processes).

- `--proxies all` on digits, then `--tasks suspects` on a small image folder: today's rerun trains nothing,
  accepts the --out folder 9b2283e wrote as this experiment's (no --overwrite), reports the same numbers
  (cost seconds are measured anew by any rerun), and the suspects CSV gains `duplicate_files`;
- a run killed (SIGKILL) mid-training at 9b2283e resumes today from its checkpoint, and its scores are
  byte-equal to an uninterrupted run of today's;
- a model plugin whose digest today reads more (a timm-like registry another module fills) trains again,
  and the planner says why; a typical plugin's runs are reused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.test_up31_plugins import FILES

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
OLD = "9b2283e"
CIFAR = Path("/work/shared/data/cifar10/train")


@pytest.fixture(scope="module")
def old(tmp_path_factory: pytest.TempPathFactory):
    """A worktree of memprox at 9b2283e (skipped where the commit is not in this clone)."""
    if subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", f"{OLD}^{{commit}}"],
                      capture_output=True).returncode:
        pytest.skip(f"commit {OLD} is not in this clone")
    tree = tmp_path_factory.mktemp("up31") / "wt"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(tree), OLD], check=True)
    yield tree
    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=True)


def _env(code: Path, cache: Path, extra: str = "") -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(code), extra) if p),
            "MEMPROX_CACHE": str(cache)}


def _memprox(code: Path, cache: Path, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "harness", "run", "--device", "cpu", "--no-progress", *args],
                          env=_env(code, cache), capture_output=True, text=True, timeout=600, cwd=cache.parent)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout + done.stderr


def _same_numbers(a: Path, b: Path) -> None:
    """The leaderboards of two --out folders hold the same numbers, cost seconds aside (measured by each run)."""
    x, y = pd.read_csv(a / "leaderboard.csv"), pd.read_csv(b / "leaderboard.csv")
    timed = [c for c in x.columns if "seconds" in c]
    keep = ~x["metric"].astype(str).str.contains("seconds")
    pd.testing.assert_frame_equal(x[keep].drop(columns=timed), y[keep].drop(columns=timed), check_exact=True)


def test_a_9b2283e_store_and_out_folder_of_all_proxies_on_digits_are_reused(old: Path, tmp_path: Path) -> None:
    cache, out = tmp_path / "cache", tmp_path / "out"
    args = ("--proxies", "all", "--tasks", "mislabeled,duplicates", "--seeds", "1", "--epochs", "3", "--subset",
            "400", "--noise-rates", "0.1", "--duplicate-pairs", "4", "--bootstrap", "50", "--workers", "1",
            "--out", str(out))
    said = _memprox(old, cache, *args)
    assert "runs: 12 trained, 0 reused" in said
    (tmp_path / "before").mkdir()
    for f in ("leaderboard.csv", "raw.csv"):
        (tmp_path / "before" / f).write_bytes((out / f).read_bytes())
    said = _memprox(ROOT, cache, *args)
    assert "runs: 0 trained, 12 reused from the store" in said
    _same_numbers(tmp_path / "before", out)


@pytest.mark.skipif(not CIFAR.is_dir(), reason="no offline CIFAR-10 copy")
def test_a_9b2283e_suspects_folder_is_updated_with_duplicate_files(old: Path, tmp_path: Path) -> None:
    images = tmp_path / "img"
    for cls in ("airplane", "cat"):
        (images / cls).mkdir(parents=True)
        for f in sorted(p for p in (CIFAR / cls).iterdir())[:30]:
            (images / cls / f.name).write_bytes(f.read_bytes())
    copy = sorted((images / "cat").iterdir())[0]
    (images / "airplane" / "99999.jpg").write_bytes(copy.read_bytes())  # a copy under another label
    cache, out = tmp_path / "cache", tmp_path / "out"
    args = ("--dataset", f"imagefolder:{images}", "--tasks", "suspects", "--seeds", "1", "--epochs", "2",
            "--workers", "1", "--out", str(out))
    assert "runs: 6 trained, 0 reused" in _memprox(old, cache, *args)
    before = pd.read_csv(out / "suspects" / "suspects_seed0.csv", keep_default_na=False)
    assert "duplicate_files" not in before
    assert "runs: 0 trained, 6 reused from the store" in _memprox(ROOT, cache, *args)
    after = pd.read_csv(out / "suspects" / "suspects_seed0.csv", keep_default_na=False)
    assert set(after.columns) - set(before.columns) == {"duplicate_files"} and len(after) == len(before) == 61
    pd.testing.assert_frame_equal(after[list(before.columns)], before, check_exact=True)
    listed = dict(zip(after["file"], after["duplicate_files"], strict=True))
    assert listed["airplane/99999.jpg"] == f'["cat/{copy.name}"]'
    assert listed[f"cat/{copy.name}"] == '["airplane/99999.jpg"]'
    assert sum(v != "[]" for v in listed.values()) == 2


def test_a_run_killed_at_9b2283e_resumes_today_with_the_scores_of_an_unbroken_run(old: Path, tmp_path: Path) -> None:
    args = ["--proxies", "csl,aum,forgetting,el2n", "--tasks", "mislabeled", "--seeds", "1", "--epochs", "200",
            "--noise-rates", "0.1", "--bootstrap", "0", "--executor", "inprocess", "--checkpoint-every", "0.2"]
    cache = tmp_path / "cache"
    partial = cache / "store" / "partial"
    run = subprocess.Popen([sys.executable, "-m", "harness", "run", "--device", "cpu", "--no-progress", *args,
                            "--out", str(tmp_path / "killed")], env=_env(old, cache), cwd=tmp_path,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while not (partial.is_dir() and any(partial.glob("*.pt"))) and run.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    time.sleep(1.0)  # a few checkpoints in
    assert run.poll() is None, "the run ended before it was killed"
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    assert any(partial.glob("*.pt"))
    said = _memprox(ROOT, cache, *args, "--out", str(tmp_path / "resumed"))
    assert "from its checkpoint at epoch" in said and "runs: 1 trained (1 resumed from their checkpoints)" in said
    _memprox(ROOT, tmp_path / "fresh_cache", *args, "--out", str(tmp_path / "fresh"))
    for name in ("leaderboard.csv", "raw.csv", "scores/noise=0.1_seed0.csv"):
        assert (tmp_path / "resumed" / name).read_bytes() == (tmp_path / "fresh" / name).read_bytes(), name


DRIVE = """import sys
import up31_a, up31_b  # noqa: F401
from harness import run_experiment
run_experiment(model=sys.argv[1], proxies="csl,aum", tasks="mislabeled", noise_rates=[0.1], seeds=1, epochs=2,
               subset=300, workers=1, device="cpu", bootstrap=0, progress=False, out=sys.argv[2])
"""


def _plugin(code: Path, cache: Path, plugins: Path, model: str) -> str:
    done = subprocess.run([sys.executable, "-c", DRIVE, model, str(cache.parent / f"out_{model}")],
                          env=_env(code, cache, str(plugins)), capture_output=True, text=True, timeout=600,
                          cwd=cache.parent)  # not this checkout: python -c puts the working folder first
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout + done.stderr


def test_a_plugin_trained_at_9b2283e_is_reused_or_retrained_with_the_reason(old: Path, tmp_path: Path) -> None:
    plugins, cache = tmp_path / "plugins", tmp_path / "cache"
    plugins.mkdir()
    for name, text in FILES.items():
        (plugins / name).write_text(text, encoding="utf-8")
    runs = cache / "store" / "runs"
    for model in ("up31_a", "up31_b"):
        _plugin(old, cache, plugins, model)
    assert len(list(runs.iterdir())) == 2
    said = _plugin(ROOT, cache, plugins, "up31_a")
    assert len(list(runs.iterdir())) == 2 and "train again" not in said  # reused
    said = _plugin(ROOT, cache, plugins, "up31_b")
    assert len(list(runs.iterdir())) == 3
    assert ("1 run(s) (digits noise=0.1 up31_b seed0) of model up31_b train again: the store holds them under "
            "another digest of the model's code (81950df3ef3ebcfb; now ") in said
    assert "after an upgrade of memprox a model of yours may train again once" in said
