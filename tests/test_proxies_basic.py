"""The issue-2 proxies on hand-made records, and the recorders that produce those records.

Every expected value below is written out by hand (or computed independently with numpy / torch),
so a change in a proxy's scoring rule or a recorder's arithmetic shows up as a value mismatch.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from harness.errors import HarnessError
from harness.jobs import make_manifest
from harness.recorders import RecorderRequest, RunContext, build_recorder
from harness.store import RunStore
from harness.training import RunOutput
from proxies import ScoreContext, make_proxy, resolve_proxies

NAN = np.nan
ISSUE2 = ["csl", "csl_eval", "final_loss", "in_confidence", "forgetting", "threshold_lt", "aum", "el2n",
          "variability"]


def score(name: str, ctx, **params) -> np.ndarray:
    return np.asarray(make_proxy(name, **params).score(ctx), dtype=np.float64)


# --- scores on hand-made records -------------------------------------------------------------


def test_csl_sums_training_losses_skipping_unseen_epochs(score_ctx) -> None:
    loss = np.array([[1.0, 0.5, 2.0], [0.5, NAN, 1.0], [0.25, 0.5, 0.0]])
    np.testing.assert_allclose(score("csl", score_ctx({"train_loss": {"loss": loss}})), [1.75, 1.0, 3.0])


def test_csl_eval_sums_every_epoch_eval_loss(score_ctx) -> None:
    loss = np.array([[2.0, 0.1], [1.0, 0.2], [0.5, 0.3]])
    ctx = score_ctx({"eval_pass[epochs=all]": {"loss": loss}})
    np.testing.assert_allclose(score("csl_eval", ctx), [3.5, 0.6])


def test_final_loss_is_last_eval_row(score_ctx) -> None:
    ctx = score_ctx({"eval_pass[epochs=last]": {"loss": np.array([[0.3, 2.5, 0.0]])}})
    np.testing.assert_allclose(score("final_loss", ctx), [0.3, 2.5, 0.0])


def test_in_confidence_given_and_max(score_ctx) -> None:
    arrays = {"p_label": np.array([[0.9, 0.2, 0.5]]), "p_max": np.array([[0.9, 0.7, 0.6]])}
    ctx = score_ctx({"eval_pass[epochs=last]": arrays})
    np.testing.assert_allclose(score("in_confidence", ctx), [0.1, 0.8, 0.5])
    np.testing.assert_allclose(score("in_confidence", ctx, variant="max"), [0.1, 0.3, 0.4])
    with pytest.raises(HarnessError, match="variant"):
        score("in_confidence", ctx, variant="median")


def test_forgetting_counts_correct_to_incorrect_transitions(score_ctx) -> None:
    correct = np.array(
        [  # samples:  0  1  2  3  4
            [1, 1, 0, 0, 1],
            [1, 0, 0, 1, 1],
            [1, 1, 0, 0, 0],
            [1, 0, 0, 0, 1],
        ],
        dtype=np.float32,
    )
    # 0: never forgotten; 1: forgotten twice; 2: never correct -> E = 4; 3: once; 4: once
    ctx = score_ctx({"train_correct": {"correct": correct}})
    np.testing.assert_array_equal(score("forgetting", ctx), [0, 2, 4, 1, 1])


def test_forgetting_compares_successive_presentations_not_epochs(score_ctx) -> None:
    nan = np.nan
    correct = np.array(
        [  # samples:   0    1    2    3    4
            [1, 1, nan, 1, nan],
            [nan, nan, 1, 0, nan],
            [1, 0, nan, nan, nan],
            [nan, 1, 0, 1, nan],
        ]
    )
    # 0: correct, skipped, correct -> 0 (a skipped epoch is no event); 1: correct, skipped, wrong,
    # correct -> 1; 2: skipped, correct, skipped, wrong -> 1; 3: 1, 0, skipped, 1 -> 1; 4: never
    # presented -> NaN (not E: nothing was forgotten, nothing was seen); threshold_lt alike
    ctx = score_ctx({"train_correct": {"correct": correct}})
    np.testing.assert_array_equal(score("forgetting", ctx), [0, 1, 1, 1, nan])
    np.testing.assert_array_equal(score("threshold_lt", ctx), [0, 0, 1 / 4, 0, nan])


def test_threshold_learning_time(score_ctx) -> None:
    correct = np.array([[0, 0, 0, 1, 1, 0, 1], [0] * 7, [1] * 7], dtype=np.float32).T  # (E=7, N=3)
    ctx = score_ctx({"train_correct": {"correct": correct}})
    np.testing.assert_allclose(score("threshold_lt", ctx), [3 / 7, 1.0, 0.0])


def test_aum_is_negated_mean_margin(score_ctx) -> None:
    margin = np.array([[1.0, -2.0], [3.0, -1.0], [NAN, 0.0]])
    ctx = score_ctx({"train_margin": {"margin": margin}})
    np.testing.assert_allclose(score("aum", ctx), [-2.0, 1.0])


def test_el2n_averages_the_early_window(score_ctx) -> None:
    el2n = np.arange(20, dtype=np.float64).reshape(10, 2)  # epoch e holds [2e, 2e+1]
    ctx = score_ctx({"train_prob": {"el2n": el2n, "p_label": np.zeros((10, 2))}})
    np.testing.assert_allclose(score("el2n", ctx), [0.0, 1.0])  # default window 0.1 -> first epoch
    np.testing.assert_allclose(score("el2n", ctx, window=0.3), [2.0, 3.0])  # epochs 0-2
    np.testing.assert_allclose(score("el2n", ctx, window=1.0), [9.0, 10.0])
    np.testing.assert_allclose(score("el2n", ctx, window=0.01), [0.0, 1.0])  # at least one epoch
    for bad in (0.0, 1.5):
        with pytest.raises(HarnessError, match="window"):
            score("el2n", ctx, window=bad)


def test_variability_is_population_std_of_p_label(score_ctx) -> None:
    p = np.array([[0.2, 0.5], [0.4, 0.5], [0.6, 0.5], [0.8, 0.5]])
    ctx = score_ctx({"train_prob": {"p_label": p, "el2n": np.zeros_like(p)}})
    np.testing.assert_allclose(score("variability", ctx), [np.sqrt(0.05), 0.0], atol=1e-12)


def test_proxy_params_and_labels() -> None:
    assert make_proxy("in_confidence", variant="max").label == "in_confidence(variant=max)"
    assert make_proxy("in_confidence", variant="given").label == "in_confidence"
    assert make_proxy("el2n", window=0.2).label == "el2n(window=0.2)"
    with pytest.raises(HarnessError, match="no parameter"):
        make_proxy("csl", window=0.1)
    with pytest.raises(HarnessError, match="valid proxies"):
        make_proxy("nope")
    assert [p.name for p in resolve_proxies(",".join(ISSUE2))] == ISSUE2


def test_declared_recorders(base_spec) -> None:
    """Which recorder each proxy reads decides what it is charged; pin them down."""
    expected = {
        "csl": {"train_loss"},
        "csl_eval": {"eval_pass[epochs=all]"},
        "final_loss": {"eval_pass[epochs=last]"},
        "in_confidence": {"eval_pass[epochs=last]"},
        "forgetting": {"train_correct"},
        "threshold_lt": {"train_correct"},
        "aum": {"train_margin"},
        "el2n": {"train_prob"},
        "variability": {"train_prob"},
    }
    for name, keys in expected.items():
        (need,) = make_proxy(name).needs(base_spec)
        assert need.spec == base_spec
        assert {r.key for r in need.recorders} == keys, name


def test_scores_through_a_real_stored_run(tmp_path, base_spec, score_ctx) -> None:
    """The same records written to and read from a RunStore score identically."""
    loss = np.array([[1.0, 2.0, 0.5], [0.5, 1.0, 0.5]], dtype=np.float32)
    correct = np.array([[1, 0, 0], [0, 0, 1]], dtype=np.float32)
    arrays = {"train_loss": {"loss": loss}, "train_correct": {"correct": correct}}
    out = RunOutput(arrays=arrays, train_seconds=1.0, train_flops=10, recorder_seconds={k: 0.0 for k in arrays},
                    recorder_flops={k: 0 for k in arrays}, train_acc=1.0, test_acc=1.0)
    stored = RunStore(tmp_path / "store").put(base_spec, out.arrays, make_manifest(base_spec, out, "single", "cpu"))
    ctx = ScoreContext(base=base_spec, labels=np.zeros(3, dtype=np.int64), num_classes=10, runs={base_spec: stored})
    np.testing.assert_allclose(score("csl", ctx), [1.5, 3.0, 1.0])
    np.testing.assert_array_equal(score("forgetting", ctx), [1, 2, 0])
    np.testing.assert_allclose(score("threshold_lt", ctx), [0.0, 1.0, 0.5])


# --- recorders on one hand-made batch --------------------------------------------------------


class _Data:
    """Just enough of PreparedData for the training-pass recorders (they only need n)."""

    def __init__(self, n: int, num_classes: int) -> None:
        self.n, self.num_classes = n, num_classes


def _batch_recorder(name: str, n: int = 6, epochs: int = 3):
    ctx = RunContext(_Data(n, 4), epochs, torch.arange(n), 4, torch.device("cpu"))  # type: ignore[arg-type]
    return build_recorder(RecorderRequest.of(name), ctx)


LOGITS = torch.tensor([[2.0, 5.0, 1.0, 0.0], [3.0, 0.0, -1.0, 3.0], [0.5, 0.25, 4.0, -2.0]])
LABELS = torch.tensor([0, 3, 2])
IDX = torch.tensor([4, 1, 5])


def _np_softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _scattered(values, epoch: int = 1, n: int = 6, epochs: int = 3) -> np.ndarray:
    """The (epochs, n) buffer expected after writing `values` at IDX in `epoch`; NaN elsewhere."""
    out = np.full((epochs, n), np.nan)
    out[epoch, IDX.numpy()] = values
    return out


def test_train_margin_on_a_batch() -> None:
    rec = _batch_recorder("train_margin")
    rec.on_batch(1, IDX, LOGITS, torch.zeros(3), LABELS)
    # given logit minus the largest other logit; ties (sample 1: 3 vs 3) give 0
    np.testing.assert_allclose(rec.arrays()["margin"], _scattered([2 - 5, 3 - 3, 4 - 0.5]), equal_nan=True)


def test_train_prob_on_a_batch() -> None:
    rec = _batch_recorder("train_prob")
    rec.on_batch(1, IDX, LOGITS, torch.zeros(3), LABELS)
    probs = _np_softmax(LOGITS.double().numpy())
    onehot = np.eye(4)[LABELS.numpy()]
    got = rec.arrays()
    np.testing.assert_allclose(got["p_label"], _scattered(probs[np.arange(3), LABELS.numpy()]),
                               rtol=1e-6, equal_nan=True)
    np.testing.assert_allclose(got["el2n"], _scattered(np.linalg.norm(probs - onehot, axis=1)),
                               rtol=1e-6, equal_nan=True)


def test_train_loss_and_correct_on_a_batch() -> None:
    loss = nn.functional.cross_entropy(LOGITS, LABELS, reduction="none")
    rec = _batch_recorder("train_loss")
    rec.on_batch(1, IDX, LOGITS, loss, LABELS)
    np.testing.assert_allclose(rec.arrays()["loss"], _scattered(loss.numpy()), equal_nan=True)
    rec = _batch_recorder("train_correct")
    rec.on_batch(1, IDX, LOGITS, loss, LABELS)
    # sample 1's label ties another class: a tie is not its label, so it counts as wrong
    np.testing.assert_array_equal(rec.arrays()["correct"], _scattered([0.0, 0.0, 1.0]))


def test_recorder_checkpoint_roundtrip() -> None:
    rec = _batch_recorder("train_margin")
    rec.on_batch(0, IDX, LOGITS, torch.zeros(3), LABELS)
    saved = rec.arrays()
    fresh = _batch_recorder("train_margin")
    fresh.load_arrays(saved)
    np.testing.assert_array_equal(fresh.arrays()["margin"], saved["margin"])


@pytest.mark.parametrize("epochs", ["all", "last"])
def test_eval_pass_matches_cross_entropy(digits_noisy, epochs: str) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    n_epochs = 3
    ctx = RunContext(digits_noisy, n_epochs, torch.arange(digits_noisy.n), 100, torch.device("cpu"))
    rec = build_recorder(RecorderRequest.of("eval_pass", epochs=epochs), ctx)
    for epoch in range(n_epochs):
        if rec.active(epoch, 1):  # as the training loop calls it
            rec.on_epoch_end(epoch, 1, model)
    with torch.no_grad():
        logits = model(digits_noisy.inputs(torch.arange(digits_noisy.n)))
    y = digits_noisy.y
    loss = nn.functional.cross_entropy(logits, y, reduction="none").numpy()
    probs = torch.softmax(logits, 1).numpy()
    got = rec.arrays()
    rows = n_epochs if epochs == "all" else 1
    assert got["loss"].shape == (rows, digits_noisy.n)
    for row in range(rows):  # the model never changes, so every recorded row is the same pass
        np.testing.assert_allclose(got["loss"][row], loss, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(got["correct"][row], (logits.argmax(1) == y).float().numpy())
        np.testing.assert_allclose(got["p_label"][row], probs[np.arange(len(y)), y.numpy()], rtol=1e-5)
        np.testing.assert_allclose(got["p_max"][row], probs.max(1), rtol=1e-5)
    np.testing.assert_allclose(got["probs_last"], probs, rtol=1e-5, atol=1e-7)


def test_eval_pass_is_active_at_the_right_checkpoints(digits_noisy) -> None:
    ctx = RunContext(digits_noisy, 3, torch.arange(digits_noisy.n), 100, torch.device("cpu"))
    last = build_recorder(RecorderRequest.of("eval_pass", epochs="last"), ctx)
    every = build_recorder(RecorderRequest.of("eval_pass", epochs="all"), ctx)
    assert [last.active(e, 1) for e in range(3)] == [False, False, True]
    assert [every.active(e, 1) for e in range(3)] == [True, True, True]
    assert not last.active(2, 2) and not every.active(0, 2)  # never in a second (SSFT) phase


# --- parameters are validated when the proxy is built, before anything trains ----------------

@pytest.mark.parametrize(
    "name, params, needle",
    [
        ("curvature", {"h": 1e999}, "curvature.h"),  # parsed from 'curvature(h=1e999)' as inf
        ("curvature", {"h": float("nan")}, "curvature.h"),
        ("curvature", {"h": 0.0}, "curvature.h"),
        ("curvature", {"h": -1e-3}, "curvature.h"),
        ("curvature", {"h": 10**400}, "curvature.h"),  # an int too large for a float
        ("curvature", {"h": True}, "curvature.h"),
        ("curvature", {"n": 0}, "curvature.n"),
        ("curvature", {"n": 2.0}, "curvature.n"),
        ("curvature", {"n": True}, "curvature.n"),
        ("curvature", {"every": 0}, "curvature.every"),
        ("curvature", {"every": "2"}, "curvature.every"),
        ("el2n", {"window": 0.0}, "el2n.window"),
        ("el2n", {"window": 1.5}, "el2n.window"),
        ("el2n", {"window": float("inf")}, "el2n.window"),
        ("el2n", {"window": "0.1"}, "el2n.window"),
        ("in_confidence", {"variant": "median"}, "in_confidence.variant"),
        ("in_confidence", {"variant": 1}, "in_confidence.variant"),
        ("loss_sensitivity", {"norm": 3}, "loss_sensitivity.norm"),
        ("loss_sensitivity", {"norm": True}, "loss_sensitivity.norm"),  # True == 1, but not a norm
        ("loss_sensitivity", {"norm": 2.0}, "loss_sensitivity.norm"),
        ("confident_learning", {"folds": 1}, "confident_learning.folds"),
        ("confident_learning", {"folds": True}, "confident_learning.folds"),
        ("confident_learning", {"folds": 2.5}, "confident_learning.folds"),
    ],
)
def test_bad_parameters_fail_at_construction(name: str, params: dict, needle: str) -> None:
    with pytest.raises(HarnessError, match=needle.replace(".", r"\.")):
        make_proxy(name, **params)


def test_good_boundary_parameters_construct() -> None:
    assert make_proxy("el2n", window=1.0).params["window"] == 1.0
    assert make_proxy("curvature", n=1, every=1, h=1.0).label == "curvature(h=1.0,n=1)"
    assert make_proxy("loss_sensitivity", norm=2).params["norm"] == 2
    assert make_proxy("confident_learning", folds=2).params["folds"] == 2


def test_every_proxy_constructs_with_its_defaults() -> None:
    """The defaults themselves pass every proxy's validate()."""
    from proxies import available_proxies

    for name in available_proxies():
        assert make_proxy(name).label == name


def test_validate_hook_runs_in_the_constructor() -> None:
    """A plugin proxy gets its checks run by Proxy.__init__ without overriding it."""
    from proxies import Proxy

    class Windowed(Proxy):
        name = "windowed_test"
        description = "test"
        citation = "test"
        defaults = {"k": 3}

        def validate(self) -> None:
            self.check_int("k", 2)

    assert Windowed(k=2).params == {"k": 2}
    with pytest.raises(HarnessError, match=r"windowed_test\.k must be an integer >= 2 \(got 1\)"):
        Windowed(k=1)
