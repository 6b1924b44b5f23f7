"""Review 31: the pieces merged out of duplicated code keep what each copy did."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from harness.ensemble_checkpoint import ChunkProgress
from harness.recorders.base import RunContext, eval_batches, eval_mode
from harness.recorders.curvature import Curvature
from harness.recorders.input_grads import InputGrads, every_kth_and_last
from harness.training import _StepCounts, billed_seconds


def _old_train_run(seconds: float, warm_seconds: float, samples: int, warm_samples: int) -> float:
    """train_run's billing before the merge (d396712^), verbatim."""
    loop_seconds = seconds
    if samples > warm_samples:
        loop_seconds -= warm_seconds
        loop_seconds *= samples / (samples - warm_samples)
    return max(0.0, loop_seconds)


def _old_chunk(seconds: float, warm_seconds: float, samples: int, warm_samples: int) -> float:
    """ChunkProgress.charged_seconds before the merge, verbatim."""
    if samples <= warm_samples:
        return seconds
    rest = samples - warm_samples
    return max(0.0, (seconds - warm_seconds) * samples / rest)


def test_both_engines_bill_the_warm_up_by_one_rule() -> None:
    rng = np.random.default_rng(31)
    for _ in range(200):
        warm_samples = int(rng.integers(0, 200))
        samples = warm_samples + int(rng.integers(0, 5000))
        seconds, warm = float(rng.uniform(0, 50)), float(rng.uniform(0, 5))
        one = billed_seconds(seconds, warm, samples, warm_samples)
        assert one == _old_train_run(seconds, warm, samples, warm_samples)  # train_run's numbers, bit for bit
        assert one == pytest.approx(_old_chunk(seconds, warm, samples, warm_samples), rel=1e-15, abs=0)
        chunk = ChunkProgress(epoch=1, history=[[]], samples_seen=samples, seconds=seconds, warm_seconds=warm,
                              warm_samples=warm_samples)
        counts = _StepCounts(0.0, samples, warm, warm_samples)
        assert chunk.charged_seconds() == counts.billed_seconds(seconds) == one
    assert billed_seconds(2.0, 0.4, 1000, 200) == pytest.approx(1.6 * 1000 / 800)
    assert billed_seconds(3.0, 0.5, 100, 100) == 3.0  # nothing else to bill the warm-up by


def test_step_counts_are_checkpointed_under_the_old_keys_in_the_old_order() -> None:
    from dataclasses import asdict

    counts = _StepCounts(2.5, 640, 0.25, 64)
    assert list(asdict(counts).items()) == [("train_flops_per_sample", 2.5), ("samples_seen", 640),
                                            ("first_batch_seconds", 0.25), ("first_batch_samples", 64)]
    assert _StepCounts.restored({"train_flops_per_sample": 2.5, "samples_seen": 640}) == _StepCounts(2.5, 640, 0.0, 0)


@pytest.mark.parametrize("epochs", [7, None])
def test_every_kth_checkpoint_and_the_last(epochs: int | None) -> None:
    last = epochs is not None
    assert [every_kth_and_last(e, 3, epochs) for e in range(7)] == [False, False, True, False, False, True, last]
    assert all(every_kth_and_last(e, 1, epochs) for e in range(7))
    ctx = RunContext(None, 7, None, 8, torch.device("cpu"), samples=4, classes=2)
    for recorder in (InputGrads(ctx, every=3), Curvature(ctx, every=3)):
        assert [recorder.active(e, 1) for e in range(7)] == [False, False, True, False, False, True, True]
        assert not any(recorder.active(e, 2) for e in range(7))  # never in a second (SSFT) phase


class _Data:
    def inputs(self, idx: torch.Tensor) -> torch.Tensor:
        return idx.float()[:, None]


def test_eval_batches_restores_the_mode_even_when_left_early() -> None:
    model = nn.Sequential(nn.Linear(1, 2), nn.Dropout(0.5))
    model.train()
    batches = eval_batches(model, _Data(), torch.arange(10), 4)  # type: ignore[arg-type]
    idx, logits = next(batches)
    assert not model.training and not logits.requires_grad and idx.tolist() == [0, 1, 2, 3]
    batches.close()  # a caller that stops early (an exception in its loop)
    assert model.training and all(m.training for m in model.modules())
    model.eval()
    assert [i.tolist() for i, _ in eval_batches(model, _Data(), torch.arange(10), 4)] == [[0, 1, 2, 3], [4, 5, 6, 7],
                                                                                         [8, 9]]
    assert not model.training  # an eval-mode model stays in eval mode
    with pytest.raises(RuntimeError), eval_mode(model.train()):
        assert not model.training
        raise RuntimeError
    assert model.training
