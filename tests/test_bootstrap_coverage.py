"""Seed combination (issue 16): a seed drawn twice into one replicate gets two independent
within-seed resamples, and the 95 % intervals cover about as documented instead of 99.5 %."""

from __future__ import annotations

import numpy as np

from harness.bootstrap import Resamples, combine_seeds, generator, percentile_interval


class _Draw:
    """A stand-in generator whose seed draw is fixed (rows: replicates, columns: drawn copies)."""

    def __init__(self, draw: list[list[int]]) -> None:
        self.draw = np.array(draw)

    def integers(self, low: int, high: int, size: tuple[int, int]) -> np.ndarray:
        assert size == self.draw.shape
        return self.draw


def test_every_drawn_copy_has_its_own_resample_and_proxies_share_them() -> None:
    s, b = 3, 5
    coded = 10.0 * np.arange(s)[:, None] + np.arange(b)[None, :]  # value = 10 * seed + replicate
    values = np.stack([coded, 2 * coded])  # (P=2, S, B): proxy 1 is twice proxy 0
    draw = [[2, 2, 2], [0, 1, 2], [1, 0, 1], [0, 0, 0], [2, 1, 2]]
    reps = combine_seeds(values, _Draw(draw))  # type: ignore[arg-type]
    # the k-th copy of a seed in replicate b reads that seed's replicate (b + k) mod B
    by_hand = [
        (20 + 0 + 20 + 1 + 20 + 2) / 3,  # b=0: seed 2 three times -> replicates 0, 1, 2
        (0 + 1 + 10 + 1 + 20 + 1) / 3,  # b=1: all distinct -> replicate 1 each
        (10 + 2 + 0 + 2 + 10 + 3) / 3,  # b=2: seed 1 twice -> replicates 2, 3
        (0 + 3 + 0 + 4 + 0 + 0) / 3,  # b=3: seed 0 three times -> replicates 3, 4, 0 (wraps)
        (20 + 4 + 10 + 4 + 20 + 0) / 3,  # b=4: seed 2 twice -> replicates 4, 0
    ]
    np.testing.assert_allclose(reps[0], by_hand)
    np.testing.assert_allclose(reps[1], 2 * reps[0])  # paired: the same choice for every proxy


def _simulate(repetitions: int, seeds: int = 3, n: int = 20, b: int = 400) -> tuple[float, float]:
    """Coverage of the true mean, and mean width relative to the ideal 2 x 1.96 x sd of the seed
    mean, for the metric "mean of N(0.3, 1) samples" when S seeds differ only by sampling noise:
    each seed its own N samples, bootstrapped with the harness's Resamples, combined by
    combine_seeds, interval by percentile_interval."""
    mu = 0.3
    ideal = 2 * 1.959964 / np.sqrt(seeds * n)
    covered, widths = 0, []
    for r in range(repetitions):
        rng = generator("coverage data", r)
        values = np.empty((1, seeds, b))
        for s in range(seeds):
            x = mu + rng.standard_normal(n)
            values[0, s] = Resamples.draw(n, b, "coverage", r, s).counts @ x / n
        low, high = percentile_interval(combine_seeds(values, generator("coverage seeds", r)))
        covered += bool(low[0] <= mu <= high[0])
        widths.append((high[0] - low[0]) / ideal)
    return covered / repetitions, float(np.mean(widths))


def test_seed_combination_covers_about_as_documented() -> None:
    """Reusing one resample for every copy of a seed covered 99.5 % with intervals ~1.5x the ideal
    width (measured here: 0.994 and 1.49 over 2,000 repetitions). With a resample per copy the
    expected coverage is ~98 % (the seeds' spread counts the sampling noise a second time, see
    harness.bootstrap; normal theory for S = 3: 97.99 %, width 1.27x), measured 0.976 and 1.23.
    1,000 repetitions give coverage +- 0.005 (one sd): the band and the width bound are several
    sd from both schemes' expectations. Runs in ~2 s."""
    coverage, width = _simulate(1000)
    assert 0.95 <= coverage < 0.99, coverage
    assert 1.1 < width < 1.35, width
