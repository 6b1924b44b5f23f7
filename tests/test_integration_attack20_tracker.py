"""Attack 20 on the plain `SampleTracker`: a real loop whose DataLoader runs worker processes
(`num_workers=2`), drops the last batch (`drop_last=True`) and repeats samples within an epoch (a
`WeightedRandomSampler` with replacement). The record must be what docs/own-training-loop.md says:
each sample's first presentation of an epoch, nothing for a sample an epoch left out, warnings naming
both; checked against the loop's own per-sample losses, kept aside and summed by hand."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset, WeightedRandomSampler

from harness import SampleTracker
from harness.integrations import WithIndex

N, C, BATCH, EPOCHS = 30, 3, 8, 3
_G = torch.Generator().manual_seed(0)
X, Y = torch.randn(N, 5, generator=_G), torch.randint(0, C, (N,), generator=_G)


def _loader(workers: int, seeded: bool = True) -> DataLoader:
    weights = torch.linspace(0.2, 2.0, N).tolist()  # the last samples drawn more often, some of the first never
    sampler = WeightedRandomSampler(weights, num_samples=N, replacement=True,
                                    generator=torch.Generator().manual_seed(1) if seeded else None)
    return DataLoader(WithIndex(TensorDataset(X, Y)), batch_size=BATCH, sampler=sampler, drop_last=True,
                      num_workers=workers)


Kept = list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]]  # per epoch, per batch: (indices, losses, logits)


def _loop(workers: int, seeded: bool = True) -> tuple[SampleTracker, pd.DataFrame, Kept, list[str]]:
    """Trains EPOCHS epochs, recording into a tracker and, aside, each batch's (indices, losses, logits)."""
    torch.manual_seed(0)
    model = nn.Linear(5, C)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    tracker, loader = SampleTracker(N), _loader(workers, seeded)
    kept: Kept = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(EPOCHS):
            epoch = []
            for xb, yb, idx in loader:
                logits = model(xb)
                losses = nn.functional.cross_entropy(logits, yb, reduction="none")
                tracker.update(idx, losses=losses, logits=logits, labels=yb)
                epoch.append((idx.numpy().copy(), losses.detach().numpy().copy(), logits.detach().numpy().copy()))
                opt.zero_grad()
                losses.mean().backward()
                opt.step()
            tracker.end_epoch()
            kept.append(epoch)
        scores = tracker.scores()
    return tracker, scores, kept, [str(w.message) for w in caught if str(w.message).startswith("SampleTracker")]


def _first_presentations(epoch: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> dict[int, tuple[float, np.ndarray]]:
    first: dict[int, tuple[float, np.ndarray]] = {}
    for idx, losses, logits in epoch:
        for i, loss, logit in zip(idx.tolist(), losses, logits):
            first.setdefault(i, (float(loss), logit))
    return first


def test_workers_drop_last_and_replacement_record_first_presentations() -> None:
    tracker, scores, kept, said = _loop(workers=2)
    csl, aum_sum, presented = np.zeros(N), np.zeros(N), np.zeros(N, dtype=np.int64)
    repeated: list[set[int]] = []
    correct: list[list[bool]] = [[] for _ in range(N)]  # per sample, at each presentation kept
    for epoch in kept:
        assert sum(len(idx) for idx, _, _ in epoch) == (N // BATCH) * BATCH  # drop_last: 24 of 30 draws
        first = _first_presentations(epoch)
        counts = np.bincount(np.concatenate([idx for idx, _, _ in epoch]), minlength=N)
        repeated.append(set(np.flatnonzero(counts > 1).tolist()))
        for i, (loss, logit) in first.items():
            csl[i] += loss
            others = np.delete(logit, int(Y[i]))
            aum_sum[i] += logit[int(Y[i])] - others.max()
            correct[i].append(bool(logit.argmax() == int(Y[i])))
            presented[i] += 1
    assert all(repeated) and (presented < EPOCHS).any() and (presented == 0).any()  # the loader does all three
    assert any(len(idx) > len(np.unique(idx)) for epoch in kept for idx, _, _ in epoch)  # repeats within a batch too
    np.testing.assert_array_equal(tracker.epochs_presented(), presented)
    np.testing.assert_allclose(scores["csl"], csl, rtol=1e-6, atol=1e-6)
    # aum: minus the mean margin over the epochs that presented the sample; never presented: NaN
    with np.errstate(invalid="ignore", divide="ignore"):
        aum = np.where(presented > 0, -aum_sum / presented, np.nan)
    np.testing.assert_allclose(scores["aum"], aum, rtol=1e-5, atol=1e-6)
    # forgetting: correct -> incorrect between consecutive presentations; never correct: EPOCHS; never presented: NaN
    forgotten = [np.nan if not c else EPOCHS if not any(c) else sum(a and not b for a, b in zip(c, c[1:]))
                 for c in correct]
    np.testing.assert_array_equal(scores["forgetting"], forgotten)
    first_epoch = sorted(repeated[0])
    repeats = [s for s in said if "presented more than once" in s]
    assert len(repeats) == 1 and f"{len(first_epoch)} sample(s) were presented more than once in epoch 1 " \
        f"(first: {first_epoch[:10]})" in repeats[0]
    never = np.flatnonzero(presented == 0).tolist()
    assert any(f"sample(s) were never presented (first: {never[:10]})" in s for s in said)


@pytest.mark.parametrize("seeded", [True, False])
def test_workers_record_bitwise_what_the_main_process_records(seeded: bool) -> None:
    """docs/own-training-loop.md: with a dataset that draws no random numbers, workers score bitwise
    as num_workers=0 with the same seed -- the sampler with a generator of its own, or drawing from
    torch's global one (seeded by the loop), draws in the main process either way."""
    _, alone, kept_alone, _ = _loop(workers=0, seeded=seeded)
    _, pooled, kept_pooled, _ = _loop(workers=2, seeded=seeded)
    order = [np.concatenate([idx for idx, _, _ in epoch]) for epoch in kept_alone]
    assert all(np.array_equal(a, np.concatenate([idx for idx, _, _ in b])) for a, b in zip(order, kept_pooled))
    assert alone.equals(pooled)
