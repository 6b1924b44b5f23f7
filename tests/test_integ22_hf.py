"""`CSLTrainer` resumed in other batches than its checkpoint's: the record follows the `Trainer`'s
epochs. An out-of-memory retry (`auto_find_batch_size`) resumed from an epoch's last step trained
that epoch's last rows again, which csl counted as a third epoch of a 2-epoch training; the
oracle is the uninterrupted training's record: each sample presented once per epoch, and at
learning_rate=0 (every loss the untrained model's) the same csl, bitwise."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tests.test_integration_attack20_hf import N, _OutOfMemoryAbove, _train
from tests.test_tracker_review5 import tiny_hf

# accelerate's full gc.collect() around each out-of-memory retry frees nothing on the CPU (conftest)
pytestmark = pytest.mark.usefixtures("young_gc_in_accelerate")


@pytest.fixture(scope="module")
def made() -> dict:
    return tiny_hf()


@pytest.fixture(scope="module")
def runs(made: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The trainings the tests resume from, made once (they only read them): `full`, 2 epochs in batches of 8
    at learning_rate=0 with a checkpoint at every step, its record `whole`; `small`, resumed from full's
    checkpoint-2 (the first epoch's end) in batches of 4 with a checkpoint at every step."""
    base = tmp_path_factory.mktemp("integ22")
    _, whole = _resume(made, base / "full", None, 8, save=True)
    small, small_scores = _resume(made, base / "small", base / "full" / "checkpoint-2", 4, save=True)
    return {"full": base / "full", "whole": whole, "small": base / "small", "small_csl": small,
            "small_scores": small_scores}


@pytest.mark.parametrize("checkpoint", [1, 2, 3])
def test_a_retry_resumed_from_a_checkpoint_records_the_uninterrupted_epochs(made: dict, runs: dict, tmp_path: Path,
                                                                            checkpoint: int) -> None:
    """2 epochs of 2 steps of 8 rows, resumed from each step's checkpoint; the first forward of the
    resume runs out of memory and the Trainer retries in batches of 7 (3 steps an epoch: from
    checkpoint-2, the first epoch's last step, it counts 0 epochs done and trains that epoch's last
    2 rows again). The record: 2 epochs, every sample in each, csl the uninterrupted run's."""
    whole = runs["whole"]
    ckpt = runs["full"] / f"checkpoint-{checkpoint}"
    retried, trainer, scores, said = _train(made, tmp_path / "retry", batch=8, lr=0.0, resume=ckpt, at=1, auto=True)
    assert trainer.model.raised == 1 and trainer._train_batch_size == 7
    assert retried.tracker.epochs == 2
    np.testing.assert_array_equal(retried.tracker.epochs_presented(), np.full(N, 2))
    np.testing.assert_array_equal(scores["csl"].to_numpy(), whole["csl"].to_numpy())
    assert sum("in batches of 8, in batches of 7" in s for s in said) == 1  # the training itself differs


def test_a_retry_with_learning_records_each_sample_once_per_epoch(made: dict, tmp_path: Path) -> None:
    """With learning_rate > 0 the weights differ from the uninterrupted run's (the Trainer trained 2
    rows again), but the record still holds 2 epochs of 16 samples (no third epoch)."""
    _train(made, tmp_path / "full", batch=8, lr=0.1, save=True)
    retried, _, scores, _ = _train(made, tmp_path / "retry", batch=8, lr=0.1, at=1, auto=True,
                                   resume=tmp_path / "full" / "checkpoint-2")
    assert retried.tracker.epochs == 2
    np.testing.assert_array_equal(retried.tracker.epochs_presented(), np.full(N, 2))
    assert np.isfinite(scores["csl"]).all()


def _resume(made: dict, out: Path, ckpt: Path | None, batch: int, save: bool = False):
    """The same 2-epoch training at learning_rate=0 in batches of `batch`, resumed from `ckpt`."""
    m = made["m"]
    csl = m.CSLTrainerCallback(N)
    saves = dict(save_strategy="steps", save_steps=1) if save else dict(save_strategy="no")
    args = made["args"](out, per_device_train_batch_size=batch, learning_rate=0.0, **saves)
    trainer = m.CSLTrainer(model=_OutOfMemoryAbove(), args=args, train_dataset=m.with_sample_index(made["rows"]),
                           callbacks=[csl])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.train(resume_from_checkpoint=None if ckpt is None else str(ckpt))
        return csl, csl.scores()


def test_a_resume_in_smaller_batches_and_a_checkpoint_saved_in_the_epoch_trained_again(made: dict, runs: dict,
                                                                                         tmp_path: Path) -> None:
    """Saved in batches of 8 at the first epoch's end (checkpoint-2), resumed in batches of 4 (4
    steps an epoch): the Trainer counts 0 epochs done and trains that epoch's last 2 batches again.
    A checkpoint saved inside them (checkpoint-3) resumes to the same record, in batches of 4: the
    record's epoch of the Trainer's epoch is saved with it. Both: the uninterrupted record."""
    whole = runs["whole"]
    assert runs["small_csl"].tracker.epochs == 2 and runs["small_scores"].equals(whole)
    saved = torch.load(runs["small"] / "checkpoint-3" / "csl_tracker.pt", weights_only=True)
    assert saved["tracker"]["epochs"] == 1 and saved["base"] == 0
    again, scores = _resume(made, tmp_path / "again", runs["small"] / "checkpoint-3", 4)
    assert again.tracker.epochs == 2 and scores.equals(whole)
    np.testing.assert_array_equal(again.tracker.epochs_presented(), np.full(N, 2))


