"""Second-Split Forgetting Time (Maini et al. 2022): how fast a sample is forgotten once the
network trains on the other half of the data.

The training set is split into stratified, seeded halves A and B. One run trains on A and then, with
a fresh optimizer, on B; the other the other way round. While the network trains on the second
split, the samples of the first are checked after every epoch: mislabeled and atypical samples,
held only by memorization, are forgotten early, typical ones are kept up by their class-mates.
"""

from __future__ import annotations

import numpy as np

from harness.errors import HarnessError
from harness.recorders import RecorderRequest
from harness.runspec import RunSpec, TrainSubset
from proxies.base import Need, Proxy, ScoreContext
from proxies.registry import register_proxy

SSFT_CORRECT = RecorderRequest.of("ssft_correct")


def forgetting_times(correct: np.ndarray) -> np.ndarray:
    """Per-sample forgetting time from (E2, N) second-phase correctness traces.

    Row e is eval-mode correctness after second-phase epoch e+1. The time is the number of epochs
    before the final run of consecutive incorrect epochs, i.e. the 1-based index of the last epoch
    after which the sample was correct (0 if it never was): a sample still correct after the last
    epoch gets E2, one incorrect from the first epoch on gets 0. Columns that are all NaN (samples
    not in the first split) get NaN. With E2 = 4:

        [1, 1, 1, 1] -> 4    never forgotten
        [1, 1, 0, 0] -> 2    forgotten after epoch 2
        [1, 0, 1, 0] -> 3    relearned once, forgotten for good after epoch 3
        [0, 1, 0, 1] -> 4    correct at the end
        [0, 0, 0, 0] -> 0    forgotten at once
    """
    correct = np.asarray(correct, dtype=np.float64)
    if correct.ndim != 2 or correct.shape[0] == 0:
        raise HarnessError(f"correctness traces must be a non-empty (E2, N) array, got shape {correct.shape}")
    e2 = correct.shape[0]
    c = np.nan_to_num(correct, nan=0.0) > 0.5
    last_from_end = np.argmax(c[::-1], axis=0)  # epochs after the last correct one
    times = np.where(c.any(axis=0), e2 - last_from_end, 0).astype(np.float64)
    times[np.isnan(correct).all(axis=0)] = np.nan
    return times


def ssft_scores(times: np.ndarray, epochs: int) -> np.ndarray:
    """1 - time/E2: forgotten at once -> 1 (most suspicious), never forgotten -> 0."""
    return 1.0 - np.asarray(times, dtype=np.float64) / epochs


@register_proxy
class SSFT(Proxy):
    name = "ssft"
    description = "Second-Split Forgetting Time: 1 - (epochs on the other half before a sample is forgotten)/E"
    citation = "Maini et al., Characterizing Datapoints via Second-Split Forgetting, NeurIPS 2022"

    @staticmethod
    def halves(base: RunSpec) -> tuple[TrainSubset, TrainSubset]:
        """Stratified halves A and B, seeded by the base run's seed."""
        a, b = (TrainSubset(kind="half", index=i, count=2, seed=base.seed) for i in (0, 1))
        return a, b

    def run_specs(self, base: RunSpec) -> list[RunSpec]:
        """A then B, and B then A: every sample is in the first split of exactly one run."""
        a, b = self.halves(base)
        return [base.with_subset(train_on=a, then_on=b), base.with_subset(train_on=b, then_on=a)]

    def needs(self, base: RunSpec) -> list[Need]:
        return [Need(spec, frozenset({SSFT_CORRECT})) for spec in self.run_specs(base)]

    def score(self, ctx: ScoreContext) -> np.ndarray:
        scores = np.full(len(ctx.labels), np.nan)
        for spec in self.run_specs(ctx.base):
            correct = ctx.arrays(SSFT_CORRECT, spec)["correct"]
            first = ~np.isnan(correct).all(axis=0)
            scores[first] = ssft_scores(forgetting_times(correct[:, first]), correct.shape[0])
        if np.isnan(scores).any():
            raise HarnessError(f"ssft: {int(np.isnan(scores).sum())} samples were in neither run's first split")
        return scores
