"""Review 5 of the tracker and its trainer integrations: each test reproduces a finding that failed
before its fix (eval passes that miss samples; the Hugging Face Trainer's hyperparameter-search
trials and hub pushes)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from harness import SampleTracker

N, C = 10, 3


def _data() -> tuple[torch.Tensor, torch.Tensor, nn.Module]:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(N, 4, generator=g), torch.randint(0, C, (N,), generator=g)
    torch.manual_seed(0)
    return x, y, nn.Linear(4, C)


# --- 1. an eval pass that leaves samples out -------------------------------------------------------

def test_a_sample_left_out_of_an_eval_pass_scores_nan_in_csl_eval_not_a_partial_sum() -> None:
    """An eval loader with drop_last=True (or over part of the set) left rows NaN, and csl_eval's
    sum over passes read them as 0: a sample no pass covered scored csl_eval 0, the least
    suspicious of all, and one missed by one pass scored the sum of the others, with no warning."""
    x, y, model = _data()
    t = SampleTracker(N)
    hand = np.zeros(N)
    for epoch in range(3):
        t.update(torch.arange(N), logits=model(x), labels=y)
        t.end_epoch()
        # batches (x, y, index) of 4: samples 8 and 9 are dropped, as a loader with drop_last=True does;
        # the first pass also skips sample 3
        keep = [i for i in range(8) if not (epoch == 0 and i == 3)]
        batches = [(x[keep[s:s + 4]], y[keep[s:s + 4]], torch.tensor(keep[s:s + 4])) for s in range(0, len(keep), 4)]
        t.eval_epoch(model, batches)
        with torch.no_grad():
            hand += nn.functional.cross_entropy(model(x), y, reduction="none").numpy()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = t.scores(["csl_eval", "final_loss", "in_confidence"])
    messages = [str(w.message) for w in caught]
    assert np.isnan(table["csl_eval"][[3, 8, 9]]).all()
    np.testing.assert_allclose(table["csl_eval"][[0, 1, 2, 4, 5, 6, 7]], hand[[0, 1, 2, 4, 5, 6, 7]], rtol=1e-5)
    assert np.isnan(table["final_loss"][[8, 9]]).all() and np.isfinite(table["final_loss"][:8]).all()
    assert np.isnan(table["in_confidence"][[8, 9]]).all() and np.isfinite(table["in_confidence"][:8]).all()
    assert len(messages) == 1, messages  # ours, and no numpy "invalid value" noise
    assert "3 sample(s) were left out of eval_epoch passes (first: [3, 8, 9];" in messages[0]
    assert "csl_eval (3)" in messages[0] and "final_loss (2)" in messages[0]


def test_eval_passes_over_every_sample_say_nothing() -> None:
    """Guards the fix: full passes (tensors, or a loader in any order) score as before, silently."""
    x, y, model = _data()
    t = SampleTracker(N)
    for _ in range(2):
        t.update(torch.arange(N), logits=model(x), labels=y)
        t.end_epoch()
        order = torch.randperm(N)
        t.eval_epoch(model, [(x[order[:6]], y[order[:6]], order[:6]), (x[order[6:]], y[order[6:]], order[6:])])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = t.scores(["csl_eval", "final_loss"])
    assert np.isfinite(table["csl_eval"]).all() and np.isfinite(table["final_loss"]).all()


# --- 2. the Hugging Face Trainer: hyperparameter-search trials, hub pushes --------------------------

class _Plain(nn.Module):
    """A linear classifier returning logits, seeded: `model_init` makes the same one every time."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


def tiny_hf() -> dict:
    """What the CSLTrainer tests share (skipped without transformers and datasets): the integration
    module (`m`), 16 rows of (x, labels) with two labels flipped (`rows`), and `args(out, **kw)`,
    TrainingArguments of a seeded 2-epoch SGD run on the CPU in batches of 4."""
    pytest.importorskip("transformers")
    datasets = pytest.importorskip("datasets")
    sys.path.insert(0, str(Path(__file__).parent))
    import _hf_tiny  # noqa: F401, E402  (offline: sets HF_HUB_OFFLINE before transformers loads)

    sys.path.pop(0)
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    from transformers import TrainingArguments

    from harness.integrations import transformers as integration

    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 4, generator=g)
    y = (x[:, 0] > 0).long()
    y[:2] = 1 - y[:2]
    rows = datasets.Dataset.from_dict({"x": x.tolist(), "labels": y.tolist()}).with_format("torch")

    def args(out: Path, **kw) -> TrainingArguments:
        base = dict(output_dir=str(out), per_device_train_batch_size=4, num_train_epochs=2, use_cpu=True,
                    report_to=[], logging_strategy="no", disable_tqdm=True, seed=0, learning_rate=0.1, optim="sgd",
                    dataloader_num_workers=0, save_strategy="epoch")
        return TrainingArguments(**{**base, **kw})

    return {"m": integration, "rows": rows, "args": args}


