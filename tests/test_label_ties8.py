"""A tie between the label's logit and another class's is "not predicted as its label", whatever
the class order (`harness.predictions.predicts_label`): `argmax == label` gave the tie to the lower
class index, so the same tie counted as correct for label 0 and as wrong for label 1. bf16 logits
tie on ~0.1 % of samples per epoch; every correctness signal and accuracy shares the one rule."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pytest
import torch
from torch import nn

from harness.ensemble import train_ensemble
from harness.model_registry import MODELS, ModelEntry
from harness.predictions import predicts_label
from harness.prepared import PreparedData
from harness.recorders import EVAL_LAST, RecorderRequest, RunContext, build_recorder
from harness.recorders.eval_pass import eval_signals
from harness.runspec import RunSpec, TrainSubset
from harness.tracker import SampleTracker
from harness.training import count_correct, train_run

NAN, INF = float("nan"), float("inf")
CPU = torch.device("cpu")


def _t(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


# --- the rule ---------------------------------------------------------------------------------


def test_a_two_way_tie_is_wrong_for_the_lower_and_the_higher_label() -> None:
    logits = _t([[2.0, 2.0, 0.0], [2.0, 2.0, 0.0], [3.0, 2.0, 0.0], [3.0, 2.0, 0.0]])
    got = predicts_label(logits, torch.tensor([0, 1, 0, 1]))
    assert got.dtype == torch.bool and got.tolist() == [False, False, True, False]
    # what argmax == label said: the same tie right for label 0, wrong for label 1
    assert (logits.argmax(1) == torch.tensor([0, 1, 0, 1])).tolist() == [True, False, True, False]


def test_a_three_way_tie_is_wrong_for_every_tied_label_and_an_untied_one() -> None:
    logits = _t([[1.0, 1.0, 1.0, 0.5]]).expand(4, 4)
    assert predicts_label(logits, torch.tensor([0, 1, 2, 3])).tolist() == [False, False, False, False]


def test_ensemble_shape_k_b_c() -> None:
    logits = torch.stack([_t([[1.0, 1.0], [0.0, 1.0], [5.0, -1.0]]),  # member 0
                          _t([[0.0, 1.0], [2.0, 2.0], [5.0, 5.0]])])  # member 1
    labels = torch.tensor([[0, 1, 0], [1, 0, 1]])
    got = predicts_label(logits, labels)
    assert got.shape == (2, 3) and got.tolist() == [[False, True, True], [True, False, False]]
    # a label shared by all members, as the ensemble's eval pass passes them: (B,) broadcast to (K, B)
    assert predicts_label(logits, torch.tensor([0, 1, 0]).expand(2, -1)).tolist() == [[False, True, True],
                                                                                    [False, False, False]]


def test_non_finite_rows() -> None:
    logits = _t([[NAN, 1.0, 2.0], [1.0, NAN, 2.0], [3.0, NAN, 2.0], [NAN, NAN, NAN],
                 [INF, 1.0, 0.0], [INF, INF, 0.0], [1.0, -INF, -INF], [-INF, -INF, 0.0], [-INF, 1.0, 0.0]])
    labels = torch.tensor([0, 0, 0, 0, 0, 0, 0, 2, 0])
    # any NaN: False (argmax takes the first NaN for the maximum: row 0 was "correct"); +inf alone
    # above the rest: True; two +inf: a tie; -inf of other classes (class masks): the label wins
    assert predicts_label(logits, labels).tolist() == [False, False, False, False, True, False, True, True, False]
    assert (logits.argmax(1) == labels).tolist()[0] is True  # the old rule's NaN answer


def test_bf16_rounding_makes_the_tie() -> None:
    logits = _t([[1.0, 1.001]])  # 1.001 rounds to 1.0 in bf16 (8 significant bits)
    assert predicts_label(logits, torch.tensor([1])).tolist() == [True]
    half = logits.bfloat16()
    assert predicts_label(half, torch.tensor([0])).tolist() == [False]
    assert predicts_label(half, torch.tensor([1])).tolist() == [False]


def test_infinities_rank_as_numbers_and_two_top_infinities_tie() -> None:
    logits = _t([[float("inf"), 0.0, 0.0], [float("inf"), float("inf"), 0.0], [0.0, float("-inf"), float("-inf")]])
    assert predicts_label(logits, torch.tensor([0, 0, 0])).tolist() == [True, False, True]


# --- every place that asks --------------------------------------------------------------------

TIES = _t([[2.0, 2.0, 0.0], [2.0, 2.0, 0.0], [0.0, 5.0, 5.0], [0.0, 5.0, 5.0], [1.0, 0.0, 0.0]])
TIE_LABELS = torch.tensor([0, 1, 1, 2, 0])
TIE_CORRECT = [0.0, 0.0, 0.0, 0.0, 1.0]


def test_eval_signals_correct() -> None:
    assert eval_signals(TIES, TIE_LABELS)["correct"].tolist() == TIE_CORRECT
    stacked = eval_signals(torch.stack([TIES, TIES.flip(0)]), torch.stack([TIE_LABELS, TIE_LABELS.flip(0)]))
    assert stacked["correct"].tolist() == [TIE_CORRECT, TIE_CORRECT[::-1]]


def test_train_pass_recorder_correct() -> None:
    rec = build_recorder(RecorderRequest.of("train_correct"), RunContext(None, 1, None, 0, CPU, samples=5, classes=3))
    rec.on_batch(0, torch.arange(5), TIES.bfloat16(), torch.zeros(5), TIE_LABELS)  # training logits may be bf16
    assert rec.buffers["correct"][0].tolist() == TIE_CORRECT


@dataclass
class _Logits:
    """Stands in for PreparedData: the inputs are the logits (the model is an identity)."""

    x: torch.Tensor
    y: torch.Tensor

    @property
    def n(self) -> int:
        return len(self.y)

    def inputs(self, idx: torch.Tensor) -> torch.Tensor:
        return self.x[idx]


def test_ssft_recorder_correct() -> None:
    data = _Logits(TIES, TIE_LABELS)
    rec = build_recorder(RecorderRequest.of("ssft_correct"), RunContext(data, 1, torch.arange(5), 2, CPU))
    rec.on_epoch_end(0, 2, nn.Identity())
    assert rec.buffers["correct"][0].tolist() == TIE_CORRECT


def test_count_correct() -> None:
    assert float(count_correct(lambda x: x, TIES, TIE_LABELS, 2)) == 1.0
    members = torch.stack([TIES, -TIES])  # member 1: every row's label below another class, or tied
    assert count_correct(lambda x: members, TIES, TIE_LABELS, 5).tolist() == [1, 0]  # one batch of all 5


def test_tracker_forgetting_and_learning_time_are_label_symmetric() -> None:
    """Sample 0 (label 0) and sample 1 (label 1) are mirror images: right, tied, right, tied. The
    old rule counted sample 0's ties as right (0 forgetting events, learned at epoch 0) and sample
    1's as wrong (2 events); sample 2 (label 0) is always tied: never learned."""
    tracker = SampleTracker(3, proxies=["forgetting", "threshold_lt"], labels=[0, 1, 0])
    right, tie = _t([[2.0, 0.0], [0.0, 2.0], [1.0, 1.0]]), _t([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]])
    for logits in (right, tie, right, tie):
        tracker.update(torch.arange(3), logits=logits)
        tracker.end_epoch()
    table = tracker.scores()
    assert table["forgetting"].tolist() == [2.0, 2.0, 4.0]
    assert table["threshold_lt"].tolist() == [0.0, 0.0, 1.0]


