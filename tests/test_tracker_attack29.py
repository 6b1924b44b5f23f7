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


@pytest.mark.parametrize("resumed", [False, True])
def test_a_resumed_open_epoch_with_a_losses_only_batch_discarded_keeps_the_logit_proxies(resumed: bool) -> None:
    """A step checkpoint saved mid-epoch after a batch with losses= alone, resumed and its epoch discarded (the
    loop raised): the record is the closed epochs', all with logits, so the default scores keep aum, forgetting,
    el2n, ... as an unresumed tracker does (the resumed one scored csl alone, silently)."""
    x, y = _data()
    model = _model()
    tracker = SampleTracker(N)
    tracker.update(torch.arange(N), logits=model(x), labels=y)
    tracker.end_epoch()
    tracker.update(torch.arange(4), losses=torch.ones(4))
    if resumed:
        state = tracker.state_dict()
        tracker = SampleTracker(N)
        tracker.load_state_dict(state)
    tracker.discard_epoch()
    tracker.update(torch.arange(N), logits=model(x), labels=y)
    tracker.end_epoch()
    scores = tracker.scores()
    assert list(scores.columns) == ["index", "label", "aum", "csl", "el2n", "forgetting", "threshold_lt",
                                    "variability"]
    with torch.no_grad():
        logits = model(x)
    own = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], float("-inf")).max(1).values
    np.testing.assert_allclose(scores["aum"].to_numpy(), -(own - other).double().numpy(), rtol=1e-6)


def test_a_state_saved_before_had_logits_closed_was_kept_still_loads() -> None:
    """A state of a memprox that did not save it loads, as before: a discard keeps the open epoch's flag."""
    x, y = _data()
    tracker = SampleTracker(N)
    tracker.update(torch.arange(N), logits=_model()(x), labels=y)
    tracker.end_epoch()
    state = tracker.state_dict()
    del state["had_logits_closed"]
    resumed = SampleTracker(N)
    resumed.load_state_dict(state)
    assert resumed._had_logits_closed is True
    state["had_logits_closed"] = "yes"
    with pytest.raises(HarnessError, match="had_logits_closed = 'yes'"):
        SampleTracker(N).load_state_dict(state)


@pytest.mark.parametrize("resumed", [False, True])
def test_a_discarded_epoch_drops_the_labels_it_gave_first_to_samples_presented_before_without_labels(
        resumed: bool) -> None:
    """Epoch 1 passes losses= alone; epoch 2 gives labels (wrong ones: read from the wrong column), a step
    checkpoint records its held batches (state_dict), and the loop raises: after discard_epoch() the rerun
    with the right labels is accepted and scored against them (it raised 'labels other than an earlier
    update() gave them': the discarded labels stayed, since the samples were presented in a closed epoch)."""
    _, y = _data()
    wrong = (y + 1) % C
    tracker = SampleTracker(N, proxies=["csl"])
    tracker.update(torch.arange(N), losses=torch.full((N,), 0.5))
    tracker.end_epoch()
    tracker.update(torch.arange(N), losses=torch.full((N,), 9.0), labels=wrong)
    state = tracker.state_dict()  # records the held batch: its labels reach the record
    if resumed:
        tracker = SampleTracker(N, proxies=["csl"])
        tracker.load_state_dict(state)
    tracker.discard_epoch()
    tracker.update(torch.arange(N), losses=torch.full((N,), 0.25), labels=y)
    tracker.end_epoch()
    scores = tracker.scores()
    np.testing.assert_array_equal(scores["label"].to_numpy(), y.numpy())
    np.testing.assert_array_equal(scores["csl"].to_numpy(), np.full(N, 0.75))


def test_labels_of_a_closed_epoch_stay_after_a_discard_of_a_resumed_state_saved_without_them() -> None:
    """A state saved before the closed epochs' labels were kept (no given_closed) resumes with the old rule:
    samples a closed epoch presented keep their label, so a discarded relabeling still cannot stick."""
    x, y = _data()
    model = _model()
    tracker = SampleTracker(N)
    tracker.update(torch.arange(N), logits=model(x), labels=y)
    tracker.end_epoch()
    tracker.update(torch.arange(N), logits=model(x), labels=(y + 1) % C)
    state = tracker.state_dict()
    del state["signals"]["given_closed"]
    resumed = SampleTracker(N)
    resumed.load_state_dict(state)
    with pytest.raises(HarnessError, match=f"labels for {N} sample"):
        resumed.end_epoch()
    resumed.discard_epoch()
    resumed.update(torch.arange(N), logits=model(x), labels=y)
    resumed.end_epoch()
    np.testing.assert_array_equal(resumed.scores()["label"].to_numpy(), y.numpy())
