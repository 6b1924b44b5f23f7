"""The own-loop tracker against hand computation in loops users write (tracker29): a label conflict
that the loop answers with `discard_epoch()`, and the hints of the errors and warnings such loops meet."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from harness import SampleTracker
from harness.errors import HarnessError

N, C = 12, 3


def _data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, C, generator=g), torch.randint(0, C, (N,), generator=g)


def _hand_csl(epochs: list[tuple[torch.Tensor, torch.Tensor]]) -> np.ndarray:
    """Each epoch's plain cross-entropy (float32, as the loop computes it) summed in float64."""
    return np.sum([F.cross_entropy(lg, y, reduction="none").double().numpy() for lg, y in epochs], axis=0)


def test_discarding_a_conflicting_epoch_keeps_the_labels_of_the_closed_epochs() -> None:
    """A relabeled epoch raises at end_epoch; discarding it and rerunning the epoch with the labels of the
    closed epochs scores as a loop that never relabeled (the discarded labels used to stay: the rerun raised)."""
    logits, y = _data()
    relabeled = y.clone()
    relabeled[[3, 7]] = (relabeled[[3, 7]] + 1) % C
    tracker = SampleTracker(N)
    tracker.update(torch.arange(N), logits=logits, labels=y)
    tracker.end_epoch()
    tracker.update(torch.arange(N), logits=logits, labels=relabeled)
    with pytest.raises(HarnessError, match=r"2 sample\(s\) in epoch 2.*first: \[3, 7\]"):
        tracker.end_epoch()
    tracker.discard_epoch()
    tracker.update(torch.arange(N), logits=2 * logits, labels=y)
    tracker.end_epoch()
    scores = tracker.scores(["csl"])
    np.testing.assert_array_equal(scores["label"].to_numpy(), y.numpy())
    np.testing.assert_array_equal(scores["csl"].to_numpy(), _hand_csl([(logits, y), (2 * logits, y)]))


def test_the_discarded_labels_cannot_be_given_again_without_an_error() -> None:
    """Rerunning the discarded epoch with the new labels is the same conflict with the closed epoch: it
    must raise again, not sum epoch 1's loss against one label and epoch 2's against another (it passed)."""
    logits, y = _data(1)
    relabeled = y.clone()
    relabeled[5] = (relabeled[5] + 1) % C
    tracker = SampleTracker(N)
    tracker.update(torch.arange(N), logits=logits, labels=y)
    tracker.end_epoch()
    tracker.update(torch.arange(N), logits=logits, labels=relabeled)
    with pytest.raises(HarnessError, match=r"first: \[5\]"):
        tracker.end_epoch()
    tracker.discard_epoch()
    tracker.update(torch.arange(N), logits=logits, labels=relabeled)
    with pytest.raises(HarnessError, match=r"1 sample\(s\) in epoch 2.*first: \[5\]"):
        tracker.end_epoch()


def test_a_discarded_first_epoch_forgets_its_labels() -> None:
    """A first epoch that raised (labels read wrongly, say) is discarded and rerun with other labels: the
    discarded attempt gave no sample its label, so the rerun's are the ones scored (they conflicted with
    the discarded ones once a checkpoint had recorded the attempt's held batches)."""
    logits, y = _data(2)
    wrong = (y + 1) % C
    tracker = SampleTracker(N)
    tracker.update(torch.arange(6), logits=logits[:6], labels=wrong[:6])
    tracker.state_dict()  # a checkpoint mid-epoch records the held batches; then the loop raises
    tracker.discard_epoch()
    for half in (torch.arange(6), torch.arange(6, N)):
        tracker.update(half, logits=logits[half], labels=y[half])
    tracker.end_epoch()
    scores = tracker.scores(["csl"])
    np.testing.assert_array_equal(scores["label"].to_numpy(), y.numpy())
    np.testing.assert_array_equal(scores["csl"].to_numpy(), _hand_csl([(logits, y)]))


