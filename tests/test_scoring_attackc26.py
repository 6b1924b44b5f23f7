"""49f2fb3 dropped the traceback of every failure after `proxy.score` returned, to say a failed shape or
dtype check in one line; a bug in the proxy's own code that runs only when its returned scores are read
(a lazy object's `__array__`) lost its traceback too, leaving a user nothing to find it with."""

from __future__ import annotations

import numpy as np

from harness.evaluation import score
from proxies.base import Proxy


class _LazyScores:
    """What a plugin may return: scores computed when numpy reads them, with a bug in that code."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return np.arange(self.n) / self.missing_total  # type: ignore[attr-defined]  # the bug


class _Lazy(Proxy):
    name = "lazy"
    description = "scores read lazily"
    citation = "-"

    def score(self, ctx) -> object:
        return _LazyScores(len(ctx.labels))


class _Short(_Lazy):
    name = "short"

    def score(self, ctx) -> object:
        return np.arange(len(ctx.labels) - 1, dtype=float)


def test_a_bug_in_code_run_when_the_scores_are_read_keeps_its_traceback(base_spec, digits_noisy, capsys) -> None:
    scores, problems = score([_Lazy(), _Short()], base_spec, digits_noisy, {base_spec: None})
    assert scores == {}
    assert problems[0] == (f"proxy lazy failed for {base_spec.label()}: AttributeError: '_LazyScores' object has no "
                           "attribute 'missing_total'; left out of the leaderboard")
    assert problems[1].startswith(f"proxy short failed for {base_spec.label()}: ValueError: it returned shape")
    err = capsys.readouterr().err
    assert err.count("Traceback (most recent call last)") == 1 and "in __array__" in err  # the lazy one's only
    assert "it returned shape" not in err
