"""Session 29 (tracker2): states saved before `had_logits_closed` / `given_closed` were kept, resumed by today's
tracker. A state saved mid-epoch after a batch with losses= alone could not tell whether the closed epochs had
logits in every batch: discarding the open epoch dropped aum, el2n, forgetting, ... from the default scores with no
word, where a tracker never saved kept them. Such a discard now warns, and a state saved again stays 'unknown'."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from test_gather27 import FakeRanks, ranks  # noqa: F401  (the fixture)

from harness import SampleTracker
from harness.errors import HarnessError

N, C = 12, 3


def _batches(seed: int) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    y = torch.randint(0, C, (N,), generator=torch.Generator().manual_seed(99))  # one label per sample
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(N, generator=g)
    return [(idx, torch.randn(len(idx), C, generator=g), y[idx]) for idx in perm.chunk(3)]


def _epoch(t: SampleTracker, seed: int, losses_only: int | None = None, stop: int | None = None) -> None:
    for b, (idx, logits, y) in enumerate(_batches(seed)[:stop]):
        if b == losses_only:
            t.update(idx, losses=torch.nn.functional.cross_entropy(logits, y, reduction="none"), labels=y)
        else:
            t.update(idx, logits=logits, labels=y)
    if stop is None:
        t.end_epoch()


def _old(state: dict) -> dict:
    """The state as a memprox before 67200b3 and f92dc10 saved it: without the two keys."""
    state = {k: v for k, v in state.items() if k != "had_logits_closed"}
    state["signals"] = {k: v for k, v in state["signals"].items() if k != "given_closed"}
    return state


def _mid_epoch_after_a_losses_only_batch() -> SampleTracker:
    t = SampleTracker(N)
    _epoch(t, 0)
    _epoch(t, 1)
    _epoch(t, 2, losses_only=0, stop=2)  # the open epoch: a batch without logits, then one with
    return t


def test_an_old_mid_epoch_state_discarded_after_a_losses_only_batch_says_the_logit_proxies_are_left_out() -> None:
    saved = _mid_epoch_after_a_losses_only_batch().state_dict()
    resumed = SampleTracker(N)
    resumed.load_state_dict(_old(saved))
    # saved again before the discard, the state still does not know: a resume of it says so at its discard
    again = resumed.state_dict()
    assert "had_logits_closed" not in again
    twice = SampleTracker(N)
    twice.load_state_dict(again)
    for t in (resumed, twice):
        with pytest.warns(RuntimeWarning, match=r"did not keep whether the closed epochs had logits.*leaves aum"):
            t.discard_epoch()
        _epoch(t, 3)
        assert list(t.copy().scores().columns) == ["index", "label", "csl"]


def test_a_new_state_or_an_old_one_without_the_doubt_discards_silently_and_scores_as_never_saved() -> None:
    """Today's state keeps the flag: no warning, and the scores are those of a tracker never saved (bitwise).
    An old state whose open epoch had logits in every batch is no doubt either."""
    never = _mid_epoch_after_a_losses_only_batch()
    resumed = SampleTracker(N)
    resumed.load_state_dict(never.state_dict())
    plain = SampleTracker(N)
    _epoch(plain, 0)
    _epoch(plain, 1, stop=2)
    old = SampleTracker(N)
    old.load_state_dict(_old(plain.state_dict()))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for t in (never, resumed, plain, old):
            t.discard_epoch()
    for t in (never, resumed):
        _epoch(t, 3)
    for t in (plain, old):
        _epoch(t, 1)
    for a, b in ((never, resumed), (plain, old)):
        want, got = a.scores(), b.scores()
        assert list(want.columns) == list(got.columns) and "aum" in want.columns
        for col in want.columns:
            np.testing.assert_array_equal(got[col].to_numpy(), want[col].to_numpy())


def test_an_old_mid_epoch_state_whose_open_epoch_relabeled_presented_samples_is_refused_at_load() -> None:
    """A memprox before c94f7ce kept a conflicting update() label in place of the closed epochs' one: such a state
    saved mid-epoch could not close its epoch, and after discard_epoch() the rerun with the right labels was refused
    ('other than an earlier update() gave them') while one with the wrong labels mixed both silently. The load now
    says the labels are lost and what to do; today's state of the same loop resumes, discards and reruns."""
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2])
    logits = torch.randn(N, C, generator=torch.Generator().manual_seed(5))
    t = SampleTracker(N)
    t.update(torch.arange(N), logits=logits, labels=y)
    t.end_epoch()
    t.update(torch.arange(4), logits=logits[:4], labels=(y[:4] + 1) % C)  # a label transform gone wrong
    state = t.state_dict()
    old = _old(state)
    given = old["signals"]["given"].clone()
    given[:4] = (y[:4] + 1) % C  # what the old memprox kept
    old["signals"] = {**old["signals"], "given": given}
    with pytest.raises(HarnessError, match=r"4 sample\(s\) labels other than .*first: \[0, 1, 2, 3\].*Resume from a "
                                           r"checkpoint saved before this epoch"):
        SampleTracker(N).load_state_dict(old)
    resumed = SampleTracker(N)
    resumed.load_state_dict(state)
    resumed.discard_epoch()
    resumed.update(torch.arange(N), logits=logits, labels=y)
    resumed.end_epoch()
    assert resumed.scores()["label"].tolist() == y.tolist()


def test_a_gathered_update_refused_for_one_ranks_labels_is_refused_on_every_rank_and_leaves_them_equal(
        ranks: FakeRanks) -> None:  # noqa: F811  (the fixture)
    """docs/own-training-loop.md: a label outside the logits' classes on rank 1 alone refuses the gathered batch on
    both ranks, each leaves its record as it was, and after discard_epoch() on both and the rerun the ranks score
    alike (csl bitwise); a discard on one rank alone would make them differ with no error (the page says so)."""
    y = torch.randint(0, C, (N,), generator=torch.Generator().manual_seed(3))
    logits = torch.randn(N, C, generator=torch.Generator().manual_seed(4))

    def loop(rank: int) -> object:
        t = SampleTracker(N)
        for b in range(2):  # rank r holds rows [6b + 3r, 6b + 3r + 3)
            i = torch.arange(6 * b + 3 * rank, 6 * b + 3 * rank + 3)
            t.update(i, logits=logits[i], labels=y[i], gather=True)
        t.end_epoch()
        before = t.state_dict()
        i = torch.arange(3 * rank, 3 * rank + 3)
        with pytest.raises(HarnessError, match="outside"):
            t.update(i, logits=logits[i], labels=y[i] + (C if rank == 1 else 0), gather=True)
        after = t.state_dict()
        assert after["pending"] is before["pending"] is False
        t.discard_epoch()
        for b in range(2):
            i = torch.arange(6 * b + 3 * rank, 6 * b + 3 * rank + 3)
            t.update(i, logits=logits[i] * 2, labels=y[i], gather=True)
        t.end_epoch()
        return t.scores(["csl"])["csl"].to_numpy()

    got = ranks.run(loop)
    assert not any(isinstance(g, BaseException) for g in got), got
    want = (nn_ce(logits, y) + nn_ce(logits * 2, y)).numpy()[: 4 * 3]
    np.testing.assert_array_equal(got[0], got[1])
    np.testing.assert_allclose(got[0][:12], want, rtol=1e-6)


def nn_ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(logits, y, reduction="none").double()
