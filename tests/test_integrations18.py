"""Integrations 18, run for real: a Hugging Face hyperparameter search that sets
`gradient_accumulation_steps` per trial (warned at construction only, so a trial with accumulation
was never told that CSLTrainer trains it unlike the plain Trainer), and the same callback resuming
from a step checkpoint saved at its last epoch's last batch (refused, though the checkpoint resumes
to exactly the callback's own record), in Lightning and in the Hugging Face Trainer. Each test of
sections 1-2 failed before its fix, except the refusals and the no-warning case, which pin what
must stay. Section 3 runs two paths nobody had run (Lightning's accumulate_grad_batches with a
short last batch, the Trainer's early stopping with load_best_model_at_end): they scored right."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.errors import HarnessError
from tests.test_tracker_review5 import _Plain, tiny_hf

N = 16  # tiny_hf's rows: 4 batches of 4 an epoch


class _LossKwargs(_Plain):
    """A model whose forward takes **kwargs: the plain Trainer leaves its loss undivided under
    accumulation (`model_accepts_loss_kwargs`), which CSLTrainer's warning is about."""

    def forward(self, x: torch.Tensor, **kwargs: object) -> torch.Tensor:
        return self.linear(x)


@pytest.fixture
def hf() -> dict:
    made = tiny_hf()
    integration, rows, args = made["m"], made["rows"], made["args"]

    def trainer(out: Path, csl=None, model=None, model_init=lambda trial=None: _LossKwargs(), **kw):
        """A CSLTrainer with `model_init` (a new model, and record, per train()), or with `model`."""
        csl = csl or integration.CSLTrainerCallback(N, proxies=["csl"])
        built = integration.CSLTrainer(model=model, model_init=None if model else model_init, args=args(out, **kw),
                                       train_dataset=integration.with_sample_index(rows),
                                       eval_dataset=rows.select(range(8)), callbacks=[csl])
        return csl, built

    return {"m": integration, "trainer": trainer, "rows": rows, "args": args}


def _said(caught: list[warnings.WarningMessage]) -> list[int]:
    """The accumulation steps each accumulation warning named, in order."""
    return [int(str(w.message).split("gradient_accumulation_steps=")[1].split(" ")[0]) for w in caught
            if "gradient_accumulation_steps=" in str(w.message)]


# --- 1. accumulation set per trial by hyperparameter_search -------------------------------------------

@pytest.mark.usefixtures("young_gc_in_accelerate")  # a full gc.collect per trial/retry frees nothing here
def test_a_search_warns_once_for_each_accumulation_its_trials_train_with(hf, tmp_path: Path) -> None:
    """The Optuna backend sets each trial's hyperparameters on trainer.args inside train()
    (`_hp_search_setup`), after construction, where the warning was said: trials with 2 and 4
    accumulation steps trained silently at 1/steps the plain Trainer's update. Now each distinct
    setting is said once (not per trial, not per step), and the scores are those of the same
    arguments trained alone."""
    optuna = pytest.importorskip("optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    drawn = [2, 1, 4, 2]  # the sampler's draws, fixed: trial k trains with drawn[k]

    def space(trial) -> dict:
        return {"gradient_accumulation_steps": drawn[trial.number]}

    csl, trainer = hf["trainer"](tmp_path / "search", save_strategy="no")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.hyperparameter_search(hp_space=space, n_trials=len(drawn), direction="minimize", backend="optuna")
    assert _said(caught) == [2, 4]
    with pytest.warns(RuntimeWarning, match="gradient_accumulation_steps=2"):
        alone, solo = hf["trainer"](tmp_path / "alone", save_strategy="no", gradient_accumulation_steps=2)
    solo.train()
    assert csl.scores().equals(alone.scores())  # the last trial's record: the warning changes nothing


def test_accumulation_is_said_at_construction_and_for_a_setting_changed_before_train(hf, tmp_path: Path) -> None:
    """Said once at construction, not again by train() with the same setting; an edit of
    trainer.args before train() (what a search does) is said when training begins."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, trainer = hf["trainer"](tmp_path / "run", save_strategy="no", gradient_accumulation_steps=2)
        assert _said(caught) == [2]
        trainer.train()
        trainer.args.gradient_accumulation_steps = 4
        trainer.train()
        trainer.train()
    assert _said(caught) == [2, 4]


def test_a_model_that_divides_its_own_loss_is_not_warned(hf, tmp_path: Path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, trainer = hf["trainer"](tmp_path / "run", model_init=lambda trial=None: _Plain(), save_strategy="no")
        trainer.args.gradient_accumulation_steps = 2
        trainer.train()
    assert _said(caught) == []


# --- 2. the same callback resumed from a step checkpoint at its last epoch's last batch ---------------

def _lightning():
    pytest.importorskip("lightning")
    from tests.test_lightning_resume16 import _fit

    return _fit


def test_lightning_same_callback_resumes_from_a_step_checkpoint_at_its_last_batch(tmp_path: Path) -> None:
    """ModelCheckpoint(every_n_train_steps=5), 5 batches an epoch: the checkpoint of step 10 is saved
    after epoch 2's last batch, before the callback closes the epoch, so it holds (1 epoch, 5
    batches) where the callback holds 2 epochs; fit(ckpt_path=...) with that callback was refused.
    The checkpoint resumes to exactly that record (a new callback closes its open epoch at the
    resume), so it now goes on with its own: bitwise the uninterrupted fit's scores."""
    fit = _lightning()
    whole, _, _ = fit(tmp_path / "whole", max_epochs=3)
    csl, _, _ = fit(tmp_path, every=5, max_epochs=2)
    resumed, _, said = fit(tmp_path, tmp_path / "steps" / "epoch=1-step=10.ckpt", csl=csl, max_epochs=3)
    assert said == [] and resumed is csl and csl.tracker.epochs == 3
    fresh, _, _ = fit(tmp_path / "fresh", tmp_path / "steps" / "epoch=1-step=10.ckpt", max_epochs=3)
    for other in (whole, fresh):
        assert csl.scores().equals(other.scores())


