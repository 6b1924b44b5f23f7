"""A refused `update(..., gather=True)` changes nothing (atthint30): the allowance for a sampler's
padding (`allowed_repeats`, world size - 1; the integrations' recorder: world size x the per-device
batch - 1) was raised before the gathered batch's checks, so a call refused for a label outside the
classes left every rank allowing repeats it had never been shown to need. Two ranks as threads."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from harness import SampleTracker
from harness.errors import HarnessError
from harness.integrations._common import DistributedRecorder

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_gather27 import FakeRanks, fake_ranks  # noqa: E402


@pytest.fixture
def ranks(monkeypatch: pytest.MonkeyPatch) -> FakeRanks:
    return fake_ranks(monkeypatch)


@pytest.mark.parametrize("recorder", [False, True])
def test_a_refused_gathered_update_leaves_the_allowance(ranks: FakeRanks, recorder: bool) -> None:
    """Refused on both ranks (label 5 of 3 classes): allowed_repeats stays 0; the corrected call sets it
    (1 for update(), 2 x 4 - 1 = 7 for the recorder with a per-device batch of 4)."""

    def step(rank: int) -> tuple[int, int]:
        tracker = SampleTracker(10)
        rec = DistributedRecorder(tracker)
        rec.padding_batch = 4
        idx = torch.tensor([2 * rank, 2 * rank + 1])
        logits = torch.randn(2, 3, generator=torch.Generator().manual_seed(rank))

        def update(labels: torch.Tensor) -> None:
            if recorder:
                rec.update(idx, logits=logits, labels=labels)
            else:
                tracker.update(idx, logits=logits, labels=labels, gather=True)

        with pytest.raises(HarnessError, match="label 5 is outside"):
            update(torch.tensor([0, 5]))
        after_refusal = tracker.allowed_repeats
        update(torch.tensor([0, 2]))
        return after_refusal, tracker.allowed_repeats

    out = ranks.run(step)
    want = (0, 7 if recorder else 1)
    assert out == [want, want], out