def test_a_repeat_within_a_batch_with_another_label_still_raises() -> None:
    """The conflict check against a sample's first presentation in the same batch (no earlier label) holds."""
    logits, y = _data(3)
    idx = torch.tensor([0, 1, 0])
    labels = torch.tensor([int(y[0]), int(y[1]), (int(y[0]) + 1) % C])
    tracker = SampleTracker(N)
    tracker.update(idx, logits=logits[idx], labels=labels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(HarnessError, match=r"first: \[0\]"):
            tracker.end_epoch()


def test_a_loop_that_forgets_end_epoch_is_told_to_call_it() -> None:
    """end_epoch() called once after three epochs: the three are one epoch whose repeats are dropped, so
    csl is the first epoch's loss alone (hand: CE of the first logits), and the warning names the missing
    end_epoch(), not only a sampler with replacement."""
    logits, y = _data(4)
    tracker = SampleTracker(N)
    for epoch in range(3):
        for half in (torch.arange(6), torch.arange(6, N)):
            tracker.update(half, logits=(epoch + 1) * logits[half], labels=y[half])
    with pytest.warns(RuntimeWarning, match=r"12 sample\(s\) were presented more than once.*call end_epoch\(\) "
                                            r"after each epoch"):
        tracker.end_epoch()
    assert tracker.epochs == 1
    np.testing.assert_array_equal(tracker.scores(["csl"])["csl"].to_numpy(), _hand_csl([(logits, y)]))


def test_a_sampler_with_replacement_is_not_told_about_end_epoch() -> None:
    """Some samples repeated, others not (a sampler with replacement): the end_epoch() hint stays out."""
    logits, y = _data(5)
    idx = torch.tensor([0, 1, 1, 2, 3, 3])
    tracker = SampleTracker(N)
    tracker.update(idx, logits=logits[idx], labels=y[idx])
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        tracker.end_epoch()
    text = " ".join(str(w.message) for w in said)
    assert "2 sample(s) were presented more than once" in text and "end_epoch()" not in text


@pytest.mark.parametrize(("output", "said"), [
    (lambda lg: (lg, lg.sum()), r"must be torch tensors; logits= is a tuple of \(12, 3\), \(\); pass the logits "
                                r"tensor itself .*out\[0\]"),
    (lambda lg: {"logits": lg, "aux": 0}, r"must be torch tensors; logits= is a dict \(keys 'logits', 'aux'\); pass "
                                          r"the logits tensor itself, e.g. out\['logits'\]"),
])
def test_a_model_output_passed_as_logits_names_the_tensor_to_pass(output, said) -> None:
    """A model returning a tuple or a dict, passed whole as logits=: the error names the tensor inside."""
    logits, y = _data(6)
    tracker = SampleTracker(N)
    with pytest.raises(HarnessError, match=said):
        tracker.update(torch.arange(N), logits=output(logits), labels=y)
    tracker.update(torch.arange(N), logits=logits, labels=y)  # nothing was recorded by the refused call
    tracker.end_epoch()
    np.testing.assert_array_equal(tracker.scores(["csl"])["csl"].to_numpy(), _hand_csl([(logits, y)]))


def test_losses_as_a_list_of_numbers_say_how_to_convert_them() -> None:
    logits, y = _data(7)
    with pytest.raises(HarnessError, match=r"must be torch tensors; losses= is a list; convert it with "
                                           r"torch.as_tensor\(losses\)"):
        SampleTracker(N).update(torch.arange(N), losses=[0.5] * N, logits=logits, labels=y)


def test_batch_positions_passed_for_indices_are_named_in_the_warning() -> None:
    """A loop passing torch.arange(len(xb)) as the indices presents samples 0..B-1 in every batch: the
    warning names positions in the batch besides end_epoch(), and the scores say most were never presented."""
    logits, y = _data(8)
    tracker = SampleTracker(N)
    for half in (torch.arange(6), torch.arange(6, N)):
        tracker.update(torch.arange(6), logits=logits[half], labels=y[:6])
    with pytest.warns(RuntimeWarning, match=r"6 sample\(s\) were presented more than once.*not its position in the "
                                            r"batch"):
        tracker.end_epoch()
    np.testing.assert_array_equal(tracker.epochs_presented(), [1] * 6 + [0] * 6)


def test_eval_epoch_of_a_model_returning_a_dict_says_how_to_pass_its_logits() -> None:
    """The eval pass of a model with a dict output is refused naming the wrapper; the wrapper it names scores
    final_loss as the hand's cross-entropy of the model's logits."""
    from torch import nn

    class DictNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(4, C)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"logits": self.lin(x)}

    class Pick(nn.Module):
        def forward(self, out: dict[str, torch.Tensor]) -> torch.Tensor:
            return out["logits"]

    torch.manual_seed(0)
    net, x = DictNet(), torch.randn(N, 4)
    _, y = _data(9)
    tracker = SampleTracker(N)
    tracker.update(torch.arange(N), logits=net(x)["logits"], labels=y)
    tracker.end_epoch()
    with pytest.raises(HarnessError, match=r"returned dict for a batch of 12.*nn.Sequential\(model, Pick\(\)\)"):
        tracker.eval_epoch(net, (x, y))
    tracker.eval_epoch(nn.Sequential(net, Pick()), (x, y))
    with torch.no_grad():
        hand = F.cross_entropy(net(x)["logits"], y, reduction="none").numpy()
    np.testing.assert_allclose(tracker.scores(["final_loss"])["final_loss"].to_numpy(), hand, rtol=1e-6)