def test_lightning_same_callback_refuses_checkpoints_that_would_count_epochs_twice(tmp_path: Path) -> None:
    """An older step checkpoint (epoch 1's last batch, the callback holds 2 epochs), and one of a fit
    cut by max_steps within an epoch, resumed by steps: Lightning goes on in the cut epoch, which
    this callback closed at the fit's end (a new callback takes the checkpoint's open epoch)."""
    fit = _lightning()
    csl, _, _ = fit(tmp_path, every=5, max_epochs=2)
    with pytest.raises(HarnessError, match=r"recorded 2 epoch\(s\) and 0 batch\(es\), the checkpoint holds 0 and 5"):
        fit(tmp_path, tmp_path / "steps" / "epoch=0-step=5.ckpt", csl=csl, max_epochs=3)
    cut, _, _ = fit(tmp_path / "cut", every=7, max_steps=7)  # 5 steps, then 2 of epoch 2, closed at the end
    assert cut.tracker.epochs == 2
    with pytest.raises(HarnessError, match=r"recorded 2 epoch\(s\) and 0 batch\(es\), the checkpoint holds 1 and 2"):
        fit(tmp_path / "cut", tmp_path / "cut" / "steps" / "epoch=1-step=7.ckpt", csl=cut, max_steps=15)


def test_trainer_same_callback_resumes_from_a_step_checkpoint_at_its_last_batch(hf, tmp_path: Path) -> None:
    """The Hugging Face Trainer saves a step checkpoint (save_strategy="steps") before on_epoch_end:
    checkpoint-8 of a 2-epoch run holds (1 epoch, 4 batches); train(resume_from_checkpoint=...)
    with the same trainer and callback was refused. Now bitwise the uninterrupted run's scores; an
    older checkpoint stays refused, and leaves the record as it was. (With `model_init` every
    train() starts a new record, the checkpoint's, and nothing was refused.)"""
    steps = {"lr_scheduler_type": "constant", "save_strategy": "steps", "save_steps": 4}
    whole, trainer = hf["trainer"](tmp_path / "whole", model=_Plain(), num_train_epochs=3, **steps)
    trainer.train()
    csl, trainer = hf["trainer"](tmp_path / "run", model=_Plain(), **steps)
    trainer.train()
    trainer.args.num_train_epochs = 3
    with pytest.raises(HarnessError, match=r"recorded 2 epoch\(s\) and 0 batch\(es\), the checkpoint holds 0 and 4"):
        trainer.train(resume_from_checkpoint=str(tmp_path / "run" / "checkpoint-4"))
    trainer.train(resume_from_checkpoint=str(tmp_path / "run" / "checkpoint-8"))
    assert csl.tracker.epochs == 3
    assert csl.scores().equals(whole.scores())
    np.testing.assert_array_equal(csl.tracker.epochs_presented(), np.full(N, 3))


# --- 3. paths run for the first time: accumulation with a short last batch, early stopping ------------

