"""Integrations audit 17, run for real: the Hugging Face `CSLTrainer` under `hyperparameter_search`
(Optuna) and resumed from checkpoints saved with `save_only_model`, DataLoader workers in a tracked
loop, and the `hf:` dataset's fingerprint. Each test reproduces a finding that failed before its fix
(the worker test pins what the docs now say)."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Sampler, TensorDataset

from harness import SampleTracker
from harness.errors import HarnessError
from harness.integrations import WithIndex
from tests.test_tracker_review5 import _Plain, tiny_hf

ROOT = Path(__file__).resolve().parents[1]
N = 16  # tiny_hf's rows: 4 steps an epoch


@pytest.fixture
def hf() -> dict:
    made = tiny_hf()
    integration, rows, args = made["m"], made["rows"], made["args"]

    def trainer(out: Path, csl=None, callbacks=(), **kw):
        csl = csl or integration.CSLTrainerCallback(N, proxies=["csl", "aum"])
        built = integration.CSLTrainer(model_init=lambda trial=None: _Plain(), args=args(out, **kw),
                                       train_dataset=integration.with_sample_index(rows),
                                       eval_dataset=rows.select(range(8)),
                                       callbacks=[csl, *callbacks])
        return csl, built

    return {"m": integration, "trainer": trainer}


# --- 1. resuming from a checkpoint saved with save_only_model ----------------------------------------

def test_resuming_from_a_model_only_checkpoint_warns_that_the_scores_differ(hf, tmp_path: Path) -> None:
    """save_only_model=True checkpoints hold the weights (and csl_tracker.pt) but no optimizer,
    schedule or RNG state; the Trainer resumes from them anyway, saying so at info level only, with a
    new optimizer and schedule. The record resumed silently and the scores differed from the
    uninterrupted run's, which the docs promise bitwise for a resumed run."""
    m = hf["m"]
    want, first = hf["trainer"](tmp_path / "run", save_only_model=True, lr_scheduler_type="linear")
    first.train()
    checkpoint = tmp_path / "run" / "checkpoint-4"
    assert (checkpoint / m.STATE_FILE).is_file()
    csl, trainer = hf["trainer"](tmp_path / "again", save_only_model=True, lr_scheduler_type="linear")
    with pytest.warns(RuntimeWarning, match=r"checkpoint-4 holds no optimizer state \(saved with save_only_model"):
        trainer.train(resume_from_checkpoint=str(checkpoint))
    assert csl.tracker.epochs == 2
    assert not csl.scores().equals(want.scores())  # what the warning is about: another schedule from step 4


def test_resuming_from_a_full_checkpoint_says_nothing_and_scores_as_uninterrupted(hf, tmp_path: Path) -> None:
    """Guards the fix: a checkpoint with the optimizer's state resumes silently, bitwise."""
    want, first = hf["trainer"](tmp_path / "run", lr_scheduler_type="linear")
    first.train()
    csl, trainer = hf["trainer"](tmp_path / "again", lr_scheduler_type="linear")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        trainer.train(resume_from_checkpoint=str(tmp_path / "run" / "checkpoint-4"))
    assert csl.scores().equals(want.scores())


# --- 2. a train() stopped in its first epoch (a pruned search trial) ---------------------------------

class _Prune(Exception):
    """What an Optuna pruner raises (`optuna.TrialPruned`), without optuna."""


