"""Numbers review of the tie rule, the CL tail and the score check (eighth round): each test pins a
value an earlier version got wrong, or a number checked correct that a later change could move.

- `predicts_label` gathered with the labels as given: gather does not broadcast, so (1, B) labels of
  a (K, B, C) ensemble, or one label for a batch, compared every member's (row's) logits with
  member 0's (row 0's) label logit; uint8 / int16 labels failed in gather; with C = 1 a NaN
  logit counted as correct.
- `checked_scores` read a pandas Series by position, whatever its index (a sorted Series scored
  each sample with another's score), and a masked array's values under the mask.
- confident_learning named neither the NaN nor the fold run when a fold model diverged.
"""

from __future__ import annotations

import re
import types
import warnings
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from harness.evaluation import score
from harness.predictions import predicts_label
from harness.recipe import Recipe
from harness.recorders import EVAL_LAST
from harness.runspec import Corruption, DataSpec, RunSpec, TrainSubset
from proxies import ScoreContext, make_proxy
from proxies.base import Proxy, checked_scores
from tests.conftest import FakeRun

NAN, INF = float("nan"), float("inf")


def _independent(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The rule written out in float64 numpy, row by row: the label's logit is a number strictly
    above every other class's logit."""
    values = logits.to(torch.float64).numpy() if logits.dtype.is_floating_point else logits.numpy()
    y = np.broadcast_to(labels.long().numpy(), values.shape[:-1])
    out = np.zeros(values.shape[:-1], dtype=bool)
    for i in np.ndindex(out.shape):
        row, c = values[i], int(y[i])
        out[i] = not np.isnan(row[c]) and all(row[c] > row[j] for j in range(len(row)) if j != c)
    return torch.from_numpy(out)


# --- predicts_label -----------------------------------------------------------------------------

def test_labels_broadcast_to_the_leading_shape_before_the_gather() -> None:
    logits = torch.tensor([[5.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 9.0]])
    # one label for the batch: row 2 (9 at class 2) is not class 0; before: compared with row 0's 5
    assert predicts_label(logits, torch.tensor([0])).tolist() == [True, False, False]
    members = torch.stack([logits, logits.flip(0)])  # (K=2, B=3, C=3)
    labels = torch.tensor([[0, 1, 2]])  # (1, B)
    # member 1, sample 0 has logits (0, 0, 9): not class 0; before: True (member 0's logit 5 was read)
    assert predicts_label(members, labels).tolist() == [[True, True, True], [False, True, False]]
    assert torch.equal(predicts_label(members, labels), predicts_label(members, labels[0]))


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int16, torch.int32, torch.int64])
def test_any_integer_label_dtype_gives_the_same_answer(dtype: torch.dtype) -> None:
    logits = torch.tensor([[2.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 3.0]])
    # before: uint8 and int16 failed in gather ("Expected dtype int32/int64 for index")
    assert predicts_label(logits, torch.tensor([0, 1, 2], dtype=dtype)).tolist() == [True, False, True]


def test_one_class_is_correct_unless_its_logit_is_nan() -> None:
    logits = torch.tensor([[NAN], [1.0], [-INF], [INF]])
    # before: C = 1 counted no logit below the label's and wanted C - 1 = 0: a NaN row was correct
    assert predicts_label(logits, torch.zeros(4, dtype=torch.long)).tolist() == [False, True, True, True]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int64])
