"""A user's own loop against `SampleTracker`, with an independent recomputation as the oracle
(methods.md: per-sample losses are cross-entropy with reduction='none' against the labels trained
on; csl sums them over the epochs of the training pass).

Before, a loop that passed losses= of another loss (label smoothing, class weights, a loss divided
for gradient accumulation) had csl sum that loss without a word, while the proxies that read
logits scored plain cross-entropy: now `end_epoch` says so, once."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from harness import SampleTracker
from harness.errors import HarnessError

N, C, BATCH, EPOCHS = 24, 3, 8, 2
OTHER_LOSS = "differ from the cross-entropy of their logits"


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(N, 5, generator=g), torch.randint(0, C, (N,), generator=g)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Linear(5, C)


def _loop(loss_of=None, *, accumulate: int = 1, autocast: bool = False, index_dtype=torch.int64,
          eval_mode: bool = False):
    """EPOCHS epochs of SGD over a fixed order of batches; returns the tracker, its warnings and, per
    batch, the (index, logits, loss, labels) it presented (the oracle's inputs)."""
    x, y = _data()
    model = _model()
    model.train(not eval_mode)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    tracker, seen = SampleTracker(N), []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(EPOCHS):
            for step, start in enumerate(range(0, N, BATCH)):
                idx = torch.arange(start, start + BATCH)
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                    logits = model(x[idx])
                    plain = nn.functional.cross_entropy(logits, y[idx], reduction="none")
                loss = plain if loss_of is None else loss_of(logits, y[idx])
                (loss.mean() / (1 if loss_of is not None else accumulate)).backward()
                if (step + 1) % accumulate == 0:
                    opt.step()
                    opt.zero_grad()
                seen.append((idx, logits.detach().float(), loss.detach().float(), y[idx]))
                tracker.update(idx.to(index_dtype), losses=loss, logits=logits, labels=y[idx])
            tracker.end_epoch()
    said = [str(w.message) for w in caught if str(w.message).startswith("SampleTracker")]
    return tracker, said, seen


def _sum_by_index(seen, ce: bool = False) -> np.ndarray:
    """The oracle's csl: per sample, the sum of the losses passed (`ce`: of the plain cross-entropy
    of the logits, recomputed in float64)."""
    total = np.zeros(N)
    for idx, logits, loss, labels in seen:
        value = nn.functional.cross_entropy(logits.double(), labels, reduction="none") if ce else loss.double()
        np.add.at(total, idx.numpy(), value.numpy())
    return total


def _replay(seen, tracker: SampleTracker | None = None) -> SampleTracker:
    """The batches of `seen` again, as logits and labels without losses= (epochs of N // BATCH)."""
    tracker = SampleTracker(N) if tracker is None else tracker
    for i, (idx, logits, _, labels) in enumerate(seen):
        tracker.update(idx, logits=logits, labels=labels)
        if (i + 1) % (N // BATCH) == 0:
            tracker.end_epoch()
    return tracker


@pytest.mark.parametrize("name, loss_of", [
    ("label smoothing", lambda z, t: nn.functional.cross_entropy(z, t, reduction="none", label_smoothing=0.1)),
    ("class weights", lambda z, t: nn.functional.cross_entropy(z, t, reduction="none",
                                                               weight=torch.tensor([1.0, 3.0, 0.5]))),
    ("divided for accumulation", lambda z, t: nn.functional.cross_entropy(z, t, reduction="none") / 4),
])
def test_another_loss_than_cross_entropy_is_summed_as_passed_and_said(name: str, loss_of) -> None:
    """csl sums the losses passed (the oracle: their sum per index); aum's and el2n's values are
    those of the same logits without losses=; end_epoch warns once, counting the presentations
    of the first epoch that has them (beyond 1 % of 1 + the loss) and the way to the specified csl."""
    tracker, said, seen = _loop(loss_of)
    scores = tracker.scores()
    np.testing.assert_allclose(scores["csl"], _sum_by_index(seen), rtol=1e-6)
    other = [s for s in said if OTHER_LOSS in s]
    assert len(other) == 1, said
    differ = sum(int(((loss - ce).abs() > 1e-2 * (1 + ce.abs())).sum()) for ce, loss in (
        (nn.functional.cross_entropy(z, t, reduction="none"), loss) for _, z, loss, t in seen[: N // BATCH]))
    assert differ > N // 2 and f"of {differ} presentation(s) in epoch 1" in other[0]
    assert "pass logits= and labels= without losses=" in other[0]
    want = _replay(seen).scores()
    for proxy in ("aum", "el2n", "forgetting"):
        np.testing.assert_array_equal(scores[proxy].to_numpy(), want[proxy].to_numpy(), err_msg=proxy)
    ce = _sum_by_index(seen, ce=True)
    np.testing.assert_allclose(want["csl"], ce, rtol=1e-6)  # the specified csl, from logits alone
    assert not np.allclose(scores["csl"], ce, rtol=1e-3)


def test_plain_cross_entropy_with_gradient_accumulation_is_said_nothing_and_counted_once_per_epoch() -> None:
    """Accumulation over 3 micro-batches (the mean divided for the backward pass, the per-sample
    losses passed as they are): no warning, each sample presented once per epoch, csl the sum of
    the losses presented."""
    tracker, said, seen = _loop(accumulate=3)
    assert said == []
    np.testing.assert_array_equal(tracker.epochs_presented(), np.full(N, EPOCHS))
    np.testing.assert_allclose(tracker.scores()["csl"], _sum_by_index(seen), rtol=1e-6)


def test_bf16_autocast_on_the_cpu_records_float32_values_of_the_bf16_logits() -> None:
    """Under CPU autocast the logits are bf16 and the loss float32: no warning (the loss is the
    cross-entropy of those logits), csl equals the float32 cross-entropy of the bf16 logits and is
    within bf16's rounding (1 %) of an fp32 recomputation of the same weights' logits."""
    tracker, said, seen = _loop(autocast=True)
    assert said == []
    scores = tracker.scores()
    assert scores["csl"].dtype == np.float64
    np.testing.assert_allclose(scores["csl"], _sum_by_index(seen, ce=True), rtol=1e-6)  # of the bf16 logits
    x, y = _data()
    fp32 = _loop()[2]  # the same loop in float32: its weights drift from the bf16 run's by rounding only
    np.testing.assert_allclose(scores["csl"], _sum_by_index(fp32, ce=True), rtol=2e-2)
    assert not np.array_equal(scores["csl"], _sum_by_index(fp32, ce=True))  # bf16 did round


def test_int32_indices_score_as_int64_ones_and_a_model_in_eval_mode_changes_nothing_recorded() -> None:
    """int32 indices (a collate of numpy int32) record bitwise as int64; a model left in eval mode
    trains the same here (no dropout or norm) and records the same, bitwise."""
    want = _loop()[0].scores()
    assert _loop(index_dtype=torch.int32)[0].scores().equals(want)
    assert _loop(eval_mode=True)[0].scores().equals(want)


def test_an_eval_pass_over_batches_without_indices_names_the_fix() -> None:
    """A loader of (x, y) batches (a dataset without its index) is refused, naming WithIndex."""
    x, y = _data()
    tracker, _, _ = _loop()
    with pytest.raises(HarnessError, match="WithIndex"):
        tracker.eval_epoch(_model(), [(x[:8], y[:8]), (x[8:], y[8:])])


def test_one_tracker_for_two_models_sums_both_trainings() -> None:
    """Two trainings into one tracker are 2 x EPOCHS epochs: the tracker cannot tell models apart
    in update() (docs/own-training-loop.md says: one tracker per training)."""
    first, _, seen = _loop()
    _replay(seen, first)
    assert first.epochs == 2 * EPOCHS
    np.testing.assert_array_equal(first.epochs_presented(), np.full(N, 2 * EPOCHS))


@pytest.mark.parametrize("indices", [None, ["a", "b"], np.array([object(), object()])])
def test_a_batch_without_indices_is_refused_naming_the_wrapper(indices) -> None:
    """A batch without its indices (`batch.get("index")` of a dataset that gives none: None) was a
    TypeError from torch about numpy object arrays; now a HarnessError naming WithIndex, and the
    tracker records nothing of it."""
    tracker = SampleTracker(N)
    with pytest.raises(HarnessError, match=r"no sample indices .*WithIndex\(dataset\)"):
        tracker.update(indices, losses=torch.ones(2))
    tracker.update(torch.arange(N), losses=torch.ones(N))
    tracker.end_epoch()
    np.testing.assert_array_equal(tracker.scores()["csl"], np.ones(N))


def test_one_hot_labels_are_refused_naming_the_class_ids() -> None:
    x, y = _data()
    tracker = SampleTracker(N)
    with pytest.raises(HarnessError, match=r"labels has shape \(24, 3\) .*labels\.argmax\(1\)"):
        tracker.update(torch.arange(N), logits=_model()(x), labels=nn.functional.one_hot(y, C).float())
