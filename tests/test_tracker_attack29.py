"""Session 29's attack on the day's tracker changes (discard_epoch and labels, refused calls, scores() refusals,
empty batches): a resumed tracker's refused eval pass, a resumed open epoch discarded, labels of a discarded
epoch, and every training-pass proxy recomputed by hand after a relabel + discard and around an empty batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from harness import SampleTracker
from harness.errors import HarnessError

N, C = 8, 3


def _data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, 4, generator=g), torch.randint(0, C, (N,), generator=g)


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Linear(4, C)


def test_a_resumed_trackers_refused_eval_pass_leaves_a_state_that_loads_and_scores_that_say_why() -> None:
    """Resumed after an eval pass, a second pass with the wrong labels is refused and drops that epoch's pass:
    state_dict() must load again (it held eval_at [2] with no flag rows: 'damaged'), and scores(['final_loss'])
    must refuse with the tracker still open, so eval_epoch can still be run (it ended the record first)."""
    x, y = _data()
    model = _model()
    tracker = SampleTracker(N)
    for _ in range(2):
        tracker.update(torch.arange(N), logits=model(x), labels=y)
        tracker.end_epoch()
    tracker.eval_epoch(model, (x, y))
    resumed = SampleTracker(N)
    resumed.load_state_dict(tracker.state_dict())
    with pytest.raises(HarnessError, match="other than the one they were trained on"):
        resumed.eval_epoch(model, (x, (y + 1) % C))
    again = SampleTracker(N)
    again.load_state_dict(resumed.state_dict())  # raised: 0 eval flag rows for 1 eval passes
    assert again.state_dict()["eval_at"] == []
    with pytest.raises(HarnessError, match="after the last end_epoch"):
        resumed.scores(["final_loss"])
    assert not resumed.finished
    resumed.eval_epoch(model, (x, y))
    with torch.no_grad():
        want = nn.functional.cross_entropy(model(x), y, reduction="none").numpy()
    np.testing.assert_array_equal(resumed.scores(["final_loss"])["final_loss"].to_numpy(), want.astype(np.float64))
