"""The own-loop tracker's whole-passes hint, refusals and checkpoints together (atttr2_30): a state saved at any
point of an epoch -- after a refused call, after discard_epoch(), after copy(), after the not-whole-passes mark of
a mid-epoch resume -- resumes to the scores (bitwise) and the warnings (the end_epoch() hint included) of the
uninterrupted tracker, and the state holds nothing per batch or per sample that grows with the epochs."""

from __future__ import annotations

import io
import warnings
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from harness.errors import HarnessError
from harness.tracker import SampleTracker

N, C, B = 30, 4, 8
_GEN = torch.Generator().manual_seed(0)
LOGITS = torch.randn(4, N, C, generator=_GEN)
LABELS = torch.randint(0, C, (N,), generator=_GEN)
HINT = "whole passes over them"


def batches(epoch: int, kind: str) -> list[np.ndarray]:
    """An epoch's batches: "droplast", two passes of a shuffling DataLoader(batch_size=8, drop_last=True) (the
    loop missed one end_epoch()); "replacement", a sampler with replacement (no hint)."""
    rng = np.random.RandomState(epoch)
    if kind == "droplast":
        out: list[np.ndarray] = []
        for _ in range(2):
            perm = rng.permutation(N)
            out += [perm[i:i + B] for i in range(0, N - N % B, B)]
        return out
    return [rng.randint(0, N, 10) for _ in range(3)]


def feed(t: SampleTracker, epoch: int, idx: np.ndarray, device_indices: bool) -> None:
    t.update(torch.as_tensor(idx) if device_indices else idx, logits=LOGITS[epoch][idx], labels=LABELS[idx])


def reloaded(t: SampleTracker) -> SampleTracker:
    buf = io.BytesIO()
    torch.save(t.state_dict(), buf)
    buf.seek(0)
    fresh = SampleTracker(N)
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    return fresh


def interrupt(t: SampleTracker, how: str, epoch: int, done: list[np.ndarray], device_indices: bool) -> SampleTracker:
    """What happens before batch len(done) of `epoch`, after which the tracker goes on as if uninterrupted."""
    if how == "refused":  # a label outside the classes, an index outside [0, n): both refused, then saved
        with pytest.raises(HarnessError):
            t.update(np.arange(3), logits=LOGITS[epoch][:3], labels=torch.tensor([0, C + 5, 1]))
        with pytest.raises(HarnessError):
            t.update(np.array([N + 2]), logits=LOGITS[epoch][:1], labels=LABELS[:1])
        return reloaded(t)
    if how == "discard":  # the epoch's batches so far twice, dropped, run again, saved
        for idx in done:
            feed(t, epoch, idx, device_indices)
        t.discard_epoch()
        for idx in done:
            feed(t, epoch, idx, device_indices)
        return reloaded(t)
    return reloaded(t.copy())  # "copy": the copy goes on, saved once more


def run(kind: str, device_indices: bool, cut: tuple[int, int, str] | None = None) -> tuple[pd.DataFrame, list[str]]:
    t = SampleTracker(N)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for epoch in range(2):
            todo = batches(epoch, kind)
            for i, idx in enumerate(todo):
                if cut is not None and cut[:2] == (epoch, i):
                    t = interrupt(t, cut[2], epoch, todo[:i] if cut[2] == "discard" else [], device_indices)
                feed(t, epoch, idx, device_indices)
            t.end_epoch()
        scores = t.scores()
    return scores, [str(w.message) for w in caught]


@pytest.mark.parametrize("device_indices", [False, True])
@pytest.mark.parametrize("kind", ["droplast", "replacement"])
def test_interrupted_anywhere_in_the_first_epoch_scores_and_warns_as_uninterrupted(kind: str,
                                                                                    device_indices: bool) -> None:
    ref_scores, ref_warnings = run(kind, device_indices)
    hinted = [w for w in ref_warnings if "presented more than once" in w]
    assert len(hinted) == 1 and (HINT in hinted[0]) == (kind == "droplast")  # the hint is there to lose
    for i in range(len(batches(0, kind))):
        for how in ("refused", "discard", "copy"):
            scores, said = run(kind, device_indices, (0, i, how))
            pd.testing.assert_frame_equal(scores, ref_scores, check_exact=True)
            assert said == ref_warnings, (i, how)


def _state_numbers(value: Any) -> int:
    """Tensor elements plus plain values of a state: what it costs, up to constants."""
    if isinstance(value, torch.Tensor):
        return value.numel()
    if isinstance(value, dict):
        return sum(_state_numbers(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return len(value) + sum(_state_numbers(v) for v in value)
    return 1


def _state_after(epochs: int, running_sums: bool) -> dict[str, Any]:
    t = SampleTracker(N, running_sums=running_sums)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for epoch in range(epochs):
            for idx in batches(epoch % 4, "droplast"):
                if running_sums:
                    t.update(idx, losses=torch.ones(len(idx)))
                else:
                    feed(t, epoch % 4, idx, False)
            t.end_epoch()
        t.update(np.arange(8), losses=torch.ones(8)) if running_sums else feed(t, 0, np.arange(8), False)
    return t.state_dict()


def test_state_grows_by_the_documented_rows_alone() -> None:
    # running sums: nothing grows with the epochs; the batch counter is three numbers at any epoch
    small, large = _state_after(5, True), _state_after(50, True)
    assert _state_numbers(small) == _state_numbers(large)
    assert small["signals"]["batches"] == large["signals"]["batches"] == [8, 8, 8]
    # the default proxies: five (N,) rows an epoch (loss, correct, margin, p_label, el2n), nothing per batch
    grown = _state_numbers(_state_after(50, False)) - _state_numbers(_state_after(5, False))
    assert grown == 45 * 5 * (N + 1 + 1)  # a row: N + 1 values (the scratch column n), one list entry


def test_not_whole_passes_mark_survives_save_and_copy_and_ends_with_the_epoch() -> None:
    t = SampleTracker(N)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for idx in batches(0, "droplast")[:2]:
            feed(t, 0, idx, False)
        assert t._signals is not None
        t._signals.presentations.not_whole_passes()  # what CSLCallback does at a resume re-drawing batches
        t = reloaded(t).copy()
        assert t._saved is not None and t._saved["signals"]["first_repeat"] == 0
        for idx in batches(0, "droplast")[2:]:
            feed(t, 0, idx, False)
        t.discard_epoch()  # the mark goes with the epoch: the rerun is judged anew
        for idx in batches(0, "droplast"):
            feed(t, 0, idx, False)
        t = reloaded(t)
        t.end_epoch()
    said = [str(w.message) for w in caught if "presented more than once" in str(w.message)]
    assert len(said) == 1 and HINT in said[0]