@pytest.fixture
def hf() -> dict:
    made = tiny_hf()
    return {**made, "train": made["m"].with_sample_index(made["rows"])}


def _trial(hf: dict, out: Path, learning_rate: float, csl=None, **kw):
    """One trial of a hyperparameter search as `Trainer.hyperparameter_search` runs it in-process (the
    Optuna backend; Ray's context here is a named run folder): `model_init`, `train(trial=...)`."""
    from transformers.trainer_utils import HPSearchBackend

    m = hf["m"]
    csl = csl or m.CSLTrainerCallback(16, proxies=["csl", "aum"])
    trainer = m.CSLTrainer(model_init=lambda trial=None: _Plain(), args=hf["args"](out, **kw),
                           train_dataset=hf["train"], callbacks=[csl])
    trainer.hp_search_backend, trainer.hp_name = HPSearchBackend.RAY, lambda trial: f"run-{trial['learning_rate']}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # ray: get_trial_id outside a Tune session
        trainer.train(trial={"learning_rate": learning_rate})
    return csl, trainer


def test_a_search_trials_checkpoints_hold_the_tracker_state_and_resume(hf, tmp_path: Path) -> None:
    """A trial saves under output_dir/run-<name>/checkpoint-N; the callback looked for
    output_dir/checkpoint-N, found no folder and wrote nothing: the trial's checkpoints lost the
    record, and a resumed trial summed only the epochs after the resume."""
    pytest.importorskip("ray")
    m = hf["m"]
    csl, _ = _trial(hf, tmp_path / "search", 0.1)
    want = csl.scores()
    folder = tmp_path / "search" / "run-0.1"
    assert (folder / "checkpoint-4" / m.STATE_FILE).is_file() and (folder / "checkpoint-8" / m.STATE_FILE).is_file()
    assert not (tmp_path / "search" / "checkpoint-4").exists()
    resumed = m.CSLTrainerCallback(16, proxies=["csl", "aum"])
    trainer = m.CSLTrainer(model_init=lambda trial=None: _Plain(), args=hf["args"](tmp_path / "again"),
                           train_dataset=hf["train"], callbacks=[resumed])
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no "holds no csl_tracker.pt"
        trainer.train(resume_from_checkpoint=str(folder / "checkpoint-4"))
    assert resumed.tracker.epochs == 2 and resumed.scores().equals(want)


@pytest.mark.usefixtures("young_gc_in_accelerate")  # a full gc.collect per trial/retry frees nothing here
def test_each_search_trial_gets_a_record_of_its_own(hf, tmp_path: Path) -> None:
    """The callback is shared by every trial, and each trial trains a new model (`model_init`): the
    record went on across trials, so after two trials of 2 epochs csl summed 4 epochs of two
    different models. Now each train() with model_init starts a new record."""
    pytest.importorskip("ray")
    csl, _ = _trial(hf, tmp_path / "search", 0.1)
    _trial(hf, tmp_path / "search", 0.3, csl)
    alone, _ = _trial(hf, tmp_path / "alone", 0.3)
    assert csl.tracker.epochs == 2
    assert csl.scores().equals(alone.scores())


def test_a_checkpoint_pushed_to_the_hub_holds_the_tracker_state(hf, tmp_path: Path, monkeypatch) -> None:
    """The Trainer uploads a checkpoint (`_push_from_checkpoint`) before it calls `on_save`, where
    the callback wrote csl_tracker.pt: every pushed checkpoint lacked the record. The upload is
    replaced here by a look at what the folder holds when it starts."""
    from transformers import Trainer

    m = hf["m"]
    seen: list[tuple[str, bool]] = []
    monkeypatch.setattr(Trainer, "_push_from_checkpoint",
                        lambda self, folder: seen.append((Path(folder).name, (Path(folder) / m.STATE_FILE).is_file())))
    csl = m.CSLTrainerCallback(16)
    trainer = m.CSLTrainer(model=_Plain(), args=hf["args"](tmp_path / "out"), train_dataset=hf["train"],
                           callbacks=[csl])
    trainer.args.push_to_hub = True  # set after __init__, which would create the hub repository
    trainer.train()
    assert seen == [("checkpoint-4", True), ("checkpoint-8", True)]
    state = torch.load(tmp_path / "out" / "checkpoint-4" / m.STATE_FILE, weights_only=True)
    assert state["tracker"]["epochs"] == 1 and state["batches"] == 0


