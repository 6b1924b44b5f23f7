"""Work after training: the phase timing in summary.json and the CLI's last lines, and the faster
evaluation code equal to what it replaced (the old computations are kept here as references)."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness import plots
from harness.bootstrap import Resamples
from harness.cli import main
from harness.experiment import PHASES, Experiment, PhaseTimer, format_phases, single_blas_thread
from harness.metrics import weighted_detection
from harness.similarity import ReferenceSide, similarity_boot, top_k_weights, weighted_similarity
from harness.tasks.privacy import all_proxy_metrics, proxy_metrics

SUBSET = 300


# phase timing ----------------------------------------------------------------------------------
def _timed_run(cfg):
    t0 = time.perf_counter()
    result = Experiment(cfg).run()
    return result, time.perf_counter() - t0


def test_phase_seconds_in_summary_and_result(make_config) -> None:
    cfg = make_config(subset=SUBSET, bootstrap=20)
    for attempt in ("trained", "reused"):
        result, wall = _timed_run(cfg)
        summary = json.loads((cfg.out / "summary.json").read_text())
        phases = summary["phase_seconds"]
        assert list(phases) == list(PHASES) == ["plan", "load", "train", "score", "evaluate", "write"]
        assert all(isinstance(v, float) and v >= 0 for v in phases.values())
        assert list(result.phase_seconds) == list(PHASES)
        assert all(v >= 0 for v in result.phase_seconds.values())
        # the phases cover the experiment's wall time (from the constructor to run's end), no more
        total = sum(result.phase_seconds.values())
        assert total <= wall + 0.01
        assert total >= 0.9 * wall - 0.05, (result.phase_seconds, wall)
        # the summary is written from inside the write phase: every other phase is final there
        for k in PHASES[:-1]:
            assert phases[k] == result.phase_seconds[k]
        assert phases["write"] <= result.phase_seconds["write"] + 1e-3
        if attempt == "trained":
            assert summary["trained"] and phases["train"] > 0
        else:
            assert not summary["trained"] and phases["train"] < 1.0
    # everything a reader used before is still there
    assert {"experiment", "config", "device", "runs", "trained", "reused", "failures", "outputs"} <= set(summary)


def test_cli_prints_the_phases_last(tmp_path: Path, capsys) -> None:
    code = main(["run", "--proxies", "csl", "--tasks", "mislabeled", "--noise-rates", "0.1", "--seeds", "1",
                 "--subset", str(SUBSET), "--epochs", "2", "--bootstrap", "10", "--executor", "inprocess",
                 "--no-progress", "--out", str(tmp_path / "out"), "--store", str(tmp_path / "store")])
    assert code == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("phases: plan ")
    assert [part.split()[0] for part in err[-1].removeprefix("phases: ").split(" · ")] == list(PHASES)


def test_phase_timer_and_format() -> None:
    timer = PhaseTimer()
    with timer("score"):
        with timer("score"):  # nested in the same phase: counted once
            time.sleep(0.01)
        assert timer.rounded()["score"] >= 0.01  # an open stretch counts up to now
    assert 0.01 <= timer.seconds["score"] < 0.5
    timer.add("train", -1.0)  # never negative
    assert timer.seconds["train"] == 0.0
    line = format_phases({"plan": 0.123, "load": 0.8, "train": 120.34, "score": 4.1, "evaluate": 6.2, "write": 2})
    assert line == "phases: plan 0.1 s · load 0.8 s · train 120.3 s · score 4.1 s · evaluate 6.2 s · write 2.0 s"


# faster evaluation = the old computation -------------------------------------------------------
def _old_proxy_metrics(v, score, weights, top):
    """proxy_metrics as it was: v's side recomputed for every proxy."""
    k = np.maximum(1.0, np.round(top * weights.sum(1, keepdims=True)))
    corr = weighted_similarity(score, v, weights, k)
    flag = top_k_weights(v, weights, k)
    positives = np.r_[np.ones(len(v), dtype=bool), np.zeros(len(v), dtype=bool)]
    detect = weighted_detection(positives, np.r_[score, score], np.hstack([flag, weights - flag]))
    return {"pearson": corr["pearson"], "spearman": corr["spearman"], "auroc": detect["auroc"],
            "auprc": detect["auprc"]}


def _inputs(seed: int, n: int = 400, proxies: int = 5):
    rng = np.random.default_rng(seed)
    v = np.round(rng.random(n), 1)  # many ties, at the flag boundary too
    v[rng.integers(0, n, 7)] = np.nan
    scores = {f"p{i}": np.round(rng.standard_normal(n), i % 3) for i in range(proxies)}
    scores["constant"] = np.ones(n)
    scores["broken"] = np.where(np.arange(n) == 3, np.nan, rng.random(n))
    return v, scores


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_privacy_metrics_for_all_proxies_equal_the_old_per_proxy_computation(seed: int, monkeypatch) -> None:
    v, scores = _inputs(seed)
    monkeypatch.setattr("harness.bootstrap.CHUNK_ELEMENTS", 400 * 64)  # several chunks of resamples
    resamples = Resamples.draw(len(v), 200, "privacy", seed)
    points, reps = all_proxy_metrics(v, scores, 0.1, resamples)
    keep = np.isfinite(v)
    for name, s in scores.items():
        old_point = _old_proxy_metrics(v[keep], s[keep], np.ones((1, int(keep.sum()))), 0.1)
        old_reps = resamples.apply(lambda w, s=s: _old_proxy_metrics(v[keep], s[keep], w[:, keep], 0.1))
        assert list(points[name]) == list(old_point) == list(reps[name])
        for m in ("pearson", "spearman", "auroc"):  # auprc: now the mean over tie-breaks (numerics26)
            np.testing.assert_array_equal(points[name][m], old_point[m])  # bit for bit, NaN where NaN
            np.testing.assert_array_equal(reps[name][m], old_reps[m])
        np.testing.assert_array_equal(proxy_metrics(v[keep], s[keep], np.ones((1, int(keep.sum()))), 0.1)["auroc"],
                                      old_point["auroc"])
    points, reps = all_proxy_metrics(v, scores, 0.1, None)
    assert reps == {name: {} for name in scores} and set(points) == set(scores)