def test_lightning_accumulation_with_a_short_last_batch_scores_as_the_plain_loop(tmp_path: Path) -> None:
    """accumulate_grad_batches=3 over 7 batches an epoch, the last of 2 samples (steps after batches
    3, 6 and 7): bitwise the plain loop's scores on the batches Lightning drew, every proxy; and the
    same callback resumed from the step checkpoint at its last epoch's last, short step goes on as
    the uninterrupted fit (the fix of section 2 under accumulation)."""
    lightning = pytest.importorskip("lightning")
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from harness import SampleTracker
    from harness.integrations import WithIndex
    from harness.integrations.lightning import CSLCallback

    n, batch, accumulate, epochs = 50, 8, 3, 3
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 6, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 1).long()

    def net() -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))

    class Module(lightning.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net, self.batches = net(), []

        def training_step(self, data, batch_idx):
            xb, yb, idx = data
            self.batches.append(idx.clone())
            logits = self.net(xb)
            losses = nn.functional.cross_entropy(logits, yb, reduction="none")
            return {"loss": losses.mean(), "losses": losses, "indices": idx, "logits": logits, "labels": yb}

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.2, momentum=0.9)

    csl, module = CSLCallback(n), Module()
    loader = DataLoader(WithIndex(TensorDataset(x, y)), batch_size=batch, shuffle=True,
                        generator=torch.Generator().manual_seed(1))
    trainer = lightning.Trainer(max_epochs=epochs, accumulate_grad_batches=accumulate, callbacks=[csl],
                                accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                                enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(module, loader)
    assert trainer.global_step == 9 and len(module.batches) == 21
    plain = net()
    opt = torch.optim.SGD(plain.parameters(), lr=0.2, momentum=0.9)
    tracker = SampleTracker(n)
    for epoch in range(epochs):
        drawn = module.batches[epoch * 7:(epoch + 1) * 7]
        for k, idx in enumerate(drawn):
            logits = plain(x[idx])
            losses = nn.functional.cross_entropy(logits, y[idx], reduction="none")
            (losses.mean() / accumulate).backward()  # Lightning divides "loss" by accumulate_grad_batches
            if (k + 1) % accumulate == 0 or k + 1 == len(drawn):
                opt.step()
                opt.zero_grad()
            tracker.update(idx, losses=losses, logits=logits, labels=y[idx])
        tracker.end_epoch()
    assert csl.scores().equals(tracker.scores())

    import tests.test_lightning_resume16 as r16

    fit = _lightning()
    with pytest.MonkeyPatch.context() as patch:  # r16's fit, 7 batches of 8 an epoch, the last of 2
        patch.setattr(r16, "N", n)
        patch.setattr(r16, "BATCH", batch)
        whole, _, _ = fit(tmp_path / "whole", max_epochs=4, accumulate_grad_batches=accumulate)
        first, _, _ = fit(tmp_path, every=3, max_epochs=2, accumulate_grad_batches=accumulate)
        _, _, said = fit(tmp_path, tmp_path / "steps" / "epoch=1-step=6.ckpt", csl=first, max_epochs=4,
                         accumulate_grad_batches=accumulate)
    assert said == [] and first.scores().equals(whole.scores())


def test_trainer_with_early_stopping_and_the_best_model_at_end(hf, tmp_path: Path) -> None:
    """eval_strategy="epoch", load_best_model_at_end, EarlyStoppingCallback, save_total_limit=1: the
    record is of every epoch trained (bitwise the plain loop's on the Trainer's batches), not of
    the epochs up to the best checkpoint, whose csl_tracker.pt holds the record up to it."""
    from torch import nn
    from transformers import EarlyStoppingCallback

    from harness import SampleTracker

    m = hf["m"]
    drawn: list[torch.Tensor] = []

    class Spy(m.CSLTrainer):
        def compute_loss(self, model, inputs, **kw):
            if model.training:
                drawn.append(inputs[m.INDEX_KEY].clone())
            return super().compute_loss(model, inputs, **kw)

    rows, csl = hf["rows"], m.CSLTrainerCallback(N)
    args = hf["args"](tmp_path / "es", num_train_epochs=6, eval_strategy="epoch", load_best_model_at_end=True,
                      save_total_limit=1, max_grad_norm=0.0, lr_scheduler_type="constant", learning_rate=8.0)
    trainer = Spy(model=_Plain(), args=args, train_dataset=m.with_sample_index(rows),
                  eval_dataset=rows.select(range(8)), callbacks=[csl, EarlyStoppingCallback(early_stopping_patience=2)])
    trainer.train()
    assert len(drawn) == 12 and csl.tracker.epochs == 3  # eval loss up after epoch 1: stopped after epoch 3
    best = Path(trainer.state.best_model_checkpoint)
    assert best.name == "checkpoint-4"
    up_to_best = SampleTracker(N)  # the callback's arguments
    up_to_best.load_state_dict(torch.load(best / m.STATE_FILE, weights_only=True)["tracker"])
    assert up_to_best.epochs == 1
    plain = _Plain()
    opt = torch.optim.SGD(plain.parameters(), lr=8.0)
    tracker = SampleTracker(N)
    for epoch in range(3):
        for idx in drawn[epoch * 4:(epoch + 1) * 4]:
            logits = plain(rows["x"][idx])
            losses = nn.functional.cross_entropy(logits, rows["labels"][idx], reduction="none")
            losses.mean().backward()
            opt.step()
            opt.zero_grad()
            tracker.update(idx, losses=losses, logits=logits, labels=rows["labels"][idx])
        tracker.end_epoch()
    assert csl.scores().equals(tracker.scores())