_HF_DDP = '''
import json, os, sys, warnings
import numpy as np, torch, datasets
from torch import nn
from transformers import TrainingArguments
from harness.integrations.transformers import CSLTrainer, CSLTrainerCallback, with_sample_index


class OneHot(nn.Module):
    def __init__(self, n):
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(n, 4, bias=False)

    def forward(self, x):
        return self.linear(x)


def run(n, batch, out):
    """One-hot inputs into a linear layer without bias: each sample's gradient is its own row's,
    so 2 ranks x 8 and 1 process x 16 give bitwise the same steps (tests/_lightning_ddp.py)."""
    x, y = torch.eye(n), torch.as_tensor(np.random.default_rng(0).integers(0, 4, n))
    train = with_sample_index(datasets.Dataset.from_dict({"x": x.tolist(), "labels": y.tolist()}).with_format("torch"))
    model = OneHot(n)
    csl = CSLTrainerCallback(n)
    args = TrainingArguments(output_dir=out, per_device_train_batch_size=batch, num_train_epochs=2, use_cpu=True,
                             report_to=[], logging_strategy="no", disable_tqdm=True, seed=0, learning_rate=0.5,
                             optim="sgd", save_strategy="no", dataloader_num_workers=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        CSLTrainer(model=model, args=args, train_dataset=train, callbacks=[csl]).train()
        scores = csl.scores()
    said = [str(w.message) for w in caught if "SampleTracker" in str(w.message)]
    return scores["csl"].tolist(), csl.tracker.epochs_presented().tolist(), said


out, batch = sys.argv[1], int(sys.argv[2])
rank = int(os.environ.get("RANK", "0"))
result = {str(n): run(n, batch, f"{out}/o{n}") for n in (48, 50)}
with open(f"{out}/rank{rank}.json", "w") as f:
    json.dump(result, f)
'''


@pytest.mark.slow  # 26 s: two DDP processes; DDP equality stays in test_integrations_lightning
def test_trainer_ddp_equals_one_process_and_accelerates_padding_is_no_repeat_warning(tmp_path: Path) -> None:
    """The Hugging Face Trainer on 2 CPU processes (torch.distributed.run, gloo). Accelerate's
    even_batches fills each rank's last batch with the epoch's first samples -- 14 repeats for 50
    samples in batches of 8 on 2 ranks -- and every DDP run warned that samples were presented more
    than once, blaming a sampler with replacement; the tracker allowed only a DistributedSampler's
    padding (world size - 1). The scores were right (each keeps its first presentation) and are
    checked here: both ranks agree, and without padding they equal one process's, bitwise."""
    pytest.importorskip("transformers")
    pytest.importorskip("datasets")
    script = tmp_path / "hf_ddp.py"
    script.write_text(_HF_DDP)
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH")) if p)}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          str(port), str(script), str(tmp_path / "ddp"), "8"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    one = subprocess.run([sys.executable, str(script), str(tmp_path / "one"), "16"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    ranks = [json.loads((tmp_path / "ddp" / f"rank{r}.json").read_text()) for r in (0, 1)]
    single = json.loads((tmp_path / "one" / "rank0.json").read_text())
    assert ranks[0] == ranks[1]
    csl48, presented48, said48 = ranks[0]["48"]
    assert csl48 == single["48"][0] and np.ptp(csl48) > 0 and said48 == []
    csl50, presented50, said50 = ranks[0]["50"]
    assert presented50 == [2] * 50 and np.isfinite(csl50).all()
    assert said50 == []  # was: "14 sample(s) were presented more than once in epoch 1 ..."


def test_with_sample_index_of_a_streaming_dataset_says_what_to_do(hf) -> None:
    """An IterableDataset (streaming) has no length: it failed with TypeError "object of type
    'IterableDataset' has no len()" (a torch one only later, in the DataLoader)."""
    import datasets

    rows = datasets.Dataset.from_dict({"x": [1, 2, 3], "label": [0, 1, 0]}).to_iterable_dataset()

    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            yield from ({"x": i} for i in range(3))

    from harness.errors import HarnessError

    for dataset in (rows, Stream()):
        with pytest.raises(HarnessError, match=r"no length or row access.*with_indices=True"):
            hf["m"].with_sample_index(dataset)


def test_float_labels_of_a_regression_head_are_refused_with_a_message(hf, tmp_path: Path) -> None:
    """Float labels (a regression dataset, or class ids stored as floats) reached cross_entropy and
    stopped training with RuntimeError "expected target dtype to be Long or Byte, but got Float"."""
    import datasets

    from harness.errors import HarnessError

    m = hf["m"]
    train = m.with_sample_index(datasets.Dataset.from_dict(
        {"x": [[0.0] * 4] * 4, "labels": [0.0, 1.0, 0.0, 1.0]}).with_format("torch"))
    trainer = m.CSLTrainer(model=_Plain(), args=hf["args"](tmp_path), train_dataset=train,
                           callbacks=[m.CSLTrainerCallback(4)])
    with pytest.raises(HarnessError, match=r"labels must be integer class ids, got torch.float32"):
        trainer.train()
