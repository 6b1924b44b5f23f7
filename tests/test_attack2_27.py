"""attack2_27: the gather of `SampleTracker.update(..., gather=True)`, the code digest of a user's
model or recorder, and the worker's recorder-key check, attacked where a rank could be left waiting
or a number silently wrong. Fast: two ranks as threads (`test_gather27.FakeRanks`)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from test_gather27 import FakeRanks, ranks  # noqa: F401  (the fixture)

from harness import SampleTracker
from harness.errors import HarnessError
from harness.tracker.gather import gather_batch


def test_a_dtype_torch_cannot_promote_raises_on_every_rank(ranks: FakeRanks) -> None:  # noqa: F811
    """uint16 labels on rank 0, int64 on rank 1: rank 0 raised in the promotion while rank 1 (whose
    short dtype list left uint16 out) went on into the labels' all_gather and waited there."""

    def step(rank: int) -> Any:
        labels = torch.tensor([0, 1], dtype=torch.uint16 if rank == 0 else torch.int64)
        return gather_batch(torch.tensor([2 * rank, 2 * rank + 1]), losses=torch.ones(2), labels=labels)

    for e in ranks.run(step):
        assert isinstance(e, HarnessError), e
        assert "labels of dtypes ['torch.int64', 'torch.uint16']" in str(e)


def test_a_tensor_given_as_a_list_on_one_rank_raises_on_every_rank(ranks: FakeRanks) -> None:  # noqa: F811
    """labels=[0, 1] on rank 0: its header's dtype code read `.dtype` of the list (AttributeError on
    that rank alone, before the header's collective), and rank 1 waited for ever."""

    def step(rank: int) -> Any:
        labels: Any = [0, 1] if rank == 0 else torch.tensor([0, 1])
        return gather_batch(torch.tensor([2 * rank, 2 * rank + 1]), logits=torch.randn(2, 3), labels=labels)

    got = ranks.run(step)
    assert isinstance(got[0], HarnessError) and "labels must be a torch tensor, got list" in str(got[0]), got[0]
    assert isinstance(got[1], HarnessError) and "rank(s) [0] cannot be gathered" in str(got[1]), got[1]


def test_an_empty_ranks_dtype_does_not_decide_the_gathered_one(ranks: FakeRanks) -> None:  # noqa: F811
    """A rank without samples passing `torch.empty(0)` (float32) as labels made every rank's labels
    float32, and the tracker refused them on every rank as not integer: the rank with samples decides."""

    def step(rank: int) -> tuple[list[int], torch.dtype]:
        tracker = SampleTracker(4)
        if rank == 0:
            idx, logits, labels = torch.tensor([3, 1]), torch.randn(2, 3), torch.tensor([2, 0])
        else:
            idx, logits, labels = torch.zeros(0, dtype=torch.int64), torch.zeros(0, 3), torch.empty(0)
        tracker.update(idx, logits=logits, labels=labels, gather=True)
        g = gather_batch(idx, logits=logits, labels=labels)
        assert g.labels is not None
        return g.labels.tolist(), g.labels.dtype

    for got in ranks.run(step):
        assert got == ([2, 0], torch.int64), got


def test_changing_tensors_raise_on_every_rank_and_the_ranks_stay_in_step(ranks: FakeRanks) -> None:  # noqa: F811
    """A step where rank 1 drops labels=, then float64 losses that require grad: every rank raises at
    the bad step, and the next step's collectives still pair up (scores equal on both ranks)."""

    def step(rank: int) -> list[float]:
        tracker = SampleTracker(4, proxies=["csl"])
        idx = torch.tensor([2 * rank, 2 * rank + 1])
        z = torch.randn(2, 3, generator=torch.Generator().manual_seed(rank))
        with pytest.raises(HarnessError, match=r"only rank\(s\) \[0\] passed labels="):
            tracker.update(idx, logits=z, labels=torch.tensor([0, 1]) if rank == 0 else None, gather=True)
        losses = (torch.arange(2, dtype=torch.float64) + 2 * rank + 1).requires_grad_()
        tracker.update(idx, losses=losses * 1, gather=True)
        tracker.end_epoch()
        return tracker.scores()["csl"].tolist()

    got = ranks.run(step)
    assert got[0] == got[1] == [1.0, 2.0, 3.0, 4.0], got