def test_a_resume_in_larger_batches_closes_the_epoch_the_trainer_left(made: dict, tmp_path: Path) -> None:
    """Saved in batches of 4 after 3 steps (12 rows of the first epoch), resumed in batches of 8 (2
    steps an epoch): the Trainer counts 1 epoch done and skips 1 step into the second, so it trains
    that epoch's last 8 rows only. The record: the first epoch's 12 samples and the second's 8, two
    epochs (before: one, the 8 rows added to the first epoch's)."""
    _resume(made, tmp_path / "full", None, 4, save=True)
    csl, scores = _resume(made, tmp_path / "big", tmp_path / "full" / "checkpoint-3", 8)
    assert csl.tracker.epochs == 2
    presented = csl.tracker.epochs_presented()
    assert presented.sum() == 12 + 8 and presented.max() == 2


def test_a_resume_in_other_batches_under_gradient_accumulation_counts_update_steps(made: dict, tmp_path: Path) -> None:
    """gradient_accumulation_steps=2: the Trainer counts update steps (2 batches each). Saved in
    batches of 4 at the first epoch's end (2 update steps), resumed in batches of 2 (4 update steps
    an epoch): it counts 0 epochs done and trains the first epoch's second half again. The record:
    2 epochs, every sample in each, csl the uninterrupted run's (learning_rate=0)."""
    m = made["m"]

    def run(out: Path, batch: int, ckpt: Path | None = None):
        csl = m.CSLTrainerCallback(N)
        args = made["args"](out, per_device_train_batch_size=batch, learning_rate=0.0, gradient_accumulation_steps=2,
                            save_strategy="steps", save_steps=1)
        trainer = m.CSLTrainer(model=_OutOfMemoryAbove(), args=args,
                               train_dataset=m.with_sample_index(made["rows"]), callbacks=[csl])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer.train(resume_from_checkpoint=None if ckpt is None else str(ckpt))
            return csl, csl.scores()

    _, whole = run(tmp_path / "full", 4)
    csl, scores = run(tmp_path / "small", 2, tmp_path / "full" / "checkpoint-2")
    assert csl.tracker.epochs == 2 and scores.equals(whole)
    np.testing.assert_array_equal(csl.tracker.epochs_presented(), np.full(N, 2))


def test_a_retry_resumed_from_a_checkpoint_inside_an_epoch_trained_again_keeps_its_map(made: dict, runs: dict,
                                                                                        tmp_path: Path) -> None:
    """checkpoint-3 of a resume in batches of 4 from an epoch's end (saved in batches of 8) lies in
    the first epoch, trained again, whose record is closed. Resumed from it in batches of 4, the
    Trainer's first attempt takes the batch in the state (8, the first run's) and every forward of
    more than 3 rows runs out of memory, so it retries in 7, 6, 5, 4 and 3 (global step 3: still
    the first epoch, 9 rows skipped): each retry goes back to the record and to its map of epochs
    (`EpochMap.kept`), so the 7 rows trained again are not an epoch of their own."""
    m, whole = made["m"], runs["whole"]
    csl = m.CSLTrainerCallback(N)
    args = made["args"](tmp_path / "retry", per_device_train_batch_size=4, learning_rate=0.0, save_strategy="no",
                        auto_find_batch_size=True)
    model = _AlwaysOutOfMemoryAbove(3)
    trainer = m.CSLTrainer(model=model, args=args, train_dataset=m.with_sample_index(made["rows"]), callbacks=[csl])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.train(resume_from_checkpoint=str(runs["small"] / "checkpoint-3"))
        scores = csl.scores()
    assert model.raised == 5 and trainer._train_batch_size == 3
    assert csl.tracker.epochs == 2 and list(scores.columns) == list(whole.columns)
    # to rounding: the retry's batches of 3 are another matrix product than the first run's of 8, and
    # on a machine with AVX-512 (bf16/fp16 kernels) they differ in the last bit (variability 3.7e-9 vs 0)
    pd.testing.assert_frame_equal(scores, whole, check_exact=False, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(csl.tracker.epochs_presented(), np.full(N, 2))


class _AlwaysOutOfMemoryAbove(_OutOfMemoryAbove):
    """Every training forward of more than `limit` rows runs out of memory."""

    def __init__(self, limit: int) -> None:
        super().__init__(None, limit)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] > self.limit:
            self.raised += 1
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.linear(x)


def test_the_resize_warning_names_the_batch_the_checkpoint_s_steps_were_made_in(made: dict, runs: dict,
                                                                                 tmp_path: Path) -> None:
    """The Trainer keeps the first run's train_batch_size (8) in a resumed state, so checkpoint-3 of
    a resume in batches of 4 says 8 in its trainer_state.json; csl_tracker.pt keeps the batch the
    steps were made in. Resumed from it in batches of 4: no warning (before: 'in batches of 8, in
    batches of 4'); in batches of 8: the warning, naming 4."""
    m = made["m"]
    ckpt = runs["small"] / "checkpoint-3"
    assert torch.load(ckpt / "csl_tracker.pt", weights_only=True)["batch"] == 4

    def said(batch: int) -> list[str]:
        args = made["args"](tmp_path / f"at{batch}", per_device_train_batch_size=batch, learning_rate=0.0,
                            save_strategy="no")
        trainer = m.CSLTrainer(model=_OutOfMemoryAbove(), args=args, train_dataset=m.with_sample_index(made["rows"]),
                               callbacks=[m.CSLTrainerCallback(N)])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer.train(resume_from_checkpoint=str(ckpt))
        return [str(w.message) for w in caught if "resumes from a checkpoint saved after" in str(w.message)]

    assert said(4) == []
    resized = said(8)
    assert len(resized) == 1 and "saved after 3 step(s) in batches of 4, in batches of 8" in resized[0]
