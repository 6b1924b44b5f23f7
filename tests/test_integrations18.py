"""Integrations 18, run for real: a Hugging Face hyperparameter search that sets
`gradient_accumulation_steps` per trial (warned at construction only, so a trial with accumulation
was never told that CSLTrainer trains it unlike the plain Trainer), and the same callback resuming
from a step checkpoint saved at its last epoch's last batch (refused, though the checkpoint resumes
to exactly the callback's own record), in Lightning and in the Hugging Face Trainer. Each test
failed before its fix, except the refusals, which pin what must stay refused."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

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

    return {"m": integration, "trainer": trainer}


def _said(caught: list[warnings.WarningMessage]) -> list[int]:
    """The accumulation steps each accumulation warning named, in order."""
    return [int(str(w.message).split("gradient_accumulation_steps=")[1].split(" ")[0]) for w in caught
            if "gradient_accumulation_steps=" in str(w.message)]


# --- 1. accumulation set per trial by hyperparameter_search -------------------------------------------

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
