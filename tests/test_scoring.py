"""harness.evaluation.score: what the experiment does with each proxy's scores before any task."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from harness.evaluation import score
from proxies.base import Proxy


class _Constant(Proxy):
    name = "constant"
    description = "the same score for every sample"
    citation = "-"

    def score(self, ctx) -> np.ndarray:
        return np.full(len(ctx.labels), 0.25)


class _Ranked(_Constant):
    name = "ranked"

    def score(self, ctx) -> np.ndarray:
        return np.arange(len(ctx.labels), dtype=float)


def test_a_proxy_that_ranks_nothing_is_said_not_hidden(base_spec, digits_noisy) -> None:
    # a constant score is a result (AUROC 0.5), not a failure, but the user is told why
    with pytest.warns(UserWarning, match=r"proxy constant gives every sample the same score \(0.25\)"):
        scores, problems = score([_Constant()], base_spec, digits_noisy, {base_spec: None})
    assert problems == [] and (scores["constant"] == 0.25).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a proxy that ranks the samples says nothing
        scores, problems = score([_Ranked()], base_spec, digits_noisy, {base_spec: None})
    assert problems == [] and len(scores["ranked"]) == digits_noisy.n


class _Short(_Constant):
    name = "short"

    def score(self, ctx) -> np.ndarray:
        return np.arange(len(ctx.labels) - 1, dtype=float)


class _Raises(_Constant):
    name = "raises"

    def score(self, ctx) -> np.ndarray:
        raise ZeroDivisionError("a bug in the proxy")


class _Complex(_Constant):
    name = "complex"

    def score(self, ctx) -> np.ndarray:
        return np.arange(len(ctx.labels)) * (1 + 1j)


class _MinusInf(_Constant):
    name = "minus_inf"

    def score(self, ctx) -> np.ndarray:
        return np.full(len(ctx.labels), -np.inf)


def test_a_broken_proxy_is_left_out_and_the_others_kept(base_spec, digits_noisy, capsys) -> None:
    """A wrong shape, an exception or complex scores ended the whole experiment after training
    (a traceback, no leaderboard for any proxy); now that proxy is one failure line."""
    proxies = [_Short(), _Raises(), _Complex(), _Ranked()]
    scores, problems = score(proxies, base_spec, digits_noisy, {base_spec: None})
    assert list(scores) == ["ranked"]
    n = digits_noisy.n
    assert problems == [
        f"proxy short failed for {base_spec.label()}: ValueError: it returned shape ({n - 1},); a proxy returns one "
        f"score per sample, shape ({n},); left out of the leaderboard",
        f"proxy raises failed for {base_spec.label()}: ZeroDivisionError: a bug in the proxy; left out of the "
        "leaderboard",
        f"proxy complex failed for {base_spec.label()}: TypeError: it returned complex128 scores; a proxy returns "
        "real numbers; left out of the leaderboard",
    ]
    err = capsys.readouterr().err
    assert "ZeroDivisionError: a bug in the proxy" in err  # the traceback, to debug it
    # the score checks' failures are said whole in their lines: one traceback (raises'), none for short/complex
    assert err.count("Traceback (most recent call last)") == 1 and "it returned shape" not in err


def test_infinite_constant_scores_rank_nothing_too(base_spec, digits_noisy) -> None:
    with pytest.warns(UserWarning, match=r"proxy minus_inf gives every sample the same score \(-inf\)"):
        score([_MinusInf()], base_spec, digits_noisy, {base_spec: None})


class _HarnessCheck(_Constant):
    name = "harness_check"

    def score(self, ctx) -> np.ndarray:
        from harness.errors import HarnessError

        raise HarnessError("samples were in neither run's first split")


def test_a_harness_check_failing_after_training_costs_that_proxy_only(base_spec, digits_noisy, capsys) -> None:
    """A HarnessError inside a proxy's score (the harness's own consistency checks) was re-raised: the
    CLI then exited 2, "bad input, nothing trained", after training, and no proxy was written."""
    scores, problems = score([_HarnessCheck(), _Ranked()], base_spec, digits_noisy, {base_spec: None})
    assert list(scores) == ["ranked"]
    assert problems == [f"proxy harness_check failed for {base_spec.label()}: HarnessError: samples were in "
                        "neither run's first split; left out of the leaderboard"]
    assert "Traceback" not in capsys.readouterr().err  # the message is the whole story
