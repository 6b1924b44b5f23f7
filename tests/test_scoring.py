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
