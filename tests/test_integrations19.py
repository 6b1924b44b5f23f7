"""Integrations 19, run for real: the install message, trainings that share one callback from two
threads (Optuna's `n_jobs > 1`), the Hugging Face `Trainer`'s out-of-memory retry
(`auto_find_batch_size`), what a hub push carries, and a real Ray Tune search.

Sections 1-3 each failed before their fix: without transformers the import no longer named the
extra to install; a `hyperparameter_search(n_jobs=2)` finished with scores that were no trial's
(its trials shared one Trainer and callback, one trial's start emptied the record the other was
filling), two Lightning fits with one callback mixed their losses; and a retry after running out
of memory kept the failed attempt's half epoch as an epoch of its own. Sections 4-5 pin what was
checked and found right: only checkpoint folders get `csl_tracker.pt` (the top-level push never
holds it), and under Ray Tune each trial is warned about accumulation in its worker and reports
its own record in its checkpoint, bitwise the same arguments trained alone."""

from __future__ import annotations

import fnmatch
import json
import subprocess
import sys
import threading
import warnings
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from harness.errors import HarnessError
from tests.test_tracker_review5 import _Plain, tiny_hf

N = 16  # tiny_hf's rows: 4 batches of 4 an epoch

# --- 1. the install message --------------------------------------------------------------------------

