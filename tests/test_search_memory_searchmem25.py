"""The near-duplicate search's memory is checked again right before the search: the check before
training saw what was available then, not what training and scoring leave the process holding (a
model, decoded data, torch's caches; measured: 117 to 128 MiB more on digits, 275 MiB on a
4,000-image CIFAR-10 subset) nor what other programs took meanwhile. Running out there was an
out-of-memory kill with no line; now it is one line, exit 1, with the trained runs kept."""

from __future__ import annotations

from pathlib import Path

import pytest

import harness.search_memory as search_memory
import harness.tasks.suspects as suspects
from harness.errors import HarnessError, StorageError
from harness.search_memory import Available, SearchOutOfMemory, refusal

GIB = 2**30


def test_the_refusal_after_training_says_the_runs_are_kept_and_what_to_do(monkeypatch) -> None:
    monkeypatch.setattr(search_memory, "_read", {"/proc/self/status": "Name: python\nVmRSS:\t 1572864 kB\n"}.get)
    error = refusal(20_000, 0, 150_528, int(26.84 * GIB), Available(16 * GIB), "/data/store")
    assert isinstance(error, SearchOutOfMemory) and isinstance(error, StorageError)  # the CLI's exit 1
    assert not isinstance(error, HarnessError)  # whose exit 2 says nothing was trained
    assert str(error) == (
        "suspects: after training, a near-duplicate search over 20000 samples of 150528 values needs an estimated "
        "26.8 GiB of memory and this machine has 16.0 GiB available (this process holds 1.5 GiB now), so it would "
        "run out; the trained runs are kept in the store /data/store: free memory or rerun on a machine with more "
        "(the rerun reuses the stored runs), or rerun with --task-arg suspects.duplicates=exact (byte-equal copies "
        "only) or --task-arg suspects.duplicates=off")
    monkeypatch.setattr(search_memory, "_read", {}.get)  # no /proc: the process's figure is left out
    error = refusal(1_437, 360, 64, 152 * 2**20, Available(100 * 2**20, cgroup=True), "s")
    assert ("over 1437 samples (and 360 test samples) of 64 values needs an estimated 152 MiB of memory and this "
            "process's memory limit (its container's or job's cgroup) leaves 100 MiB available, so it would run out; "
            "the trained runs are kept in the store s:") in str(error)


def test_the_refusal_before_training_is_unchanged() -> None:
    error = refusal(1_437, 360, 64, 152 * 2**20, Available(2**20))
    assert type(error) is HarnessError
    assert str(error) == (
        "suspects: a near-duplicate search over 1437 samples (and 360 test samples) of 64 values needs an estimated "
        "152 MiB of memory and this machine has 1 MiB available, so it would run out after training; pass "
        "--task-arg suspects.duplicates=exact (byte-equal copies only), --task-arg suspects.duplicates=off, or a "
        "smaller --subset")


def _memory_after_training(monkeypatch, after: int) -> list[str]:
    """Plenty of memory at the check before training, `after` bytes at every later one; the calls' order."""
    calls: list[str] = []

    def available() -> Available:
        calls.append("before" if not calls else "after")
        return Available(64 * GIB if len(calls) == 1 else after)

    monkeypatch.setattr(suspects, "available_bytes", available)
    return calls


def test_the_cli_refuses_right_before_the_search_and_the_rerun_reuses_the_runs(tmp_path, monkeypatch,
                                                                              capsys) -> None:
    from harness.cli import main

    calls = _memory_after_training(monkeypatch, 2**20)  # 1 MiB left after training: digits needs ~152 MiB
    store, out = tmp_path / "store", tmp_path / "out"
    argv = ["run", "--tasks", "suspects", "--proxies", "csl", "--epochs", "1", "--store", str(store),
            "--out", str(out), "--seeds", "1", "--executor", "inprocess"]
    assert main(argv) == 1
    assert calls == ["before", "after"]
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(
        "error: suspects: after training, a near-duplicate search over 1437 samples (and 360 test samples) of 64 "
        "values needs an estimated 152 MiB of memory and this machine has 1 MiB available (this process holds ")
    assert f"the trained runs are kept in the store {store}: free memory or rerun" in errors[0]
    stored = [p for p in store.rglob("manifest.json")]
    assert len(stored) == 1  # the base run, trained and kept
    assert not (out / "leaderboard.csv").exists()  # nothing published

    _memory_after_training(monkeypatch, 64 * GIB)
    assert main(argv) == 0
    assert (out / "suspects" / "duplicates.csv").is_file()
    assert [p for p in store.rglob("manifest.json")] == stored  # reused, not trained again


@pytest.mark.parametrize("mode", ["exact", "off"])
def test_no_search_no_second_check(tmp_path, monkeypatch, mode: str) -> None:
    """Exact copies and no duplicates need no search's memory: 1 MiB available does not stop them."""
    from harness.cli import main

    calls: list[int] = []
    monkeypatch.setattr(suspects, "available_bytes", lambda: calls.append(1) or Available(2**20))
    argv = ["run", "--tasks", "suspects", "--proxies", "csl", "--epochs", "1", "--store", str(tmp_path / "store"),
            "--out", str(tmp_path / "out"), "--seeds", "1", "--executor", "inprocess", "--task-arg",
            f"suspects.duplicates={mode}"]
    assert main(argv) == 0
    assert calls == []


def test_the_stores_path_is_the_default_one_without_store(monkeypatch, tmp_path) -> None:
    """Without --store the line names the default store, where the rerun finds the runs."""
    from types import SimpleNamespace

    from harness.datasets.digits import _load_digits

    monkeypatch.setenv("MEMPROX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(suspects, "available_bytes", lambda: Available(2**20))
    dataset = _load_digits(None)
    ctx = SimpleNamespace(data=SimpleNamespace(dataset=dataset, labels=dataset.y_train.numpy()),
                          config=SimpleNamespace(store=None))
    with pytest.raises(SearchOutOfMemory) as refused:
        suspects.duplicate_pairs(ctx, "near", 0.13, 40)  # type: ignore[arg-type]
    assert f"kept in the store {Path(tmp_path / 'cache' / 'store')}:" in str(refused.value)
