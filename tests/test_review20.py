"""Fixes from the 2026-12-04 review of the helpers' reports: each test fails on the code before it."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from harness.errors import StorageError
from harness.evaluation import score
from harness.plots import binned_relation
from harness.tasks.theory import _spearman


def test_binned_spearman_of_a_constant_proxy_is_undefined_not_a_trend_of_rounding() -> None:
    """learning_time(rule=first) gave every sample 1/12; its bin means differ in the last bits and the
    binned Spearman read 0.31 on a real run, a trend that is not in the data."""
    rng = np.random.default_rng(0)
    x = rng.random(400)
    table = binned_relation(x, np.full(400, 1 / 12))
    assert table["mean"].nunique() > 1  # the rounding this guards against is there
    assert np.isnan(_spearman(table["bin_center"].to_numpy(), table["mean"].to_numpy()))
    assert np.isnan(_spearman(np.full(400, 1 / 12) + 0.0, x))
    assert _spearman(x, 2 * x + 1) == pytest.approx(1.0)  # a real relation is still measured
    assert _spearman(x, 1e-9 * x) == pytest.approx(1.0)  # small values are not constant


def test_a_store_failure_while_scoring_ends_the_experiment_instead_of_blaming_the_proxy() -> None:
    """An entry pruned mid-run raised StorageError inside proxy.score; it was reported as 'proxy X failed'
    and the leaderboard written without that proxy."""
    def broken(ctx: object) -> np.ndarray:
        raise StorageError("run store entry /tmp/store/runs/abc vanished (pruned by another process?)")

    proxy = SimpleNamespace(label="csl", needs=lambda base: [], score=broken)
    data = SimpleNamespace(labels=np.zeros(4, dtype=np.int64), num_classes=2, n=4)
    base = SimpleNamespace(label=lambda: "base")
    with pytest.raises(StorageError, match="vanished"):
        score([proxy], base, data, {})  # type: ignore[list-item, arg-type]


def test_a_ctrl_c_while_the_emptied_staging_folder_is_removed_keeps_the_published_run(
        tmp_path, monkeypatch, capsys) -> None:
    """After `write` published every output, the staging folder's removal is all that is left; a Ctrl-C
    there ended the run with 130 and 'rerun to resume' although every file was in place."""
    import harness.outputs as outputs
    from harness.cli import main as cli_main

    real = outputs.rmtree
    out = tmp_path / "out"

    def interrupted_once(path, *args, **kwargs):
        if (out / "leaderboard.csv").is_file() and not getattr(interrupted_once, "done", False):
            interrupted_once.done = True
            raise KeyboardInterrupt
        return real(path, *args, **kwargs)

    monkeypatch.setattr(outputs, "rmtree", interrupted_once)
    code = cli_main(["run", "--dataset", "digits", "--proxies", "csl", "--tasks", "mislabeled", "--seeds", "1",
                     "--noise-rates", "0.1", "--epochs", "1", "--subset", "200", "--device", "cpu", "--bootstrap",
                     "0", "--executor", "inprocess", "--no-progress", "--store", str(tmp_path / "store"),
                     "--out", str(out)])
    assert getattr(interrupted_once, "done", False)
    assert code == 0
    assert "the run is complete" in capsys.readouterr().err
    assert (out / "leaderboard.csv").is_file()