def test_a_refused_update_fixes_no_class_count() -> None:
    """A first update() refused for its labels (one-hot rows) after logits of the wrong width (features):
    nothing was recorded, so the corrected call is accepted and scored as the hand's (it was refused: 'logits
    have 3 classes but earlier batches had 64')."""
    logits, y = _data(10)
    tracker = SampleTracker(N)
    with pytest.raises(HarnessError, match="labels has shape"):
        tracker.update(torch.arange(N), logits=torch.randn(N, 64), labels=F.one_hot(y, C))
    with pytest.raises(HarnessError, match=r"label 2 is outside \[0, 2\)"):
        tracker.update(torch.arange(N), logits=logits[:, :2], labels=torch.full((N,), 2))
    tracker.update(torch.arange(N), logits=logits, labels=y)
    tracker.end_epoch()
    assert tracker.num_classes == C
    np.testing.assert_array_equal(tracker.scores(["csl"])["csl"].to_numpy(), _hand_csl([(logits, y)]))


def test_a_refused_losses_only_update_keeps_the_logit_proxies() -> None:
    """proxies=['csl', 'aum'] and a first update() with losses alone, refused (aum needs logits): every later
    batch has logits, so aum scores as the hand's -margin (scores() refused it: 'did not record')."""
    logits, y = _data(11)
    tracker = SampleTracker(N, proxies=["csl", "aum"])
    with pytest.raises(HarnessError, match="the selected proxies need"):
        tracker.update(torch.arange(N), losses=F.cross_entropy(logits, y, reduction="none"))
    tracker.update(torch.arange(N), logits=logits, labels=y)
    tracker.end_epoch()
    scores = tracker.scores()
    given = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.scatter(1, y[:, None], float("-inf")).amax(1)
    np.testing.assert_array_equal(scores["aum"].to_numpy(), -(given - others).double().numpy())
    np.testing.assert_array_equal(scores["csl"].to_numpy(), _hand_csl([(logits, y)]))


@pytest.fixture
def device_indices(monkeypatch: pytest.MonkeyPatch) -> None:
    """CPU indices taken as a GPU's are (`Inputs.batch_indices` returns them as a device tensor, range-checked
    at end_epoch): the device bookkeeping (`Presentations._device_slots`) on a machine without a GPU."""
    from harness.tracker.inputs import Inputs

    def device_path(self: Inputs, indices, where: str = "update()"):
        return None, torch.as_tensor(indices).to(self.device, torch.int64)

    monkeypatch.setattr(Inputs, "batch_indices", device_path)


@pytest.mark.usefixtures("device_indices")
def test_device_indices_discard_a_conflicting_epoch_and_name_a_missing_end_epoch() -> None:
    """The discarded labels and the end_epoch() hint with indices held on the device (a GPU loop's)."""
    test_discarding_a_conflicting_epoch_keeps_the_labels_of_the_closed_epochs()
    test_the_discarded_labels_cannot_be_given_again_without_an_error()
    test_a_discarded_first_epoch_forgets_its_labels()
    test_a_loop_that_forgets_end_epoch_is_told_to_call_it()
    test_a_sampler_with_replacement_is_not_told_about_end_epoch()
    test_batch_positions_passed_for_indices_are_named_in_the_warning()


