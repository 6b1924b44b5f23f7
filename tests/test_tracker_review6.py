"""Review 6 of the own-loop tracker and its callbacks: -inf class masks in the logits, a Lightning
fit resumed from a checkpoint saved mid-epoch, and the other gaps of the review (see each test)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from harness import SampleTracker
from tests.test_tracker_review5 import _Plain

N, C, EPOCHS = 12, 5, 3


def _masked_logits(epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits with classes 3 and 4 masked to -inf (absent from the task) for most samples, the
    labels all in 0..2; sample 0 has only its own class left (its margin is +inf)."""
    g = torch.Generator().manual_seed(epoch)
    logits = torch.randn(N, C, generator=g) * 2
    y = torch.arange(N) % 3
    logits[1:, 3:] = float("-inf")
    logits[0, 1:] = float("-inf")
    y[0] = 0
    return logits, y


def _record(logits_of, tracker: SampleTracker) -> SampleTracker:
    for epoch in range(EPOCHS):
        logits, y = logits_of(epoch)
        tracker.update(torch.arange(N), logits=logits, labels=y)
        tracker.end_epoch()
    return tracker


def test_minus_inf_class_masks_are_recorded_like_finite_logits() -> None:
    """A -inf logit of a class other than the target (a class mask) counted as non-finite: every
    sample scored NaN, with a warning. The target's cross-entropy is finite, and every proxy must
    equal the same computation on the logits with -inf replaced by -1e9 (and torch's own loss)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        got = _record(_masked_logits, SampleTracker(N)).scores()
    assert not got.drop(columns=["index", "label"]).isna().to_numpy().any()

    def finite(epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        logits, y = _masked_logits(epoch)
        return logits.masked_fill(torch.isinf(logits), -1e9), y

    want = _record(finite, SampleTracker(N)).scores()
    csl = sum(nn.functional.cross_entropy(*_masked_logits(e), reduction="none") for e in range(EPOCHS))
    assert np.allclose(got["csl"].to_numpy(), csl.numpy(), rtol=1e-6)
    for column in ("csl", "el2n", "forgetting", "threshold_lt", "variability"):
        assert np.allclose(got[column].to_numpy(), want[column].to_numpy(), rtol=1e-6, atol=1e-7), column
    assert np.allclose(got["aum"].to_numpy()[1:], want["aum"].to_numpy()[1:], rtol=1e-6)
    assert got["aum"][0] == -np.inf and want["aum"][0] < -1e8  # no other class: an infinite margin, least suspicious


def test_minus_inf_masks_in_eval_passes_and_half_precision() -> None:
    """The eval pass (final_loss, in_confidence, csl_eval) took -inf masks for a diverged sample too."""
    x = torch.randn(N, 4)
    y = torch.arange(N) % 3

    class Masked(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(4, C)

        def forward(self, inp: torch.Tensor) -> torch.Tensor:
            out = self.lin(inp)
            return out.masked_fill(torch.arange(C) >= 3, float("-inf"))

    model = Masked()
    tracker = SampleTracker(N, proxies=["csl", "aum", "csl_eval", "final_loss", "in_confidence"])
    for _ in range(2):
        logits = model(x).half()  # AMP logits keep -inf
        tracker.update(torch.arange(N), logits=logits, labels=y)
        tracker.end_epoch()
        tracker.eval_epoch(model, (x, y))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        got = tracker.scores()
    with torch.no_grad():
        loss = nn.functional.cross_entropy(model(x), y, reduction="none")
    assert np.allclose(got["final_loss"].to_numpy(), loss.numpy(), rtol=1e-6)
    assert np.allclose(got["csl_eval"].to_numpy(), 2 * loss.numpy(), rtol=1e-6)
    assert np.isfinite(got.drop(columns=["index", "label"]).to_numpy(dtype=float)).all()


@pytest.mark.parametrize("fault", ["target -inf", "nan", "+inf"])
def test_a_target_of_minus_inf_or_a_nan_or_plus_inf_logit_is_still_flagged(fault: str) -> None:
    logits, y = _masked_logits(0)
    if fault == "target -inf":
        logits[5, y[5]] = float("-inf")
    elif fault == "nan":
        logits[5, 4] = float("nan")  # a NaN in a masked column
    else:
        logits[5, 4] = float("inf")
    given = nn.functional.cross_entropy(logits.nan_to_num(0.0, 0.0, 0.0), y, reduction="none")
    for losses in (None, given):  # the loss from the logits, or a finite loss given besides them
        tracker = SampleTracker(N)
        tracker.update(torch.arange(N), logits=logits, losses=losses, labels=y)
        with pytest.warns(RuntimeWarning, match=r"non-finite loss or logits .* for 1 sample\(s\) .* \[5\]"):
            tracker.end_epoch()
        with pytest.warns(RuntimeWarning, match="1 sample"):
            got = tracker.scores().drop(columns=["index", "label"])
        assert got.iloc[5].isna().all()
        assert not got.drop(index=5).isna().to_numpy().any()


# --- Hugging Face under Ray Tune: the checkpoints a trial reports, and the driver's callback -------


def _hf_trainer(tmp_path, csl=None, callbacks=()):
    pytest.importorskip("transformers")
    datasets = pytest.importorskip("datasets")
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import TrainingArguments

    from harness.integrations import transformers as m

    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 4, generator=g)
    y = (x[:, 0] > 0).long()
    rows = datasets.Dataset.from_dict({"x": x.tolist(), "labels": y.tolist()}).with_format("torch")
    train = m.with_sample_index(rows)
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4, num_train_epochs=2, use_cpu=True,
                             report_to=[], logging_strategy="no", disable_tqdm=True, seed=0, learning_rate=0.1,
                             optim="sgd", dataloader_num_workers=0, save_strategy="no")
    csl = csl or m.CSLTrainerCallback(16)
    return m, csl, m.CSLTrainer(model_init=lambda trial=None: _Plain(), args=args, train_dataset=train,
                                callbacks=[csl, *callbacks])


@pytest.mark.usefixtures("young_gc_in_accelerate")
def test_a_ray_tune_trial_checkpoint_holds_the_tracker_state(tmp_path) -> None:
    """Under hyperparameter_search(backend="ray") the Trainer reports checkpoints to Ray with
    `_tune_save_checkpoint` (not `_save_checkpoint`): they lacked csl_tracker.pt, so a trial Ray
    restored (a failed trial retried, population-based training copying a trial) resumed with a
    warning and csl summed only the epochs after the restore."""
    from transformers import TrainerCallback

    holder: dict = {}

    class TuneReport(TrainerCallback):  # what _report_to_hp_search does at an evaluation after epoch 1
        def on_epoch_end(self, args, state, control, **kwargs):
            if state.global_step == 4:
                holder["trainer"]._tune_save_checkpoint(str(tmp_path / "tune"))

    m, csl, trainer = _hf_trainer(tmp_path / "trial", callbacks=[TuneReport()])
    holder["trainer"] = trainer
    trainer.train()
    want = csl.scores()
    ckpt = tmp_path / "tune" / "checkpoint-4"
    assert (ckpt / m.STATE_FILE).is_file()
    m, restored, trainer = _hf_trainer(tmp_path / "restored")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        trainer.train(resume_from_checkpoint=str(ckpt))
    assert restored.scores().equals(want)


def test_the_driver_callback_of_a_ray_search_says_where_the_record_is(tmp_path) -> None:
    """Ray Tune trains each trial in a worker process with a pickled copy of the Trainer and its
    callback; the driver's callback records nothing, and scores() said only "no epoch recorded: call
    update() for every batch", which points at the wrong cause."""
    from harness.errors import HarnessError

    m, csl, _ = _hf_trainer(tmp_path)
    with pytest.raises(HarnessError, match=r"no epoch was recorded in this process.*backend='ray'.*train the chosen"):
        csl.scores()