@pytest.mark.parametrize("classes", [1, 2, 3, 10])
def test_the_rule_matches_an_independent_one_on_ties_nan_and_infinities(dtype: torch.dtype, classes: int) -> None:
    g = torch.Generator().manual_seed(classes)
    pool = torch.tensor([NAN, INF, -INF, 0.0, -0.0, 1.0, 1.0, 2.0])  # ties, signed zeros, non-finite
    for _ in range(4):
        if dtype == torch.int64:
            logits = torch.randint(-2, 2, (3, 6, classes), generator=g)
        else:
            logits = pool[torch.randint(0, len(pool), (3, 6, classes), generator=g)].to(dtype)
        for labels in (torch.randint(0, classes, (6,), generator=g), torch.randint(0, classes, (3, 6), generator=g)):
            want = _independent(logits, labels)
            assert torch.equal(predicts_label(logits, labels), want)
            strided = logits.transpose(0, 1).contiguous().transpose(0, 1)  # non-contiguous, same values
            assert torch.equal(predicts_label(strided, labels), want)
            row_labels = labels[-1] if labels.dim() == 2 else labels  # (B, C) logits with (B,) labels
            assert torch.equal(predicts_label(logits[0], row_labels), _independent(logits[0], row_labels))


# --- run addresses --------------------------------------------------------------------------------

#: digests at 7dbbe39 (before the tie rule): fp32 must keep them, bf16 must not
OLD = {("fp32", "base"): "453317c5c51ec2f4e0c6", ("fp32", "fold"): "b048a49d9aa8d9694a74",
       ("fp32", "ssft"): "e94c19827bd34f330bb1", ("fp32", "reference"): "85cc94fd04af9c571c58",
       ("bf16", "base"): "54910f9e836e6c5b4725", ("bf16", "fold"): "a0bbba7e74d1fbfb488d",
       ("bf16", "ssft"): "e1b7990e72d5df22f2ea", ("bf16", "reference"): "bac5a61794f514315e44"}


def test_fp32_runs_keep_their_addresses_and_every_kind_of_bf16_run_gets_a_new_one() -> None:
    recipe = Recipe(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=0.0, batch_size=64, epochs=3,
                    schedule="cosine", milestones=(), augment=False)
    base = RunSpec(data=DataSpec(corruption=Corruption(kind="noise", rate=0.1, seed=0)), model="mlp",
                   recipe=recipe, seed=0)
    for precision in ("fp32", "bf16"):
        b = replace(base, recipe=replace(recipe, precision=precision))
        specs = {"base": b, "fold": b.with_subset(TrainSubset("fold", 1, 3, 0)),
                 "ssft": b.with_subset(TrainSubset("half", 0, 2, 0), TrainSubset("half", 1, 2, 0)),
                 "reference": replace(b, seed=1000003).with_subset(TrainSubset("random", 3, 1, 0, 0.7))}
        for kind, spec in specs.items():
            assert (spec.digest() == OLD[(precision, kind)]) is (precision == "fp32"), (precision, kind)


# --- checked_scores -------------------------------------------------------------------------------

def test_a_series_indexed_out_of_sample_order_is_refused() -> None:
    ranked = pd.Series([0.1, 0.2, 0.3, 0.4]).sort_values(ascending=False)  # index 3, 2, 1, 0
    with pytest.raises(ValueError, match=r"pandas Series indexed \[3, 2, 1\]\.\.\.; .*sort_index"):
        checked_scores(ranked, 4)  # before: [0.4, 0.3, 0.2, 0.1], sample 0 scored as sample 3
    np.testing.assert_array_equal(checked_scores(ranked.sort_index(), 4), [0.1, 0.2, 0.3, 0.4])
    np.testing.assert_array_equal(checked_scores(pd.Series([1, 2], index=[0, 1]), 2), [1.0, 2.0])


def test_a_series_out_of_order_fails_that_proxy_with_a_line(base_spec, digits_noisy) -> None:
    class Sorted(Proxy):
        name, description, citation = "sorted_series", "returns its scores sorted", "-"

        def score(self, ctx: ScoreContext) -> pd.Series:
            return pd.Series(np.linspace(0, 1, len(ctx.labels))).sort_values(ascending=False)

    scores, problems = score([Sorted()], base_spec, digits_noisy, {base_spec: None})
    assert scores == {}
    assert problems[0].startswith(f"proxy sorted_series failed for {base_spec.label()}: ValueError: it returned "
                                  "a pandas Series indexed [1436, 1435, 1434]")