def test_scores_refused_for_a_missing_eval_pass_leaves_the_tracker_open_for_it() -> None:
    """scores(['final_loss']) without eval_epoch says to call eval_epoch after the last end_epoch(); the
    refusal no longer ends the recording (eval_epoch then said 'after the tracker finished'): the pass the
    error asks for runs, and final_loss is the hand's cross-entropy of the model's logits."""
    from torch import nn

    torch.manual_seed(0)
    model, x = nn.Linear(4, C), torch.randn(N, 4)
    _, y = _data(12)
    tracker = SampleTracker(N)
    tracker.update(torch.arange(N), logits=model(x), labels=y)
    tracker.end_epoch()
    with pytest.raises(HarnessError, match=r"call eval_epoch\(model, data\) after the last end_epoch\(\)"):
        tracker.scores(["final_loss"])
    with pytest.raises(HarnessError, match="unknown proxy 'fnial_loss'"):
        tracker.scores("csl,fnial_loss")
    assert not tracker.finished
    tracker.eval_epoch(model, (x, y))
    with torch.no_grad():
        hand = F.cross_entropy(model(x), y, reduction="none").numpy()
    np.testing.assert_allclose(tracker.scores(["final_loss"])["final_loss"].to_numpy(), hand, rtol=1e-6)


def test_a_constructor_selection_the_record_cannot_give_is_refused_before_the_end() -> None:
    """SampleTracker(n, proxies=['csl', 'in_confidence']) scored before its eval pass: refused with the
    tracker open; after the pass, in_confidence is 1 - the hand's softmax probability of the label."""
    from torch import nn

    torch.manual_seed(1)
    model, x = nn.Linear(4, C), torch.randn(N, 4)
    _, y = _data(13)
    tracker = SampleTracker(N, proxies=["csl", "in_confidence"])
    tracker.update(torch.arange(N), logits=model(x), labels=y)
    tracker.end_epoch()
    with pytest.raises(HarnessError, match="in_confidence reads"):
        tracker.scores()
    tracker.eval_epoch(model, (x, y))
    with torch.no_grad():
        hand = 1 - torch.softmax(model(x), 1).gather(1, y[:, None]).squeeze(1).double().numpy()
    np.testing.assert_allclose(tracker.scores()["in_confidence"].to_numpy(), hand, rtol=1e-6)


def test_an_empty_batch_without_logits_keeps_the_logit_proxies() -> None:
    """A loop that filters its batch (keep = labels >= 0) and passes an emptied one with losses= alone:
    no sample lacks logits, so scores() still gives aum (the hand's -margin) and the suggested label
    (the empty batch dropped every proxy but csl from the default set)."""
    logits, y = _data(14)
    tracker = SampleTracker(N)
    tracker.update(torch.arange(6), logits=logits[:6], labels=y[:6])
    tracker.update(torch.arange(0), losses=torch.zeros(0))
    tracker.update(torch.arange(6, N), logits=logits[6:], labels=y[6:])
    tracker.end_epoch()
    scores = tracker.scores()
    given = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.scatter(1, y[:, None], float("-inf")).amax(1)
    assert {"csl", "aum", "el2n", "threshold_lt"} <= set(scores.columns)  # one epoch: no forgetting, variability
    np.testing.assert_array_equal(scores["aum"].to_numpy(), -(given - others).double().numpy())
    np.testing.assert_array_equal(scores["csl"].to_numpy(), _hand_csl([(logits, y)]))


def test_csl_of_a_float64_loop_is_its_losses_rounded_to_float32_then_summed_in_float64() -> None:
    """The documented hand computation for a float64 loop (docs/own-training-loop.md): loss.float() per
    epoch, summed in float64, gives csl's bits."""
    logits, y = _data(15)
    logits = logits.double()
    tracker, kept = SampleTracker(N), []
    for epoch in range(3):
        losses = F.cross_entropy((epoch + 1) * logits, y, reduction="none")
        kept.append(losses)
        tracker.update(torch.arange(N), losses=losses, logits=(epoch + 1) * logits, labels=y)
        tracker.end_epoch()
    got = tracker.scores(["csl"])["csl"].to_numpy()
    np.testing.assert_array_equal(got, torch.stack(kept).float().double().sum(0).numpy())
