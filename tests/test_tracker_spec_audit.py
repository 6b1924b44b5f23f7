"""SampleTracker and its trainer integrations against the spec, from a user's side: a loop that
records under inference_mode, epochs that leave samples out (drop_last, a sampler with
replacement), and a run interrupted and resumed from a checkpoint -- plain loop, Lightning and the
Hugging Face Trainer -- which must score exactly as the uninterrupted run."""

from __future__ import annotations

import copy
import io
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from harness import SampleTracker
from harness.errors import HarnessError

N, C = 20, 3
_G = torch.Generator().manual_seed(0)
X, Y = torch.randn(N, C, generator=_G), torch.randint(0, C, (N,), generator=_G)


def _ce(idx: torch.Tensor, scale: float) -> torch.Tensor:
    return nn.functional.cross_entropy(X[idx] * scale, Y[idx], reduction="none")


# --- update() under torch.inference_mode -----------------------------------------------------------

def test_update_under_inference_mode_keeps_recording() -> None:
    """An epoch's first batch under inference_mode made its rows inference tensors: every later
    update outside it failed ("Inplace update to inference tensor"), losing the run."""
    t = SampleTracker(N)
    idx = torch.arange(N)
    with torch.inference_mode():
        t.update(idx[:8], logits=X[:8], labels=Y[:8])
    t.update(idx[8:], logits=X[8:], labels=Y[8:])
    t.end_epoch()
    t.update(idx, logits=2 * X, labels=Y)
    t.end_epoch()
    np.testing.assert_allclose(t.scores()["csl"], (_ce(idx, 1.0) + _ce(idx, 2.0)).numpy(), rtol=1e-6)


# --- samples an epoch leaves out -------------------------------------------------------------------

def test_samples_left_out_of_epochs_are_counted_and_named() -> None:
    """drop_last=True (or a sampler with replacement) leaves samples out of some epochs; their csl
    sums fewer epochs, which nothing said. Sample 19 is never presented (n one too large)."""
    batches = [torch.arange(0, 10), torch.arange(10, 19), torch.arange(5, 15)]  # epoch 2 misses 0-4, 15-18
    t = SampleTracker(N, proxies=["csl", "aum"])
    for epoch, idx in enumerate([torch.cat(batches[:2]), batches[2]]):
        t.update(idx, logits=X[idx] * (epoch + 1), labels=Y[idx])
        t.end_epoch()
    with pytest.warns(RuntimeWarning, match=r"9 sample\(s\) were presented in fewer than all 2 epochs \(first: "
                                            r"\[0, 1, 2, 3, 4, 15, 16, 17, 18\]\) and 1 sample\(s\) were never "
                                            r"presented \(first: \[19\]\).*epochs_presented\(\)"):
        table = t.scores()
    presented = t.epochs_presented()
    assert presented.tolist() == [1] * 5 + [2] * 10 + [1] * 4 + [0]
    want = np.zeros(N)
    for epoch, idx in enumerate([torch.arange(19), batches[2]]):
        want[idx.numpy()] += _ce(idx, epoch + 1.0).numpy()
    np.testing.assert_allclose(table["csl"], want, rtol=1e-6)  # the sum over the epochs presented
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t.scores(["aum"])  # a mean over presentations: nothing to say


def test_every_sample_in_every_epoch_says_nothing() -> None:
    t = SampleTracker(N, proxies=["csl"])
    for epoch in range(2):
        for idx in torch.randperm(N, generator=torch.Generator().manual_seed(epoch)).split(6):
            t.update(idx, losses=_ce(idx, 1.0))
        t.end_epoch()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t.scores()
    assert t.epochs_presented().tolist() == [2] * N


def test_the_suspects_grid_is_only_written_under_a_png_name(tmp_path: Path) -> None:
    """It is always PNG bytes: `path="suspects.pdf"` wrote a PNG named .pdf."""
    t = SampleTracker(N, proxies=["csl"])
    t.update(torch.arange(N), losses=_ce(torch.arange(N), 1.0))
    t.end_epoch()
    images = np.zeros((N, 4, 4), dtype=np.uint8)
    with pytest.raises(HarnessError, match=r"writes a PNG image; name it \*.png, got '.*suspects.pdf'"):
        t.plot_suspects(images, k=3, path=tmp_path / "suspects.pdf")
    assert not (tmp_path / "suspects.pdf").exists()
    assert t.plot_suspects(images, k=3, path=tmp_path / "suspects.png").read_bytes()[:4] == b"\x89PNG"