def test_without_transformers_the_import_says_what_to_install() -> None:
    """The accumulation check's module (imported first) imports transformers itself, before the
    integration's guard: without transformers, `import harness.integrations.transformers` said only
    "No module named 'transformers'", not the extra to install."""
    pytest.importorskip("transformers")
    code = ("import sys\nsys.modules['transformers'] = None\n"
            "try:\n    import harness.integrations.transformers\nexcept ImportError as e:\n    print(e)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).parent.parent)
    assert done.stdout.strip() == "harness.integrations.transformers needs transformers: pip install 'memprox[hf]'"



class _Gate:
    """Holds the first training to reach a step until another training's call has returned: the two
    overlap, whatever the threads' timing (a timeout only where the other call never comes)."""

    def __init__(self) -> None:
        self.other_returned = threading.Event()
        self.holder: int | None = None

    def hold(self) -> None:
        if self.holder is None:
            self.holder = threading.get_ident()
            self.other_returned.wait(timeout=120)

    def returned(self) -> None:
        if self.holder != threading.get_ident():
            self.other_returned.set()


# --- 2. two trainings, one callback, two threads -------------------------------------------------------

def test_an_optuna_search_with_two_jobs_is_refused_and_keeps_the_trial_that_trained(tmp_path: Path) -> None:
    """hyperparameter_search(n_jobs=2) runs two trials at once on one Trainer and one callback.
    Before: the search finished with scores equal to none of its trials' (2 of 4 runs of a probe),
    or failed with a misleading error. Now the second train() is refused, naming n_jobs=1, and the
    record is the one trial's that trained, bitwise the same learning rate trained alone."""
    optuna = pytest.importorskip("optuna")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    from transformers import TrainerCallback

    made = tiny_hf()
    m, rows = made["m"], made["rows"]
    gate, trained = _Gate(), []

    class Hold(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            gate.hold()

    class Search(m.CSLTrainer):
        def train(self, *args, trial=None, **kwargs):
            try:
                out = super().train(*args, trial=trial, **kwargs)
                trained.append(trial.params["learning_rate"])
                return out
            finally:
                gate.returned()

    def build(cls, out: Path, **kw):
        csl = m.CSLTrainerCallback(N, proxies=["csl"])
        return csl, cls(model_init=lambda trial=None: _Plain(), args=made["args"](out, save_strategy="no", **kw),
                        train_dataset=m.with_sample_index(rows), eval_dataset=rows.select(range(8)),
                        callbacks=[csl, Hold()])

    csl, trainer = build(Search, tmp_path / "search")
    rates = [0.1, 0.5]

    def space(trial) -> dict:
        return {"learning_rate": trial.suggest_categorical("learning_rate", rates)}

    with pytest.raises(HarnessError, match=r"already running in another thread.*use n_jobs=1"):
        trainer.hyperparameter_search(hp_space=space, n_trials=2, n_jobs=2, direction="minimize", backend="optuna",
                                      sampler=optuna.samplers.GridSampler({"learning_rate": rates}))
    assert len(trained) == 1
    alone, solo = build(m.CSLTrainer, tmp_path / "alone", learning_rate=trained[0])
    solo.train()
    assert csl.scores().equals(alone.scores())


def test_two_lightning_fits_in_threads_with_one_callback(tmp_path: Path) -> None:
    """Two fits with one CSLCallback at once (Optuna trials in threads sharing a callback made
    outside the objective): before, both recorded into one record, each epoch closed twice. Now the
    second fit is refused when it sets up (before Lightning could restore a checkpoint into the
    callback), its error handling leaves the running fit's open epoch alone, and the first fit's
    scores are bitwise those of the same fit alone."""
    lightning = pytest.importorskip("lightning")
    from torch.utils.data import DataLoader, TensorDataset

    from harness.integrations import WithIndex
    from harness.integrations.lightning import CSLCallback

    gate = _Gate()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 6, generator=g)
    y = (x[:, 0] > 0).long()

    class Module(lightning.LightningModule):
        def __init__(self, hold: bool) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.net, self.hold = nn.Linear(6, 2), hold

        def training_step(self, batch, batch_idx):
            if self.hold:
                gate.hold()
            xb, yb, idx = batch
            losses = nn.functional.cross_entropy(self.net(xb), yb, reduction="none")
            return {"loss": losses.mean(), "losses": losses, "indices": idx}

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    def fit(csl: CSLCallback, hold: bool = False) -> None:
        trainer = lightning.Trainer(max_epochs=2, callbacks=[csl], accelerator="cpu", devices=1, logger=False,
                                    enable_checkpointing=False, enable_progress_bar=False,
                                    enable_model_summary=False, num_sanity_val_steps=0)
        trainer.fit(Module(hold), DataLoader(WithIndex(TensorDataset(x, y)), batch_size=10))

    shared, errors = CSLCallback(40), []
    first = threading.Thread(target=fit, args=(shared, True))
    first.start()
    while gate.holder is None and first.is_alive():
        first.join(timeout=0.05)  # until the first fit holds at its first step
    try:
        fit(shared)
    except HarnessError as e:
        errors.append(str(e))
    finally:
        gate.returned()
    first.join()
    assert len(errors) == 1 and "already running in another thread" in errors[0] and "n_jobs=1" in errors[0]
    alone = CSLCallback(40)
    fit(alone)
    assert shared.tracker.epochs == 2 and shared.scores().equals(alone.scores())


# --- 3. the Trainer's out-of-memory retry (auto_find_batch_size) -----------------------------------------

class _RunsOutOfMemory(_Plain):
    """Raises CUDA's out-of-memory error at one training forward: the Trainer's `auto_find_batch_size`
    then retries the training with a smaller batch."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at, self.calls = at, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.calls += 1
            if self.calls == self.at:
                raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.linear(x)


@pytest.mark.usefixtures("young_gc_in_accelerate")  # a full gc.collect per trial/retry frees nothing here
@pytest.mark.parametrize("before", [0, 2])
def test_an_out_of_memory_retry_records_the_retried_training_only(tmp_path: Path, before: int) -> None:
    """8 rows a batch, out of memory at the second batch: the Trainer retries with 7. Before, the
    failed attempt's first batch was closed as an epoch of its own, 3 epochs for a 2-epoch training
    (csl summing a dead half epoch, and scores() blaming a sampler). Now the record goes back to where
    the attempt began: empty (`before`=0), or a first train()'s 2 epochs that the same callback goes on
    from (`before`=2). learning_rate=0 keeps every loss the untrained model's, so csl is known."""
    made = tiny_hf()
    m, rows = made["m"], made["rows"]
    model, csl = _RunsOutOfMemory(at=2 + before * 2), m.CSLTrainerCallback(N)
    args = made["args"](tmp_path, per_device_train_batch_size=8, learning_rate=0.0, save_strategy="no",
                        auto_find_batch_size=True)
    trainer = m.CSLTrainer(model=model, args=args, train_dataset=m.with_sample_index(rows), callbacks=[csl])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(1 + (before > 0)):
            trainer.train()
        scores = csl.scores()
    said = [str(w.message) for w in caught if "CSLTrainer" in str(w.message) or "SampleTracker" in str(w.message)]
    assert len(said) == 1 and "ran out of memory in epoch" in said[0] and f"the {before} epoch(s)" in said[0]
    assert trainer._train_batch_size == 7 and csl.tracker.epochs == before + 2
    np.testing.assert_array_equal(csl.tracker.epochs_presented(), np.full(N, before + 2))
    every = rows[:]
    with torch.no_grad():
        loss = nn.functional.cross_entropy(model.linear(every["x"]), every["labels"], reduction="none")
    np.testing.assert_allclose(scores["csl"], (before + 2) * loss.numpy(), rtol=1e-6)


# --- 4. what a hub push carries ---------------------------------------------------------------------------

def test_only_checkpoint_folders_hold_the_state_and_the_top_level_push_never_does(tmp_path: Path,
                                                                                 monkeypatch) -> None:
    """push_to_hub with each hub_strategy and save_on_each_node, the upload replaced by a list of what
    it would send (its ignore patterns applied): the output folder's own push (the model) holds no
    memprox file; a checkpoint push ("checkpoint", "all_checkpoints") holds csl_tracker.pt; and the
    callback writes nothing outside the checkpoint folders, nor leaves temporary files."""
    import transformers.trainer as hf_trainer

    made = tiny_hf()
    m, rows = made["m"], made["rows"]

    class Api:
        def __init__(self) -> None:
            self.pushed: list[tuple[str, list[str]]] = []

        def create_repo(self, *args, **kwargs):
            return type("Repo", (), {"repo_id": "me/csl"})()

        def upload_folder(self, *, folder_path, path_in_repo=None, ignore_patterns=(), **kwargs):
            names = [str(p.relative_to(folder_path)) for p in sorted(Path(folder_path).rglob("*")) if p.is_file()]
            kept = [n for n in names if not any(fnmatch.fnmatch(n.split("/")[0], pat) for pat in ignore_patterns or ())]
            self.pushed.append((path_in_repo or ".", kept))
            done: Future = Future()
            done.set_result(None)
            return done

    for strategy in ("every_save", "checkpoint", "all_checkpoints"):
        api, out = Api(), tmp_path / strategy
        monkeypatch.setattr(hf_trainer, "hf_api", lambda api=api: api)
        args = made["args"](out, push_to_hub=True, hub_model_id="me/csl", hub_strategy=strategy,
                            save_on_each_node=True)
        trainer = m.CSLTrainer(model=_Plain(), args=args, train_dataset=m.with_sample_index(rows),
                               callbacks=[m.CSLTrainerCallback(N)])
        trainer.train()
        top = [files for where, files in api.pushed if where == "."]
        assert len(top) == 2 and all(m.STATE_FILE not in files for files in top)
        checkpoints = {where: files for where, files in api.pushed if where != "."}
        want = {"every_save": set(), "checkpoint": {"last-checkpoint"},
                "all_checkpoints": {"checkpoint-4", "checkpoint-8"}}[strategy]
        assert set(checkpoints) == want and all(m.STATE_FILE in files for files in checkpoints.values())
        ours = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.name.startswith((".csl", m.STATE_FILE)))
        assert ours == ["checkpoint-4/csl_tracker.pt", "checkpoint-8/csl_tracker.pt"]