def test_scores_after_a_train_stopped_in_its_first_epoch_say_so(hf, tmp_path: Path) -> None:
    """A train() that raised in its first epoch (the last trial of a search, pruned early) leaves no
    epoch; scores() said "no epoch was recorded in this process" and sent the user to Ray Tune's
    worker processes, the wrong cause."""
    from transformers import TrainerCallback

    class PruneAtStep2(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 2:
                raise _Prune

    csl, trainer = hf["trainer"](tmp_path / "run", callbacks=[PruneAtStep2()])
    with pytest.warns(RuntimeWarning, match="training stopped by _Prune in epoch 1"), pytest.raises(_Prune):
        trainer.train()
    with pytest.raises(HarnessError, match=r"the last train\(\) stopped by _Prune before its first epoch ended, and "
                                           r"its batches were dropped \(a pruned hyperparameter_search trial"):
        csl.scores()


@pytest.mark.usefixtures("young_gc_in_accelerate")  # a full gc.collect per trial/retry frees nothing here
def test_an_optuna_search_scores_each_trial_apart_and_names_a_pruned_last_trial(hf, tmp_path: Path) -> None:
    """The real search (Optuna in this process): each trial's checkpoints under output_dir/run-<n>
    hold that trial's record alone (a trial resumed from its last checkpoint scores as the same
    hyperparameters trained alone), and a last trial pruned in its first epoch is named by scores()."""
    optuna = pytest.importorskip("optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    class PruneTrial1(optuna.pruners.BasePruner):
        def prune(self, study, trial) -> bool:
            return trial.number == 1

    csl, trainer = hf["trainer"](tmp_path / "search", eval_strategy="steps", eval_steps=2)
    with pytest.warns(RuntimeWarning, match="training stopped by TrialPruned in epoch 1"):
        best = trainer.hyperparameter_search(
            hp_space=lambda t: {"learning_rate": t.suggest_float("learning_rate", 0.01, 0.5, log=True)},
            n_trials=2, direction="minimize", backend="optuna", pruner=PruneTrial1())
    assert best.run_id == "0"
    with pytest.raises(HarnessError, match="stopped by TrialPruned before its first epoch ended"):
        csl.scores()
    last = tmp_path / "search" / "run-0" / "checkpoint-8"
    assert (last / hf["m"].STATE_FILE).is_file()
    lr = best.hyperparameters["learning_rate"]
    alone, trainer = hf["trainer"](tmp_path / "alone", learning_rate=lr)
    trainer.train()
    resumed, trainer = hf["trainer"](tmp_path / "resumed", learning_rate=lr)
    trainer.train(resume_from_checkpoint=str(last))  # trains nothing: trial 0's record as it was
    assert resumed.scores().equals(alone.scores())


# --- 3. DataLoader workers ---------------------------------------------------------------------------

class _Replay(Sampler[int]):
    """Presents the recorded order again, epoch by epoch."""

    def __init__(self, order: torch.Tensor, n: int) -> None:
        self.order, self.n, self.epoch = order, n, 0

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        chunk = self.order[self.epoch * self.n:(self.epoch + 1) * self.n]
        self.epoch += 1
        return iter(chunk.tolist())


def _loop(loader: DataLoader, x: torch.Tensor, y: torch.Tensor) -> tuple[object, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    tracker, seen = SampleTracker(len(y)), []
    for _ in range(3):
        for xb, yb, idx in loader:
            seen.append(idx)
            logits = model(xb)
            loss = nn.functional.cross_entropy(logits, yb, reduction="none")
            opt.zero_grad()
            loss.mean().backward()
            opt.step()
            tracker.update(idx, losses=loss, logits=logits, labels=yb)
        tracker.end_epoch()
    return tracker.scores(), torch.cat(seen)


def test_persistent_workers_train_other_batches_and_score_them_exactly() -> None:
    """Pins docs/own-training-loop.md: workers score bitwise as num_workers=0; with
    persistent_workers=True the DataLoader draws its base seed from torch's global generator once
    per run, not once per epoch, so a shuffling loader without a generator of its own presents other
    orders from the second epoch on than num_workers=0 does (and dropout draws other masks); the
    scores are those of the batches trained, bitwise."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(48, 4, generator=g), torch.randint(0, 3, (48,), generator=g)
    data = WithIndex(TensorDataset(x, y))
    plain, plain_order = _loop(DataLoader(data, batch_size=8, shuffle=True), x, y)
    fresh, fresh_order = _loop(DataLoader(data, batch_size=8, shuffle=True, num_workers=1), x, y)
    assert torch.equal(fresh_order, plain_order) and fresh.equals(plain)  # workers alone change nothing
    workers, order = _loop(DataLoader(data, batch_size=8, shuffle=True, num_workers=1, persistent_workers=True), x, y)
    assert torch.equal(order[:48], plain_order[:48]) and not torch.equal(order, plain_order)
    replayed, again = _loop(DataLoader(data, batch_size=8, sampler=_Replay(order, 48)), x, y)
    assert torch.equal(again, order) and replayed.equals(workers) and not plain.equals(workers)


# --- 4. hf: fingerprints ---------------------------------------------------------------------------

def test_a_max_length_above_the_longest_text_keeps_the_store_addresses(tmp_path: Path) -> None:
    """docs/integrations.md said another max_length gets new store addresses; the fingerprint hashes
    the token ids, so a max_length that cuts no text gives the same ids and the same addresses (the
    reuse is right: the model sees the same data). The docs now say which max_length changes them."""
    pytest.importorskip("transformers")
    pytest.importorskip("datasets")
    sys.path.insert(0, str(Path(__file__).parent))
    import _hf_tiny as tiny

    sys.path.pop(0)
    from harness.datasets import load_dataset

    tok, data = tiny.make_tokenizer(tmp_path / "tok"), tiny.save_text_dataset(tmp_path / "sst2", n=20, n_test=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # max_length=4 cuts every text, and says so
        loaded = {n: load_dataset(f"hf:{data},tokenizer={tok},max_length={n}") for n in (64, 128, 4)}
    assert loaded[64].fingerprint == loaded[128].fingerprint != loaded[4].fingerprint
    doc = " ".join((ROOT / "docs" / "integrations.md").read_text().split())
    assert "an edited row, another tokenizer or another `max_length` gets new ones" not in doc
    assert "a `max_length` that cuts no text changes nothing" in doc


@pytest.mark.parametrize(("files", "warns"), [
    (["model.safetensors", "scheduler.pt", "rng_state.pth", "trainer_state.json"], True),  # save_only_model
    (["model.safetensors", "optimizer.pt", "scheduler.pt"], False),
    (["model.safetensors", "optimizer_0/__0_0.distcp"], False),  # FSDP's sharded optimizer
    (["global_step4/bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt", "latest"], False),  # DeepSpeed ZeRO
    (["global_step4/mp_rank_00_model_states.pt", "latest"], False),  # DeepSpeed stage 0: inside the model states
])
def test_the_optimizer_state_is_found_in_each_checkpoint_layout(tmp_path: Path, files: list[str], warns: bool) -> None:
    pytest.importorskip("transformers")
    from harness.integrations.transformers import _warn_model_only

    for name in files:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        _warn_model_only(tmp_path)
    assert [str(w.message)[:60] for w in seen] == ([f"CSLTrainer: {tmp_path} holds no optimizer state"[:60]] if warns
                                                   else [])