# --- state_dict / load_state_dict -----------------------------------------------------------------

def _batches(epoch: int) -> list[torch.Tensor]:
    out = list(torch.randperm(N, generator=torch.Generator().manual_seed(epoch)).split(6))
    return out + [torch.tensor([0, 0])] if epoch == 1 else out  # epoch 2 repeats sample 0


def _feed(t: SampleTracker, epoch: int, batches: list[torch.Tensor], losses_only: bool) -> None:
    for idx in batches:
        if losses_only:
            t.update(idx, losses=_ce(idx, epoch + 1.0))
        else:
            t.update(idx.numpy() if epoch % 2 else idx, logits=X[idx] * (epoch + 1), labels=Y[idx])


def _reloaded(t: SampleTracker, kwargs: dict) -> SampleTracker:
    buffer = io.BytesIO()
    torch.save(t.state_dict(), buffer)
    buffer.seek(0)
    fresh = SampleTracker(N, **kwargs)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    return fresh


def _run(kwargs: dict, cut: tuple[int, str] | None, evals: bool, losses_only: bool) -> tuple:
    t = SampleTracker(N, **kwargs)
    for epoch in range(4):
        batches = _batches(epoch)
        if cut == (epoch, "mid"):
            _feed(t, epoch, batches[:2], losses_only)
            t = _reloaded(t, kwargs)
            _feed(t, epoch, batches[2:], losses_only)
        else:
            _feed(t, epoch, batches, losses_only)
        t.end_epoch()
        if evals:
            t.eval_epoch(nn.Identity(), (X * (epoch + 1), Y))
        if cut == (epoch, "end"):
            t = _reloaded(t, kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the repeat of sample 0 is said once, in either run
        return t.scores(), t.epochs_presented()


@pytest.mark.parametrize("kwargs, evals, losses_only", [
    ({}, True, False),
    ({"proxies": ["csl", "aum"], "labels": Y.numpy()}, False, False),
    ({"proxies": ["csl", "final_loss", "in_confidence"]}, True, False),
    ({"running_sums": True}, False, True),
], ids=["all-with-eval-passes", "selected-with-labels", "last-eval-pass-only", "running-sums"])
def test_a_resumed_tracker_scores_as_the_uninterrupted_one(kwargs: dict, evals: bool, losses_only: bool) -> None:
    want, presented = _run(kwargs, None, evals, losses_only)
    for cut in [(0, "end"), (1, "mid"), (2, "mid"), (3, "end")]:
        got, got_presented = _run(kwargs, cut, evals, losses_only)
        assert list(got.columns) == list(want.columns)
        for column in got.columns:
            assert np.array_equal(got[column].to_numpy(), want[column].to_numpy(), equal_nan=True), (cut, column)
        assert np.array_equal(got_presented, presented)


def test_a_state_from_another_tracker_is_refused() -> None:
    t = SampleTracker(N, proxies=["csl"])
    t.update(torch.arange(N), losses=torch.ones(N))
    t.end_epoch()
    state = t.state_dict()
    for other, what in [(SampleTracker(N + 1, proxies=["csl"]), r"samples \(n\) = 20, this one has 21"),
                        (SampleTracker(N), r"proxies = \['csl'\], this one has None"),
                        (SampleTracker(N, proxies=["csl"], running_sums=True), "running_sums = False"),
                        (SampleTracker(N, proxies=["csl"], labels=Y), "other constructor labels")]:
        with pytest.raises(HarnessError, match=what):
            other.load_state_dict(state)
    with pytest.raises(HarnessError, match="not a SampleTracker state"):
        SampleTracker(N).load_state_dict({"epochs": 3})
    with pytest.raises(HarnessError, match="before the first update"):
        t.load_state_dict(state)  # a tracker that recorded already
    resumed = SampleTracker(N, proxies=["csl"])
    resumed.load_state_dict(state)
    assert resumed.scores()["csl"].tolist() == [1.0] * N  # scored at once, without a new batch


# --- Lightning: fit(ckpt_path=...) -------------------------------------------------------------------

def _lightning_setup():
    L = pytest.importorskip("lightning")
    from torch.utils.data import DataLoader, Sampler, TensorDataset

    from harness.integrations import WithIndex

    class EpochSampler(Sampler):
        """A permutation per epoch (Lightning calls set_epoch), the same in a resumed process."""

        def __init__(self) -> None:
            self.epoch = 0

        def set_epoch(self, epoch: int) -> None:
            self.epoch = epoch

        def __len__(self) -> int:
            return N

        def __iter__(self):
            return iter(torch.randperm(N, generator=torch.Generator().manual_seed(self.epoch)).tolist())

    class Module(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.net = nn.Linear(C, C)

        def training_step(self, batch, batch_idx):
            x, y, idx = batch
            logits = self.net(x)
            losses = nn.functional.cross_entropy(logits, y, reduction="none")
            return {"loss": losses.mean(), "losses": losses, "indices": idx, "logits": logits, "labels": y}

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.3, momentum=0.9)

    def loader() -> DataLoader:
        return DataLoader(WithIndex(TensorDataset(X, Y)), batch_size=8, sampler=EpochSampler())  # 3 batches

    return L, Module, loader


def test_lightning_fit_resumed_from_a_checkpoint_scores_as_the_uninterrupted_fit(tmp_path: Path) -> None:
    """Checkpoints at each epoch's last batch (every_n_train_steps=3: the epoch still open) and at
    its end (save_last); before, the callback kept no state and a resumed fit summed csl over the
    epochs after the resume only."""
    L, Module, loader = _lightning_setup()
    from lightning.pytorch.callbacks import ModelCheckpoint

    from harness.integrations.lightning import CSLCallback

    def fit(epochs: int, folder: Path, ckpt: Path | None = None, n: int = N) -> tuple[CSLCallback, object]:
        csl = CSLCallback(n)
        saves = [ModelCheckpoint(dirpath=folder / "steps", every_n_train_steps=3, save_top_k=-1),
                 ModelCheckpoint(dirpath=folder / "end", save_last=True)]
        trainer = L.Trainer(max_epochs=epochs, callbacks=[csl, *saves], accelerator="cpu", logger=False,
                            enable_progress_bar=False, enable_model_summary=False)
        trainer.fit(Module(), loader(), ckpt_path=ckpt)
        return csl, trainer

    csl, trainer = fit(3, tmp_path / "full")
    want = csl.scores()
    trainer.save_checkpoint(tmp_path / "after-scores.ckpt")  # a finished record saves nothing, and says nothing
    fit(2, tmp_path / "cut")
    last = tmp_path / "cut" / "end" / "last.ckpt"
    for ckpt in [last, tmp_path / "cut" / "steps" / "epoch=1-step=6.ckpt"]:
        assert fit(3, tmp_path / "resumed", ckpt)[0].scores().equals(want), ckpt.name
    with pytest.raises(HarnessError, match=r"samples \(n\) = 20, this one has 21"):
        fit(3, tmp_path / "other", last, n=N + 1)
    stateless = torch.load(last, weights_only=True)
    stateless["callbacks"] = {k: v for k, v in stateless["callbacks"].items() if "CSLCallback" not in k}
    torch.save(stateless, tmp_path / "stateless.ckpt")
    with pytest.warns(RuntimeWarning, match="resumes at epoch 2 but the callback has no record of the epochs before"):
        fit(3, tmp_path / "old", tmp_path / "stateless.ckpt")


# --- Hugging Face: train(resume_from_checkpoint=...) -----------------------------------------------

def test_trainer_resumed_from_a_checkpoint_scores_as_the_uninterrupted_run(tmp_path: Path) -> None:
    """Checkpoints mid-epoch (step 3 of 5) and at an epoch's last step (5); before, nothing of the
    tracker was saved and a resumed run recorded only the steps after the resume."""
    pytest.importorskip("transformers")
    datasets = pytest.importorskip("datasets")
    sys.path.insert(0, str(Path(__file__).parent))
    import _hf_tiny as tiny  # noqa: E402  (offline)

    sys.path.pop(0)
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, TrainingArguments

    from harness.integrations.transformers import STATE_FILE, CSLTrainer, CSLTrainerCallback, with_sample_index

    n = 40
    tok = AutoTokenizer.from_pretrained(str(tiny.make_tokenizer(tmp_path / "tok")))
    texts, y = tiny.text_corpus(n)
    enc = tok(texts, truncation=True, max_length=32)
    train = with_sample_index(datasets.Dataset.from_dict(
        {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "label": y.tolist()}))
    torch.manual_seed(0)
    model0 = BertForSequenceClassification(BertConfig(
        vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=64, num_labels=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))

    def run(out: Path, resume: Path | None = None) -> CSLTrainerCallback:
        saves = dict(save_strategy="steps", save_steps=1) if resume is None else dict(save_strategy="no")
        args = TrainingArguments(output_dir=str(out), per_device_train_batch_size=8, num_train_epochs=2,
                                 use_cpu=True, report_to=[], logging_strategy="no", disable_tqdm=True, seed=0,
                                 learning_rate=0.05, optim="sgd", dataloader_num_workers=0, **saves)
        csl = CSLTrainerCallback(n)
        CSLTrainer(model=copy.deepcopy(model0), args=args, train_dataset=train, processing_class=tok,
                   callbacks=[csl]).train(resume_from_checkpoint=None if resume is None else str(resume))
        return csl

    want = run(tmp_path / "full").scores()
    for step in (3, 5):  # mid-epoch, and the last step of epoch 1 (5 steps per epoch)
        ckpt = tmp_path / "full" / f"checkpoint-{step}"
        assert (ckpt / STATE_FILE).is_file()
        assert run(tmp_path / f"resumed{step}", ckpt).scores().equals(want), step
    (tmp_path / "full" / "checkpoint-3" / STATE_FILE).unlink()  # a checkpoint of an older memprox
    with pytest.warns(RuntimeWarning, match="holds no csl_tracker.pt"):
        run(tmp_path / "old", tmp_path / "full" / "checkpoint-3")


# --- review of the checkpoint code: damaged states, failed loads, Lightning and HF corner cases ----

def _one_epoch_state() -> tuple[dict, list[float]]:
    t = SampleTracker(N, labels=Y)
    t.update(torch.arange(N), logits=X)
    t.end_epoch()
    state = t.state_dict()
    return state, t.scores()["csl"].tolist()


def test_a_damaged_state_is_refused_at_load_before_anything_changes() -> None:
    """A state missing a key, with a truncated or retyped buffer, or an edited epoch count failed
    deep inside (KeyError, a broadcast error, a stack error at scores()) -- some only at the next
    update(), with the tracker half-restored and refusing another load -- or was taken silently
    (float labels cast to int, 3 epochs scored from 1 row)."""
    state, want = _one_epoch_state()
    damaged = []
    for drop in ("pending", "signals"):
        damaged.append({k: v for k, v in state.items() if k != drop})
    for edit in ("seen", "row", "given", "epochs"):
        bad = copy.deepcopy(state)
        if edit == "seen":
            del bad["signals"]["seen"]
        elif edit == "row":
            bad["signals"]["bank"]["train_loss"]["loss"][0] = bad["signals"]["bank"]["train_loss"]["loss"][0][:5]
        elif edit == "given":
            bad["signals"]["given"] = bad["signals"]["given"].float() + 0.5
        else:
            bad["epochs"] = 3
        damaged.append(bad)
    messages = []
    t = SampleTracker(N, labels=Y)
    for bad in damaged:
        with pytest.raises(HarnessError, match="load_state_dict") as info:
            t.load_state_dict(bad)
        messages.append(str(info.value))
    assert "KeyError: 'pending'" in messages[0] and "KeyError: 'seen'" in messages[2]
    assert "train_loss loss row is (5,) torch.float32, this tracker's is (21,)" in messages[3]
    assert "given is (21,) torch.float32, this tracker's is (21,) torch.int64" in messages[4]
    assert "1 rows of train_loss loss for 3 epochs" in messages[5]
    assert t.epochs == 0
    t.load_state_dict(state)  # the refusals changed nothing: the right state still loads
    t.update(torch.arange(N), logits=X)
    t.end_epoch()
    assert t.scores()["csl"].tolist() == [2 * v for v in want]


def test_a_load_that_fails_on_its_device_leaves_the_tracker_loadable() -> None:
    """load_state_dict(device=...) on a device that cannot be used left the tracker with that device
    and the saved epoch count: a second load was refused and every update failed."""
    state, want = _one_epoch_state()
    t = SampleTracker(N, labels=Y)
    with pytest.raises((RuntimeError, AssertionError)):
        t.load_state_dict(state, device="cuda:99")
    assert t.epochs == 0
    t.load_state_dict(state)
    t.update(torch.arange(N), logits=X)
    t.end_epoch()
    assert t.scores()["csl"].tolist() == [2 * v for v in want]


def test_lightning_two_callbacks_a_resumed_finished_fit_and_a_second_fit(tmp_path: Path) -> None:
    """Two CSLCallbacks (other proxies) made fit() raise "more than one stateful callback" since the
    callback has a state; a fit resumed from its last epoch's checkpoint trains nothing, calls no
    on_train_start, and scores() said "no epoch recorded" with the record in the checkpoint; the
    same callbacks in a second fit(ckpt_path="last") -- which went on recording before the callback
    had a state -- were refused ("load_state_dict() resumes a new tracker")."""
    L, Module, loader = _lightning_setup()
    from lightning.pytorch.callbacks import ModelCheckpoint

    from harness.integrations.lightning import CSLCallback

    def fit(folder: Path, ckpt: Path | str | None = None, epochs: int = 2, csl: list | None = None,
            module: object = None) -> list[CSLCallback]:
        csl = csl or [CSLCallback(N), CSLCallback(N, proxies=["csl"], running_sums=True)]
        trainer = L.Trainer(max_epochs=epochs, callbacks=[*csl, ModelCheckpoint(dirpath=folder, save_last=True)],
                            accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
        trainer.fit(module or Module(), loader(), ckpt_path=ckpt)
        return csl

    full, running = fit(tmp_path / "full")
    want = full.scores()
    np.testing.assert_allclose(running.scores()["csl"], want["csl"], rtol=1e-6)
    again, running_again = fit(tmp_path / "again", tmp_path / "full" / "last.ckpt")
    assert again.scores().equals(want)
    assert running_again.scores()["csl"].equals(running.scores()["csl"])
    module = Module()
    first = fit(tmp_path / "twice", epochs=1, module=module)
    shutil.copy(tmp_path / "twice" / "last.ckpt", tmp_path / "one.ckpt")
    assert fit(tmp_path / "twice", "last", csl=first, module=module)[0].scores().equals(want)
    with pytest.raises(HarnessError, match=r"CSLCallback: this callback ended its record \(scores\(\)\)"):
        fit(tmp_path / "x", tmp_path / "one.ckpt", epochs=3, csl=first)
    with pytest.raises(HarnessError, match=r"recorded 2 epoch\(s\) and 0 batch\(es\), the checkpoint holds 1 and 0"):
        fit(tmp_path / "y", tmp_path / "one.ckpt", epochs=3, csl=[first[1]])


def test_trainer_checkpoints_on_each_node_get_the_tracker_state(tmp_path: Path) -> None:
    """With save_on_each_node the Trainer writes a checkpoint on every node's local rank 0; the
    state went only to world rank 0's, so another node resumed without it (and its ranks then
    disagreed with node 0's). And the same callback resuming its own last checkpoint (a second
    train() in one process) was refused ("load_state_dict() resumes a new tracker")."""
    pytest.importorskip("transformers")
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from harness.integrations.transformers import STATE_FILE, CSLTrainerCallback

    args = TrainingArguments(output_dir=str(tmp_path), save_on_each_node=True, use_cpu=True, report_to=[])
    csl = CSLTrainerCallback(N)
    csl.record(torch.arange(N), _ce(torch.arange(N), 1.0), X, Y)
    (tmp_path / "checkpoint-3").mkdir()
    node1 = TrainerState(global_step=3, epoch=0.5, is_world_process_zero=False)  # node 1's local rank 0
    csl.on_save(args, node1, TrainerControl())
    assert (tmp_path / "checkpoint-3" / STATE_FILE).is_file()
    csl.load(tmp_path / "checkpoint-3")  # the same callback, a second train(resume_from_checkpoint=...)
    csl.on_train_begin(args, node1, TrainerControl())  # its own last checkpoint: it goes on recording
    csl.record(torch.arange(N), _ce(torch.arange(N), 2.0), X * 2, Y)  # repeats, dropped as usual
    csl.on_epoch_end(args, node1, TrainerControl())
    resumed = CSLTrainerCallback(N)
    resumed.load(tmp_path / "checkpoint-3")
    resumed.on_train_begin(args, node1, TrainerControl())
    resumed.on_epoch_end(args, node1, TrainerControl())
    np.testing.assert_allclose(resumed.scores()["csl"], _ce(torch.arange(N), 1.0).numpy(), rtol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the repeats
        np.testing.assert_allclose(csl.scores()["csl"], _ce(torch.arange(N), 1.0).numpy(), rtol=1e-6)
