"""A recorder that raises is named in its run's failure line (plugin29: a plugin recorder's bug failed
the run as `job digits noise=0.1 mlp seed0: boom`, naming neither the recorder nor what to drop), and
the notice of stored runs trained again says a recorder's code edit is a reason (its key carries a
digest of its code)."""

from __future__ import annotations

import pickle

import pytest
import torch
from torch import nn

from harness.recorders import RecorderBank, RecorderRequest, RunContext
from harness.recorders.bank import RECORDER_NOTE, name_recorder
from harness.runner import failure_line
from harness.upgrade_notice import upgrade_notice

CPU = torch.device("cpu")


class _Job:
    def label(self) -> str:
        return "digits noise=0.1 mlp seed0"


def _bank() -> RecorderBank:
    ctx = RunContext(None, 2, None, 2, CPU, samples=5, classes=3)  # type: ignore[arg-type]
    return RecorderBank(ctx, [RecorderRequest.of("train_loss"), RecorderRequest.of("train_correct")])


def _batch():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 3.0, 0.0]])
    labels = torch.tensor([0, 2])
    return torch.tensor([4, 1]), logits, nn.functional.cross_entropy(logits, labels, reduction="none"), labels


@pytest.mark.parametrize("hook", ["on_batch", "on_epoch_end"])
def test_a_recorder_that_raises_is_named_with_the_way_out(hook) -> None:
    bank = _bank()

    def boom(*args, **kwargs):
        raise ValueError("boom")

    setattr(bank["train_correct"], hook, boom)
    boom.__name__ = hook
    with pytest.raises(ValueError) as caught:  # its type kept
        bank.on_batch(0, *_batch())
        bank.on_epoch_end(0, 1, None)
    assert str(caught.value) == "boom"  # and its message, which other code reads
    line = failure_line(_Job(), caught.value)  # type: ignore[arg-type]
    assert line == (f"job digits noise=0.1 mlp seed0: boom (raised in recorder train_correct ({hook}): a proxy that "
                    "needs it fails on every run that records it; drop that proxy from --proxies to score the others)")


def test_the_note_survives_the_workers_pickle_and_is_added_once() -> None:
    error = name_recorder(RuntimeError("CUDA out of memory"), "curvature[n=2]", lambda: None)
    error = name_recorder(error, "other", lambda: None)  # a second layer names nothing new
    back = pickle.loads(pickle.dumps(error))
    assert isinstance(back, RuntimeError) and str(back) == "CUDA out of memory"  # what other code reads
    assert [n for n in back.__notes__ if n.startswith(RECORDER_NOTE)] == [f"{RECORDER_NOTE}curvature[n=2] (<lambda>)"]


def test_a_plugin_recorder_is_named_without_its_code_digest() -> None:
    error = name_recorder(ValueError("boom"), "entropy_batch@code-1a2b3c4d5e6f", lambda: None)
    assert error.__notes__ == [f"{RECORDER_NOTE}entropy_batch (<lambda>)"]


def test_a_failure_without_a_recorder_reads_as_before() -> None:
    assert failure_line(_Job(), ValueError("boom")) == "job digits noise=0.1 mlp seed0: boom"  # type: ignore[arg-type]


@pytest.mark.parametrize(("key", "edited"), [("entropy_batch@code-1a2b3c4d5e6f", True), ("train_loss", False)])
def test_the_notice_names_an_edit_only_for_a_recorder_keyed_by_its_code(digits_spec_label, key, edited) -> None:
    spec, label = digits_spec_label
    line = upgrade_notice({spec: {key}}, {spec: {}}, [])
    assert line is not None and f"({label}) lack recorder(s) {key}: stored before the recorder existed" in line
    assert ("or before its code was edited (its key carries a digest of its code)" in line) is edited


@pytest.fixture
def digits_spec_label(base_spec):
    return base_spec, base_spec.label()