# --- 5. a real Ray Tune search -------------------------------------------------------------------------

class _LossKwargs(_Plain):
    """A forward taking **kwargs: the accumulation warning's case."""

    def forward(self, x: torch.Tensor, **kwargs: object) -> torch.Tensor:
        return self.linear(x)


def _ray_trainer(m, rows, args, out: Path, **kw):
    csl = m.CSLTrainerCallback(N, proxies=["csl"])
    return csl, m.CSLTrainer(model_init=lambda trial=None: _LossKwargs(), args=args(out, save_strategy="no", **kw),
                             train_dataset=m.with_sample_index(rows), eval_dataset=rows.select(range(8)),
                             callbacks=[csl])


@pytest.mark.slow
def test_a_ray_tune_search_warns_each_trial_and_reports_its_own_record(tmp_path: Path, monkeypatch) -> None:
    """hyperparameter_search(backend="ray") over gradient_accumulation_steps 1, 2, 4 on a local Ray
    with 2 CPUs. Each trial trains in a worker on its own copy of the Trainer: the trials with 2 and
    4 steps are warned there (the worker's warning, which Ray forwards to the driver's console), and
    each trial's last checkpoint reported to Ray holds csl_tracker.pt with its record: bitwise the
    scores of the same arguments trained alone. The driver's callback recorded nothing and says so."""
    ray = pytest.importorskip("ray")
    tune = pytest.importorskip("ray.tune")
    from harness import SampleTracker

    made = tiny_hf()
    m, rows, args = made["m"], made["rows"], made["args"]
    said = tmp_path / "said"
    said.mkdir()

    class Said(m.CSLTrainer):  # each trial writes down the accumulation warnings its train() gave
        def train(self, *a, **kw):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                out = super().train(*a, **kw)
            steps = self.args.gradient_accumulation_steps
            named = [str(w.message).split("gradient_accumulation_steps=")[1].split(" ")[0] for w in caught
                     if str(w.message).startswith("CSLTrainer: with gradient_accumulation_steps=")]
            (said / f"{steps}.json").write_text(json.dumps([int(k) for k in named]))
            return out

    from accelerate.state import GradientState

    shared = GradientState._shared_state
    if "_dataloader_references_ref" in shared:
        # accelerate's process-wide GradientState holds weak references to the DataLoaders of every
        # Trainer trained before (earlier tests'), and a Trainer made after one trained cannot be pickled
        # for Ray (the plain Trainer too): as in a fresh process, none here (docs/integrations.md)
        monkeypatch.setitem(shared, "_dataloader_references_ref", [None])
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        csl = m.CSLTrainerCallback(N, proxies=["csl"])
        trainer = Said(model_init=lambda trial=None: _LossKwargs(), args=args(tmp_path / "search", save_strategy="no"),
                       train_dataset=m.with_sample_index(rows), eval_dataset=rows.select(range(8)), callbacks=[csl])
        best = trainer.hyperparameter_search(
            hp_space=lambda trial: {"gradient_accumulation_steps": tune.grid_search([1, 2, 4])}, n_trials=1,
            direction="minimize", backend="ray", storage_path=str(tmp_path / "ray"),
            resources_per_trial={"cpu": 1}, verbose=0)
    finally:
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
        if started:
            ray.shutdown()
    for steps in (1, 2, 4):
        warned = json.loads((said / f"{steps}.json").read_text())
        assert warned == ([] if steps == 1 else [steps])
    trials = {t.config["gradient_accumulation_steps"]: t for t in best.run_summary.trials}
    assert sorted(trials) == [1, 2, 4]
    for steps, trial in trials.items():
        with trial.checkpoint.as_directory() as folder:
            state = torch.load(next(Path(folder).glob("checkpoint-*")) / m.STATE_FILE, weights_only=True)
        reported = SampleTracker(N, proxies=["csl"])
        reported.load_state_dict(state["tracker"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # the accumulation warning, said above
            alone, solo = _ray_trainer(m, rows, args, tmp_path / f"alone{steps}", gradient_accumulation_steps=steps)
        solo.train()
        assert state["batches"] == 0 and reported.scores().equals(alone.scores())
    with pytest.raises(HarnessError, match=r"no epoch was recorded in this process.*backend='ray'"):
        csl.scores()