def test_reference_side_subset_equals_all_metrics() -> None:
    v, scores = _inputs(3)
    keep = np.isfinite(v)
    w = Resamples.draw(int(keep.sum()), 50, "side").counts.astype(np.float64)
    full = ReferenceSide(v[keep], w, 40.0)
    part = ReferenceSide(v[keep], w, 40.0, top_k=False)
    for s in scores.values():
        everything = full.metrics(s[keep])
        some = part.metrics(s[keep], ("pearson", "spearman"))
        assert set(some) == {"pearson", "spearman"}
        for m, x in some.items():
            np.testing.assert_array_equal(x, everything[m])
        np.testing.assert_array_equal(part.metrics(s[keep])["cosine"], everything["cosine"])


def test_one_blas_thread_gives_the_same_bits() -> None:
    v, scores = _inputs(4, n=1500, proxies=3)
    resamples = Resamples.draw(len(v), 300, "blas")
    default = similarity_boot(scores, v, resamples)
    with single_blas_thread():
        one = similarity_boot(scores, v, resamples)
    for name in scores:
        for m in default[name]:
            np.testing.assert_array_equal(one[name][m], default[name][m])


def _png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(path.read_bytes())))


@pytest.mark.parametrize("channels", [1, 3])
def test_reused_extreme_image_grid_draws_the_same_picture(tmp_path: Path, channels: int) -> None:
    rng = np.random.default_rng(channels)
    images = rng.integers(0, 256, (300, channels, 8, 8)).astype(np.uint8)
    labels = rng.integers(0, 4, 300)
    labels[:2] = 4  # a class with 2 members: blank cells
    classes = ["a", "b", "c", "d", "e"]
    for i in range(3):
        scores = rng.random(300) * 10.0**i
        scores[rng.integers(0, 300, 10)] = np.nan
        plots._GRIDS.clear()
        fresh = plots.plot_extreme_images(images, labels, scores, classes, tmp_path / f"fresh{i}.png", per_class=3)
        if i == 0:
            continue
        # the grid drawn for the previous scores, reused: the same picture as a fresh one
        plots._GRIDS.clear()
        plots.plot_extreme_images(images, labels, scores * 0.5 + 1, classes, tmp_path / "other.png", per_class=3)
        reused = plots.plot_extreme_images(images, labels, scores, classes, tmp_path / f"reused{i}.png", per_class=3)
        assert len(plots._GRIDS) == 1
        np.testing.assert_array_equal(_png(reused), _png(fresh))


def _detection_cases(seed: int):
    rng = np.random.default_rng(seed)
    n = 300
    for npos in (1, 3, 30, 150, 299):
        positives = np.zeros(n, dtype=bool)
        positives[rng.choice(n, npos, replace=False)] = True
        for kind in ("ties", "continuous", "odd"):
            if kind == "ties":
                s = np.round(rng.random(n), 1)
            elif kind == "continuous":
                s = rng.standard_normal(n) + positives
            else:  # NaN ranks lowest, infinities clipped: all in the cleaned order
                s = rng.standard_normal(n)
                s[rng.integers(0, n, 10)] = np.nan
                s[rng.integers(0, n, 3)] = np.inf
                s[rng.integers(0, n, 3)] = -np.inf
            yield positives, s


@pytest.mark.parametrize("seed", [0, 1])
def test_detection_on_counts_equals_the_running_sum(seed: int) -> None:
    counts = Resamples.draw(300, 64, "detect", seed)
    for w in counts.chunks():
        for positives, s in _detection_cases(seed):
            fast = weighted_detection(positives, s, w, integral=True)
            slow = weighted_detection(positives, s, w)
            for m in slow:
                np.testing.assert_array_equal(fast[m], slow[m])
    ones = np.ones((1, 300))
    for positives, s in _detection_cases(seed):
        fast, slow = weighted_detection(positives, s, ones, integral=True), weighted_detection(positives, s, ones)
        for m in slow:
            np.testing.assert_array_equal(fast[m], slow[m])


@pytest.mark.parametrize("seed", [0, 1])
def test_detection_skipping_samples_without_weight_equals_the_running_sum(seed: int) -> None:
    rng = np.random.default_rng(seed)
    counts = Resamples.draw(300, 64, "live", seed).counts.astype(np.float64)
    weights = counts * rng.random(300)  # fractional weights: the order of the sums matters
    weights[:, rng.random(300) < 0.6] = 0.0  # most samples weigh nothing in any row
    live = (weights != 0).any(axis=0)
    for w in (weights, np.asfortranarray(weights)):
        for positives, s in _detection_cases(seed):
            fast = weighted_detection(positives, s, w, live=live)
            slow = weighted_detection(positives, s, w)
            for m in slow:
                np.testing.assert_array_equal(fast[m], slow[m])
