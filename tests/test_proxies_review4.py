"""Proxies and recorders, fourth review: each test pins a value an earlier version got wrong.

- final_loss and in_confidence read the float32 eval loss and 1 - p(label), which round to exactly 0
  once the label's margin passes ~16.6 nats (p rounds to 1): 214 of the 1,437 samples of the default
  digits run's clean setting tied at 0, though the recorded phi tells them apart exactly (values
  below 1e-3 now come from phi; larger ones stay the recorded float32 values, bit for bit).
- a proxy (a plugin's) asking for a recorder name or parameter nobody registered passed planning and
  failed when its run started, with a traceback, after other runs had trained, taking down the base
  run other proxies share (`run_experiment` promises bad input fails before anything trains).
- a real-valued parameter given as an integer (`curvature(h=1)`, `el2n(window=1)`) labelled itself
  apart from the same value as a float: one setting scored twice under two column names, past the
  "selected twice" check.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import harness.jobs
from harness import run_experiment
from harness.errors import HarnessError
from harness.recorders import EVAL_LAST, RecorderRequest, RunContext, build_recorder
from harness.recorders.eval_pass import eval_signals
from proxies import PROXIES, Need, Proxy, make_proxy, resolve_proxies


def _eval_last(score_ctx, logits: list[list[float]], labels: list[int]):
    """A ScoreContext whose base run's last eval pass saw `logits` (float32) for `labels`."""
    n, classes = len(labels), len(logits[0])
    ctx = RunContext(None, None, None, 0, torch.device("cpu"), samples=n, classes=classes)
    rec = build_recorder(EVAL_LAST, ctx)
    rec.on_eval_start(0)
    rec.on_eval_batch(0, torch.arange(n), eval_signals(torch.tensor(logits), torch.tensor(labels)))
    return score_ctx({EVAL_LAST.key: rec.arrays()}, num_classes=classes)


# margins over the best other class of 20, 30 and 40 nats (p(label) rounds to 1 in float32), then a
# sample classified as class 1 with 3 nats over its label
LOGITS = [[20.0, 0.0, 0.0], [30.0, 0.0, 0.0], [40.0, 0.0, 0.0], [0.0, 3.0, -1.0]]
LABELS = [0, 0, 0, 0]


def _exact_tail(margins: np.ndarray) -> np.ndarray:
    """1 - p(label) = sum of the other classes' probabilities, in float64: 2 e^-m / (1 + 2 e^-m)."""
    other = 2.0 * np.exp(-margins)
    return other / (1.0 + other)


def test_final_loss_and_in_confidence_do_not_round_confident_samples_to_zero(score_ctx) -> None:
    ctx = _eval_last(score_ctx, LOGITS, LABELS)
    tail = _exact_tail(np.array([20.0, 30.0, 40.0]))
    in_conf = make_proxy("in_confidence").score(ctx)
    final = make_proxy("final_loss").score(ctx)
    np.testing.assert_allclose(in_conf[:3], tail, rtol=1e-5)
    np.testing.assert_allclose(final[:3], np.log1p(tail / (1 - tail)), rtol=1e-5)  # -log p = log(1 + others/p)
    # the unsaturated sample keeps its value: p(label) = e^0 / (e^0 + e^3 + e^-1)
    p = 1.0 / (1.0 + np.exp(3.0) + np.exp(-1.0))
    np.testing.assert_allclose([in_conf[3], final[3]], [1 - p, -np.log(p)], rtol=1e-6)
    # the released code's 1 - max softmax: the label is the prediction for the first three
    in_max = make_proxy("in_confidence", variant="max").score(ctx)
    p_max = np.exp(3.0) / (1.0 + np.exp(3.0) + np.exp(-1.0))
    np.testing.assert_allclose(in_max, [*tail, 1 - p_max], rtol=1e-5)


class _Misspelled(Proxy):
    """A plugin proxy whose recorder name has a typo."""

    name = "misspelled_recorder"
    description = "reads a recorder nobody registered"
    citation = "test"
    recorders = (RecorderRequest.of("train_los"),)

    def score(self, ctx):
        return np.zeros(len(ctx.labels))


def test_unknown_recorders_fail_while_planning(base_spec) -> None:
    with pytest.raises(HarnessError, match=r"unknown recorder 'train_los' .*train_loss"):
        _Misspelled().needs(base_spec)
    with pytest.raises(HarnessError, match=r"recorder curvature\[draws=3\] cannot be built: .*draws"):
        Need(base_spec, frozenset({RecorderRequest.of("curvature", draws=3)}))
    Need(base_spec, frozenset({RecorderRequest.of("curvature", n=2, h=1e-3, every=1), EVAL_LAST}))  # fine


def test_a_misspelled_recorder_stops_the_experiment_before_anything_trains(tmp_path, monkeypatch) -> None:
    started = []
    monkeypatch.setattr(harness.jobs, "train_run", lambda *a, **k: started.append(a) or pytest.fail("trained"))
    PROXIES.register(_Misspelled.name, _Misspelled)
    try:
        with pytest.raises(HarnessError, match="^proxy misspelled_recorder: unknown recorder 'train_los'"):
            run_experiment(proxies="csl,misspelled_recorder", tasks="mislabeled", seeds=1, epochs=1, subset=100,
                           noise_rates=(0.1,), executor="inprocess", progress=False, bootstrap=0,
                           store=tmp_path / "store", out=None)
    finally:
        PROXIES._items.pop(_Misspelled.name)
    assert started == []


@pytest.mark.parametrize(("name", "key"), [("curvature", "h"), ("el2n", "window")])
def test_a_real_parameter_given_as_an_integer_is_the_same_setting(name: str, key: str) -> None:
    as_int, as_float = make_proxy(name, **{key: 1}), make_proxy(name, **{key: 1.0})
    assert as_int.label == as_float.label == f"{name}({key}=1.0)"
    assert as_int.params[key] == 1.0 and isinstance(as_int.params[key], float)
    with pytest.raises(HarnessError, match=rf"selected twice: {name}\({key}=1.0\)"):
        resolve_proxies(f"{name}({key}=1),{name}({key}=1.0)")
