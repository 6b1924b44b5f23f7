"""The harness's loop holds training batches and records them once an epoch
(`harness.recorders.held`): the stored signals must be the ones batch-by-batch recording gives,
bit for bit on the CPU, with and without mid-epoch flushes, and each recorder must still be billed
its own time, the joining included."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

import harness.training as training
from harness.recorders import RecorderBank, RecorderRequest, RunContext
from harness.recorders import held as held_module
from harness.recorders.base import Recorder
from harness.timing import Meter, Stopwatch

CPU = torch.device("cpu")
TRAINING_PASS = [RecorderRequest.of(n) for n in ("train_loss", "train_correct", "train_margin", "train_prob")]


def _run(spec, data, monkeypatch, *, hold: bool, requests=TRAINING_PASS):
    """train_run with its bank holding batches or not (it holds them by default)."""
    def bank(ctx, requests, **kwargs):
        return RecorderBank(ctx, requests, **{**kwargs, "hold_batches": hold})

    monkeypatch.setattr(training, "RecorderBank", bank)
    return training.train_run(spec, data, requests, progress=False)


@pytest.mark.parametrize("max_rows", [None, 300, 1])
def test_held_recording_equals_batch_by_batch(base_spec, digits_noisy, monkeypatch, max_rows) -> None:
    """Every training-pass signal of a 3-epoch run, held (whole epochs; flushed every few
    batches; flushed every batch) against recorded batch by batch."""
    spec = replace(base_spec, recipe=replace(base_spec.recipe, epochs=3))
    plain = _run(spec, digits_noisy, monkeypatch, hold=False)
    if max_rows is not None:
        monkeypatch.setattr(held_module, "MAX_ROWS", max_rows)
    held = _run(spec, digits_noisy, monkeypatch, hold=True)
    assert set(held.arrays) == {r.key for r in TRAINING_PASS}
    for key, arrays in plain.arrays.items():
        for name, value in arrays.items():
            assert value.shape == (3, digits_noisy.n)
            np.testing.assert_array_equal(held.arrays[key][name], value, err_msg=f"{key}/{name}")
    assert held.history == plain.history
    for key in plain.recorder_seconds:
        assert held.recorder_seconds[key] > 0
        assert held.recorder_flops[key] == plain.recorder_flops[key]


def test_held_batches_wait_for_the_epochs_end() -> None:
    """Nothing is written until the checkpoint; the joined batch fills the row as the batches would."""
    ctx = RunContext(None, 2, None, 2, CPU, samples=5, classes=3)  # type: ignore[arg-type]
    bank = RecorderBank(ctx, [RecorderRequest.of("train_loss"), RecorderRequest.of("train_correct")],
                        hold_batches=True)
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 1.0], [5.0, 0.0, 0.0]])
    labels = torch.tensor([0, 0, 2, 1])
    loss = nn.functional.cross_entropy(logits, labels, reduction="none")
    bank.on_batch(0, torch.tensor([4, 1]), logits[:2], loss[:2], labels[:2])
    bank.on_batch(0, torch.tensor([0, 3]), logits[2:], loss[2:], labels[2:])
    assert torch.isnan(bank["train_loss"].buffers["loss"]).all()  # held, not yet recorded
    assert bank.held is not None and bank.held.rows == 4
    bank.on_epoch_end(0, 1, None)
    assert bank.held.rows == 0
    row = bank["train_loss"].buffers["loss"][0]
    np.testing.assert_array_equal(row[[4, 1, 0, 3]].numpy(), loss.numpy())
    assert torch.isnan(row[2])
    np.testing.assert_array_equal(bank["train_correct"].buffers["correct"][0, [4, 1, 0, 3]].numpy(),
                                  [1.0, 0.0, 1.0, 0.0])
    # a batch of the next epoch, read before its checkpoint: arrays() records what is held
    bank.on_batch(1, torch.tensor([2]), logits[:1], loss[:1], labels[:1])
    assert bank.arrays()["train_loss"]["loss"][1, 2] == pytest.approx(float(loss[0]))
    # a batch of another epoch arriving while batches are held records them under their own epoch
    bank.on_batch(0, torch.tensor([2]), logits[1:2], loss[1:2], labels[1:2])
    bank.on_batch(1, torch.tensor([0]), logits[2:3], loss[2:3], labels[2:3])
    bank.flush()
    rows = bank["train_loss"].buffers["loss"]
    assert float(rows[0, 2]) == pytest.approx(float(loss[1])) and float(rows[1, 0]) == pytest.approx(float(loss[2]))


class _PerBatch(Recorder):
    """A plugin recorder that does not declare `joins_batches`: it counts its calls."""

    name = "test_per_batch_calls"
    on_batches = True

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.calls: list[int] = []

    def on_batch(self, epoch, idx, logits, loss, labels) -> None:
        self.calls.append(int(idx.shape[0]))


def test_recorders_that_do_not_join_get_every_batch_as_it_comes() -> None:
    ctx = RunContext(None, 1, None, 2, CPU, samples=4, classes=2)  # type: ignore[arg-type]
    bank = RecorderBank(ctx, [RecorderRequest.of("train_loss")], hold_batches=True)
    plugin = bank.add("plugin", _PerBatch(ctx))
    assert isinstance(plugin, _PerBatch)
    for idx in ([0, 1], [2], [3]):
        bank.on_batch(0, torch.tensor(idx), torch.zeros(len(idx), 2), torch.ones(len(idx)),
                      torch.zeros(len(idx), dtype=torch.int64))
        assert plugin.calls[-1] == len(idx)  # called before the next batch arrives
    assert plugin.calls == [2, 1, 1]
    assert bank.meters["plugin"].sample_every > 1 and bank.meters["train_loss"].sample_every == 1
    bank.on_epoch_end(0, 1, None)
    assert plugin.calls == [2, 1, 1]
    np.testing.assert_array_equal(bank.arrays()["train_loss"]["loss"], [[1.0] * 4])


def test_joining_is_billed_to_each_recorder_that_reads_it() -> None:
    """The loss-only recorder pays for joining indices and losses; the logit recorders pay for the
    logits' join too; nobody pays twice."""
    ctx = RunContext(None, 1, None, 2, CPU, samples=4, classes=2)  # type: ignore[arg-type]
    bank = RecorderBank(ctx, [RecorderRequest.of("train_loss"), RecorderRequest.of("train_prob")],
                        hold_batches=True)
    charged: dict[str, list[Stopwatch]] = {k: [] for k in bank.meters}
    for key, meter in bank.meters.items():
        meter.charge = charged[key].append  # type: ignore[method-assign]
    for idx in ([0, 1], [2, 3]):
        bank.on_batch(0, torch.tensor(idx), torch.zeros(2, 2), torch.ones(2), torch.zeros(2, dtype=torch.int64))
    bank.flush()
    assert len(charged["train_loss"]) == 1 and len(charged["train_prob"]) == 2
    assert charged["train_loss"][0] is charged["train_prob"][0]  # the shared join, billed to both