# --- a model whose logits always tie every class: accuracy is 0, not the share of label 0 ------

TIE_MODEL = "tie_logits_test"


class _TiedLogits(nn.Module):
    """Every class's logit is one shared parameter: every sample ties every class, at every step
    (the gradient moves all logits alike)."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.classes = classes
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w.expand(x.shape[0], self.classes).clone()  # not a view: the FLOP counter hooks it


@pytest.fixture
def tie_spec(monkeypatch, base_spec: RunSpec) -> RunSpec:
    entry = ModelEntry(TIE_MODEL, "every logit tied", lambda shape, classes: _TiedLogits(classes))
    monkeypatch.setitem(MODELS._items, TIE_MODEL, entry)
    return replace(base_spec, model=TIE_MODEL, recipe=replace(base_spec.recipe, epochs=2))


def test_train_run_accuracy_and_signals_with_tied_logits(tie_spec: RunSpec, digits_noisy: PreparedData) -> None:
    requests = [RecorderRequest.of("train_correct"), EVAL_LAST]
    out = train_run(tie_spec, digits_noisy, requests, progress=False)
    assert float((digits_noisy.y == 0).float().mean()) > 0.05  # what argmax == label reported
    assert [row["acc"] for row in out.history] == [0.0, 0.0]
    assert out.train_acc == 0.0 and out.test_acc == 0.0
    assert not out.arrays["train_correct"]["correct"].any()
    assert not out.arrays[EVAL_LAST.key]["correct"].any()


def test_ssft_run_with_tied_logits(tie_spec: RunSpec, digits_noisy: PreparedData) -> None:
    spec = tie_spec.with_subset(TrainSubset("half", 0, 2), TrainSubset("half", 1, 2))
    out = train_run(spec, digits_noisy, [RecorderRequest.of("ssft_correct")], progress=False)
    correct = out.arrays["ssft_correct"]["correct"]
    first = ~np.isnan(correct).all(axis=0)
    assert first.sum() > 0 and (correct[:, first] == 0.0).all()


def test_ensemble_accuracy_and_reference_signal_with_tied_logits(tie_spec: RunSpec, digits_noisy: PreparedData
                                                                 ) -> None:
    specs = [replace(tie_spec, seed=s) for s in (0, 1)]
    outs = train_ensemble(specs, digits_noisy, [EVAL_LAST], progress=False)
    for out in outs:
        assert [row["acc"] for row in out.history] == [0.0, 0.0]
        assert out.train_acc == 0.0 and out.test_acc == 0.0
        assert not out.arrays[EVAL_LAST.key]["correct"].any()


def test_only_bf16_runs_get_a_new_address_for_the_tie_rule(monkeypatch) -> None:
    """bf16 runs stored under argmax == label counted a tie for the lower class; they must retrain, while
    float32 runs (bitwise the same arrays under both rules) keep theirs (pinned in test_precision)."""
    from dataclasses import replace

    import harness.runspec as runspec
    from tests.test_precision import OLD_DIGESTS

    spec = OLD_DIGESTS[0][0]
    bf16 = replace(spec, recipe=replace(spec.recipe, precision="bf16"))
    new_fp32, new_bf16 = spec.digest(), bf16.digest()
    monkeypatch.setattr(runspec, "TIE_RULE_VERSION", 1)
    assert spec.digest() == new_fp32 and bf16.digest() != new_bf16
