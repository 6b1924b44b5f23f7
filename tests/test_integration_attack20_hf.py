"""Attack 20 on `CSLTrainer`: an out-of-memory retry (`auto_find_batch_size=True`) in a training
resumed from a checkpoint saved mid-epoch (`save_steps`). The `Trainer` runs its loop again with a
smaller batch, from the checkpoint's step; the record after the retry must be the record of the same
resumed training at that smaller batch without the out-of-memory error."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tests.test_tracker_review5 import tiny_hf

N = 16  # tiny_hf's rows


class _OutOfMemoryAbove(nn.Module):
    """A linear classifier whose `at`-th training forward raises CUDA's out-of-memory error when the
    batch holds more than `limit` rows (once): what `auto_find_batch_size` retries after."""

    def __init__(self, at: int | None = None, limit: int = 7) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(4, 2)
        self.at, self.limit, self.calls, self.raised = at, limit, 0, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.calls += 1
            if self.calls == self.at and x.shape[0] > self.limit:
                self.raised += 1
                raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.linear(x)


def _train(made: dict, out: Path, *, batch: int, lr: float, resume: Path | None = None, at: int | None = None,
           auto: bool = False, save: bool = False):
    m, rows = made["m"], made["rows"]
    model, csl = _OutOfMemoryAbove(at), m.CSLTrainerCallback(N)
    saves = dict(save_strategy="steps", save_steps=1) if save else dict(save_strategy="no")
    args = made["args"](out, per_device_train_batch_size=batch, learning_rate=lr, auto_find_batch_size=auto, **saves)
    trainer = m.CSLTrainer(model=model, args=args, train_dataset=m.with_sample_index(rows), callbacks=[csl])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train(resume_from_checkpoint=None if resume is None else str(resume))
        scores = csl.scores()
    said = [str(w.message) for w in caught if str(w.message).startswith(("CSLTrainer", "SampleTracker"))]
    return csl, trainer, scores, said


@pytest.mark.usefixtures("young_gc_in_accelerate")
@pytest.mark.parametrize("checkpoint, at, epochs", [(1, 1, 2), (1, 3, 2), (2, 1, 2), (3, 1, 2)])
def test_a_retry_in_a_training_resumed_mid_epoch_records_as_the_same_training_without_it(
        tmp_path: Path, checkpoint: int, at: int, epochs: int) -> None:
    """2 epochs of 2 steps (batches of 8), a checkpoint at every step: resumed from checkpoint-1
    (epoch 1 half done), checkpoint-2 (its last step, the epoch still open) or checkpoint-3 (epoch 2
    half done), the `at`-th training forward of the resumed attempt runs out of memory and the
    Trainer retries with batches of 7. The reference is the same resume at batches of 7 without the
    error. learning_rate=0 keeps every loss the untrained model's (the retry trains on from the
    weights the failed attempt reached, as the Trainer does), so the record also has a value by
    hand: csl = epochs presented x that loss. The Trainer counts the checkpoint's steps in batches
    of 7, so it goes on elsewhere than the checkpoint stopped (from checkpoint-2: in epoch 1 again,
    its last 2 rows, which the record does not take again: 2 epochs; until December 2026 it counted
    them as a third epoch)."""
    made = tiny_hf()
    _, _, whole, _ = _train(made, tmp_path / "full", batch=8, lr=0.0, save=True)
    ckpt = tmp_path / "full" / f"checkpoint-{checkpoint}"
    retried, trainer, scores, said = _train(made, tmp_path / "retry", batch=8, lr=0.0, resume=ckpt, at=at, auto=True)
    assert trainer.model.raised == 1 and trainer._train_batch_size == 7
    assert sum("ran out of memory" in s for s in said) == 1 and retried.tracker.epochs == epochs
    resized = [s for s in said if "resumes from a checkpoint saved after" in s]
    assert len(resized) == 1 and f"saved after {checkpoint} step(s) in batches of 8, in batches of 7" in resized[0]
    assert "resume in batches of 8, or train from the start in batches of 7" in resized[0]
    reference, _, want, said_ref = _train(made, tmp_path / "ref", batch=7, lr=0.0, resume=ckpt)
    assert retried.tracker.epochs == reference.tracker.epochs
    np.testing.assert_array_equal(retried.tracker.epochs_presented(), reference.tracker.epochs_presented())
    assert scores.equals(want)
    assert [s for s in said if "ran out of memory" not in s] == said_ref  # the same warnings otherwise
    rows = made["rows"][:]
    with torch.no_grad():
        loss = nn.functional.cross_entropy(_OutOfMemoryAbove().linear(rows["x"]), rows["labels"], reduction="none")
    np.testing.assert_allclose(scores["csl"], retried.tracker.epochs_presented() * loss.numpy(), rtol=1e-6)
    if epochs == 2:  # a sample trained twice in an epoch keeps its first loss: the uninterrupted run's at lr=0
        np.testing.assert_array_equal(scores["csl"].to_numpy(), whole["csl"].to_numpy())


@pytest.mark.usefixtures("young_gc_in_accelerate")
def test_a_retry_at_the_first_step_after_a_mid_epoch_resume_trains_as_without_it(tmp_path: Path) -> None:
    """With learning_rate > 0: out of memory at the first forward after the resume, before any
    optimizer step of the failed attempt, so the retry starts from the checkpoint's weights and must
    record bitwise what the resume at batches of 7 records."""
    made = tiny_hf()
    _train(made, tmp_path / "full", batch=8, lr=0.1, save=True)
    ckpt = tmp_path / "full" / "checkpoint-1"
    retried, trainer, scores, _ = _train(made, tmp_path / "retry", batch=8, lr=0.1, resume=ckpt, at=1, auto=True)
    assert trainer.model.raised == 1 and trainer._train_batch_size == 7
    reference, _, want, _ = _train(made, tmp_path / "ref", batch=7, lr=0.1, resume=ckpt)
    np.testing.assert_array_equal(retried.tracker.epochs_presented(), reference.tracker.epochs_presented())
    assert scores.equals(want)


@pytest.mark.usefixtures("young_gc_in_accelerate")
def test_a_resume_in_the_checkpoints_batches_says_nothing(tmp_path: Path) -> None:
    """auto_find_batch_size resumes in the checkpoint's batches, and without an out-of-memory error
    the resumed run is the uninterrupted one: no warning, the same scores."""
    made = tiny_hf()
    _, _, whole, _ = _train(made, tmp_path / "full", batch=8, lr=0.1, save=True)
    _, trainer, scores, said = _train(made, tmp_path / "same", batch=8, lr=0.1, auto=True,
                                      resume=tmp_path / "full" / "checkpoint-1")
    assert said == [] and trainer._train_batch_size == 8 and scores.equals(whole)


def test_a_mid_epoch_resume_with_two_workers_scores_as_the_uninterrupted_run(tmp_path: Path) -> None:
    """dataloader_num_workers=2: the run scores bitwise as without workers, and resumed from a
    checkpoint mid-epoch (step 1 of 4) or in the second epoch (step 6) bitwise as uninterrupted."""
    made = tiny_hf()
    m, rows = made["m"], made["rows"]

    def run(out: Path, workers: int, resume: Path | None = None, save: bool = False):
        csl = m.CSLTrainerCallback(N)
        saves = dict(save_strategy="steps", save_steps=1) if save else dict(save_strategy="no")
        args = made["args"](out, dataloader_num_workers=workers, **saves)
        m.CSLTrainer(model=_OutOfMemoryAbove(), args=args, train_dataset=m.with_sample_index(rows),
                     callbacks=[csl]).train(resume_from_checkpoint=None if resume is None else str(resume))
        return csl.scores()

    whole = run(tmp_path / "full", 2, save=True)
    assert whole.equals(run(tmp_path / "none", 0))
    for step in (1, 6):
        assert run(tmp_path / f"resumed{step}", 2, tmp_path / "full" / f"checkpoint-{step}").equals(whole), step
