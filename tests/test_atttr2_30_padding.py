"""A DDP checkpoint saved after an epoch's last batch, before its end (a step checkpoint landing there), is closed
by the resumed fit before any batch (`DistributedRecorder.close_epoch_before`): the tracker that loaded it had
`allowed_repeats` 0 (the state does not keep it; the recorder set it at each update() only), so the sampler's
padding, which the uninterrupted run allows, was warned as repeated presentations at the resume (atttr2_30).
Two ranks as threads."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest
import torch

from harness import SampleTracker
from harness.integrations._common import DistributedRecorder

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_gather27 import FakeRanks, fake_ranks  # noqa: E402

N = 5  # odd: a DistributedSampler over 2 ranks pads rank 1 with sample 0


@pytest.fixture
def ranks(monkeypatch: pytest.MonkeyPatch) -> FakeRanks:
    return fake_ranks(monkeypatch)


@pytest.mark.parametrize("resumed", [False, True, "old"])
def test_a_padded_epoch_closed_at_the_resume_is_not_warned(ranks: FakeRanks, resumed: bool | str) -> None:
    """"old": a checkpoint saved before the recorder kept the allowance: this world's padding (2 x 1 - 1)."""

    def step(rank: int) -> tuple[list[str], int, list[float]]:
        rec = DistributedRecorder(SampleTracker(N, proxies=["csl"]))
        idx = torch.tensor([[0, 2, 4], [1, 3, 0]][rank])  # rank 1's last sample: the padding
        rec.update(idx, losses=idx.float() + 1)
        if resumed:  # the checkpoint at the epoch's last batch, resumed by a fresh callback after that epoch
            saved = rec.state()
            if resumed == "old":
                del saved["allowed_repeats"]
            rec = DistributedRecorder(SampleTracker(N, proxies=["csl"]))
            rec.resume(saved, "cpu", "CSLCallback", 1)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if resumed:
                rec.close_epoch_before(1)
            else:
                rec.end_epoch()
        return [str(w.message) for w in caught], rec.tracker.allowed_repeats, rec.tracker.scores()["csl"].tolist()

    out = ranks.run(step)
    assert out[0] == out[1] == ([], 1, [1.0, 2.0, 3.0, 4.0, 5.0]), out