def test_meter_charge_survives_a_checkpoint() -> None:
    meter = Meter(CPU)
    meter.run(lambda: None, units=4)
    watch = Stopwatch(CPU)
    watch.add(0.25)
    meter.charge(watch)
    assert meter.seconds() == pytest.approx(meter.first.seconds() + 0.25)
    state = meter.state()
    restored = Meter(CPU)
    restored.load(state)
    assert restored.seconds() == pytest.approx(meter.seconds())
    state.pop("charged")  # a checkpoint written before charges existed
    older = Meter(CPU)
    older.load(state)
    assert older.seconds() == pytest.approx(meter.seconds() - 0.25)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (run by benchmarks/run_gpu_checks.sh)")
def test_held_recording_on_cuda_agrees_to_float32_rounding(base_spec, digits, monkeypatch) -> None:
    """On a GPU, softmax and norms may reduce in another order for another row count: agreement to
    float32 rounding, the losses themselves exactly (they are copied, not recomputed)."""
    from harness.prepared import prepare

    data = prepare(base_spec.data, digits, torch.device("cuda"))
    spec = replace(base_spec, recipe=replace(base_spec.recipe, epochs=2))
    plain = _run(spec, data, monkeypatch, hold=False)
    held = _run(spec, data, monkeypatch, hold=True)
    np.testing.assert_array_equal(held.arrays["train_loss"]["loss"], plain.arrays["train_loss"]["loss"])
    for key, arrays in plain.arrays.items():
        for name, value in arrays.items():
            np.testing.assert_allclose(held.arrays[key][name], value, rtol=1e-6, atol=1e-6, err_msg=f"{key}/{name}")
