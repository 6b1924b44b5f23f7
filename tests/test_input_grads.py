"""Input-gradient recorder and the proxies that read it (loss sensitivity, learning time, CSG)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from harness.cli import main
from harness.datasets import load_dataset
from harness.errors import HarnessError
from harness.jobs import make_manifest
from harness.models import build_model
from harness.prepared import PreparedData, prepare
from harness.recipe import Recipe
from harness.recorders import RECORDERS, Recorder, RecorderRequest, RunContext, build_recorder
from harness.recorders.input_grads import eval_mode, per_sample_input_grads
from harness.runspec import DataSpec, RunSpec
from harness.store import RunStore
from harness.training import train_run
from proxies import ScoreContext, make_proxy
from proxies.learning_time import learning_time

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny MLP: extra intra-op threads only contend with each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _data(n: int) -> PreparedData:
    return prepare(DataSpec(subset=n), load_dataset("digits", subset=n), CPU)


def _single_sample_grads(model: nn.Module, data: PreparedData) -> torch.Tensor:
    """Reference: one autograd call per sample, batch of one, eval mode."""
    rows = []
    with eval_mode(model):
        for i in range(data.n):
            x = data.inputs(torch.tensor([i])).clone().requires_grad_(True)
            # x * 1: a non-leaf model input, which torch's flop counter (around recorders) requires
            loss = nn.functional.cross_entropy(model(x * 1), data.y[i : i + 1])
            (g,) = torch.autograd.grad(loss, x)
            rows.append(g[0])
    return torch.stack(rows)


def _trained_bn_cnn(data: PreparedData) -> nn.Module:
    """small_cnn with non-trivial batch-norm statistics, so train-mode gradients would mix samples."""
    torch.manual_seed(0)
    model = build_model("small_cnn", (1, 8, 8), data.num_classes)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = data.inputs(torch.arange(data.n)), data.y
    for _ in range(3):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    opt.zero_grad(set_to_none=True)
    return model


def test_per_sample_grads_match_single_sample_autograd_including_last_partial_batch() -> None:
    data = _data(10)
    model = _trained_bn_cnn(data)
    model.train()  # the recorder must switch to eval mode itself and switch back
    ctx = RunContext(data, epochs=2, train_idx=torch.arange(10), batch_size=1, device=CPU)  # eval batches 4, 4, 2
    rec = build_recorder(RecorderRequest.of("input_grads"), ctx)
    rec.on_epoch_end(1, 1, model)
    assert model.training
    ref = _single_sample_grads(model, data).flatten(1)
    arrays = rec.arrays()
    np.testing.assert_allclose(arrays["l1"][1], ref.abs().sum(1).numpy(), rtol=1e-5)
    np.testing.assert_allclose(arrays["l2"][1], ref.norm(dim=1).numpy(), rtol=1e-5)
    np.testing.assert_allclose(arrays["sq"][1], (ref**2).sum(1).numpy(), rtol=1e-5)
    assert np.isnan(arrays["l1"][0]).all()  # only the epoch it was called for is written
    # the function itself, on the last partial batch: exact per-sample rows, parameters untouched
    with eval_mode(model):
        grads, losses = per_sample_input_grads(model, data.inputs(torch.arange(8, 10)), data.y[8:10])
    torch.testing.assert_close(grads, ref[8:10].reshape(grads.shape), rtol=1e-5, atol=1e-7)
    assert losses.shape == (2,) and all(p.grad is None for p in model.parameters())


class _SingleSampleGrads(Recorder):
    """Test-only recorder: the same norms, computed independently one sample at a time."""

    name = "test_single_sample_grads"
    phases = (1,)

    def __init__(self, ctx: RunContext) -> None:
        super().__init__(ctx)
        for s in ("l1", "l2", "sq"):
            self.buffer(s, (ctx.epochs, ctx.n), fill=float("nan"))

    def on_epoch_end(self, epoch: int, phase: int, model: nn.Module) -> None:
        g = _single_sample_grads(model, self.ctx.data).flatten(1)
        self.buffers["l1"][epoch] = g.abs().sum(1)
        self.buffers["l2"][epoch] = g.norm(dim=1)
        self.buffers["sq"][epoch] = (g**2).sum(1)


def test_proxies_on_a_recorded_run_match_single_sample_recomputation(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(RECORDERS._items, _SingleSampleGrads.name, _SingleSampleGrads)
    data = _data(150)
    recipe = Recipe(lr=0.05, weight_decay=0.0, batch_size=32, epochs=3, schedule="constant", augment=False)
    spec = RunSpec(data=data.spec, model="mlp", recipe=recipe, seed=0)
    requests = [RecorderRequest.of("input_grads"), RecorderRequest.of(_SingleSampleGrads.name)]
    out = train_run(spec, data, requests, progress=False)
    run = RunStore(tmp_path / "store").put(spec, out.arrays, make_manifest(spec, out, "single", "cpu"))
    ref = run.arrays(_SingleSampleGrads.name)
    got = run.arrays("input_grads")
    for key in ("l1", "l2", "sq"):
        np.testing.assert_allclose(got[key], ref[key], rtol=1e-4)
    ctx = ScoreContext(base=spec, labels=data.labels, num_classes=data.num_classes, runs={spec: run})
    ls1 = make_proxy("loss_sensitivity").score(ctx)
    ls2 = make_proxy("loss_sensitivity", norm=2).score(ctx)
    np.testing.assert_allclose(ls1, ref["l1"].mean(0), rtol=1e-4)
    np.testing.assert_allclose(ls2, ref["l2"].mean(0), rtol=1e-4)
    assert not np.allclose(ls1, ls2)  # the norm parameter matters (l1 >= l2, equal only for 1-sparse grads)
    assert (ls1 >= ls2 * (1 - 1e-6)).all()
    np.testing.assert_allclose(make_proxy("csg").score(ctx), ref["l2"].sum(0), rtol=1e-4)
    np.testing.assert_array_equal(make_proxy("learning_time").score(ctx), learning_time(got["sq"]))


def test_loss_sensitivity_rejects_other_norms() -> None:
    with pytest.raises(HarnessError, match="one of 1, 2"):
        make_proxy("loss_sensitivity", norm=3)


def test_end_to_end_one_run_one_input_grads_recorder(tmp_path) -> None:
    store, out = tmp_path / "store", tmp_path / "out"
    rc = main(["run", "--epochs", "5", "--seeds", "1", "--noise-rates", "0.1", "--tasks", "mislabeled",
               "--proxies", "loss_sensitivity,learning_time,csg,curvature", "--proxy-arg", "curvature.n=2",
               "--device", "cpu", "--store", str(store), "--out", str(out), "--no-progress",
               "--executor", "inprocess"])  # trained here: a pool's workers cost seconds of imports
    assert rc == 0
    runs = list((store / "runs").iterdir())
    assert len(runs) == 1
    manifest = json.loads((runs[0] / "manifest.json").read_text())
    keys = list(manifest["recorders"])
    assert [k for k in keys if k.startswith("input_grads")] == ["input_grads"]
    assert sorted(keys) == ["curvature[every=1,h=0.001,n=2]", "input_grads"]
    raw = pd.read_csv(out / "raw.csv")
    auroc = raw[raw.metric == "auroc"]
    assert set(auroc.proxy) == {"loss_sensitivity", "learning_time", "csg", "curvature(n=2)"}
    assert auroc.value.between(0, 1).all()
    scores = pd.read_csv(next((out / "scores").iterdir()))
    assert np.isfinite(scores[["loss_sensitivity", "learning_time", "csg", "curvature(n=2)"]].to_numpy()).all()


# --- every k-th checkpoint (issue 19: full CIFAR-10 on a CPU) ----------------------------------


def test_input_grads_every_k_scores_every_kth_checkpoint_and_the_last(digits_noisy, base_spec) -> None:
    spec = RunSpec(base_spec.data, "mlp", Recipe(optimizer="sgd", lr=0.05, batch_size=64, epochs=5,
                                                  schedule="cosine", milestones=(), augment=False), 0)
    every1, every2 = RecorderRequest.of("input_grads"), RecorderRequest.of("input_grads", every=2)
    out = train_run(spec, digits_noisy, [every1, every2], progress=False)
    full, sparse = out.arrays[every1.key], out.arrays[every2.key]
    for name in ("l1", "l2", "sq"):
        scored = [1, 3, 4]  # epochs 2 and 4 (0-based 1, 3) and the last
        np.testing.assert_array_equal(sparse[name][scored], full[name][scored])
        assert np.isnan(sparse[name][[0, 2]]).all()
    assert out.recorder_flops[every2.key] * 5 == pytest.approx(out.recorder_flops[every1.key] * 3, rel=0.01)


def test_every_1_keeps_the_request_that_stored_runs_carry() -> None:
    """Runs stored before `every` existed are addressed by the key `input_grads`: still reused."""
    for name in ("loss_sensitivity", "csg", "learning_time"):
        assert [r.key for r in make_proxy(name).recorders] == ["input_grads"]
    assert [r.key for r in make_proxy("csg", every=3).recorders] == ["input_grads[every=3]"]
    with pytest.raises(HarnessError, match="loss_sensitivity.every must be an integer >= 1"):
        make_proxy("loss_sensitivity", every=0)


def test_every_k_proxies_average_and_sum_the_scored_checkpoints() -> None:
    l1 = np.array([[np.nan, np.nan], [1.0, 2.0], [np.nan, np.nan], [3.0, 6.0]])
    request = RecorderRequest.of("input_grads", every=2)

    class Run:
        def arrays(self, key):
            assert key == request.key
            return {"l1": l1, "l2": 2 * l1, "sq": 4 * l1 * l1}

    base = RunSpec(DataSpec(), "mlp", Recipe(), 0)
    ctx = ScoreContext(base=base, labels=np.zeros(2, dtype=np.int64), num_classes=2, runs={base: Run()})
    np.testing.assert_array_equal(make_proxy("loss_sensitivity", every=2).score(ctx), [2.0, 4.0])
    np.testing.assert_array_equal(make_proxy("csg", every=2).score(ctx), [8.0, 16.0])