def test_masked_entries_are_no_score() -> None:
    masked = np.ma.masked_array([0.1, 0.2, 0.3], mask=[False, True, False])
    np.testing.assert_array_equal(checked_scores(masked, 3), [0.1, np.nan, 0.3])  # before: 0.2
    np.testing.assert_array_equal(checked_scores(np.ma.masked_array([1, 2]), 2), [1.0, 2.0])


@pytest.mark.parametrize(("raw", "expected"), [
    (torch.tensor([True, False]), [1.0, 0.0]),
    (torch.tensor([3, -2], dtype=torch.int32), [3.0, -2.0]),
    (np.array([2, 7], dtype=np.uint64), [2.0, 7.0]),
    ([torch.tensor(1.5), torch.tensor(2.5)], [1.5, 2.5]),
])
def test_ints_bools_and_lists_of_scalars_are_their_values(raw: object, expected: list[float]) -> None:
    got = checked_scores(raw, 2)
    assert got.dtype == np.float64 and got.tolist() == expected


@pytest.mark.parametrize(("raw", "error"), [(torch.tensor(1.0), "shape ()"), (np.array([1.0, None]), "object"),
                                            (np.array(["1", "2"]), "<U1")])
def test_0d_object_and_text_returns_are_refused(raw: object, error: str) -> None:
    with pytest.raises((ValueError, TypeError), match=re.escape(error)):
        checked_scores(raw, 2)


# --- confident_learning ---------------------------------------------------------------------------

def test_a_diverged_fold_fails_the_proxy_with_a_line_naming_the_fold(base_spec) -> None:
    labels = np.repeat(np.arange(3), 10)
    probs = np.full((30, 3), 0.1, dtype=np.float32)
    probs[np.arange(30), labels] = 0.8
    proxy = make_proxy("confident_learning")
    runs = {}
    for k, spec in enumerate(proxy.fold_specs(base_spec)):
        p = probs.copy()
        if k == 1:
            p[:] = np.nan  # fold 1's model diverged: NaN for the samples it holds out
        runs[spec] = FakeRun({EVAL_LAST.key: {"probs_last": p, "phi": np.zeros((1, 30), np.float32)}})
    data = types.SimpleNamespace(labels=labels, num_classes=3, n=30)
    scores, problems = score([proxy], base_spec, data, runs)  # type: ignore[arg-type]
    assert scores == {}
    fold = proxy.fold_specs(base_spec)[1].label()
    # before: "pred_probs must be a complete (N, C) array for N=30, got (30, 3)"
    assert problems == [f"proxy confident_learning failed for {base_spec.label()}: HarnessError: 10 of 30 samples "
                        f"have NaN held-out probabilities from fold run(s) {fold} (a diverged fold model); lower "
                        "--lr, or leave confident_learning out; left out of the leaderboard"]


# --- --bootstrap warning --------------------------------------------------------------------------

def test_few_resamples_warn_once_per_config_however_often_it_is_validated() -> None:
    from harness.api import experiment_config

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cfg = experiment_config(bootstrap=7)
        cfg.validate()  # run_experiment validates the config again: no second line
        cfg.validate()
    assert sum("bootstrap=7:" in str(w.message) for w in caught) == 1  # keywords: from the API


@pytest.mark.parametrize("test_labels", [[0, 1, 2], [-1, 0, 1]], ids=["past-the-classes", "negative"])
def test_a_class_id_outside_the_class_names_is_refused_when_the_dataset_is_built(test_labels) -> None:
    """A plugin loader's test label 10 on 10 classes failed only after training (a gather in the test
    accuracy; on a GPU a device-side assert); before the label-symmetric rule it made test_acc low."""
    from harness.datasets.base import Dataset
    from harness.errors import HarnessError

    x = torch.zeros(3, 2, 1, 1)
    with pytest.raises(HarnessError, match=r"y_test holds class id (2|-1), outside \[0, 2\) for its 2 class names"):
        Dataset("toy", x, torch.tensor([0, 1, 0]), x, torch.tensor(test_labels), ("a", "b"), 3)
