"""Train/eval modes around every pass that runs between training steps (attrev31).

The refactor that merged three save/eval/restore copies into `recorders.base.eval_mode` promised no
behaviour change. These tests pin what 9b2283e did, on models handed over in train mode, in eval mode,
with a BatchNorm frozen in eval inside a training model, and with a `train()` override that keeps its
BatchNorms frozen: during the pass every module is in eval mode (no batch statistics move), afterwards
the model is as `model.train(was_training)` leaves it (the loop calls `model.train()` at every epoch, so
a mixed mode never survives an epoch of `train_run` either), grad mode is back on, and the pass's
numbers are those of an eval-mode copy. The file passes unchanged at 9b2283e and at the refactor.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn

from harness.datasets import load_dataset
from harness.models import build_model
from harness.prepared import PreparedData, prepare
from harness.recorders import RecorderRequest, RunContext, build_recorder, eval_batches
from harness.runspec import DataSpec
from harness.training import _test_accuracy

CPU = torch.device("cpu")
N = 24


class _FrozenNorm(nn.Module):
    """A user's model whose `train()` keeps every BatchNorm in eval (a common fine-tuning pattern)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)

    def train(self, mode: bool = True) -> _FrozenNorm:
        super().train(mode)
        for m in self.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        return self


@pytest.fixture(scope="module")
def data() -> PreparedData:
    return prepare(DataSpec(subset=N), load_dataset("digits", subset=N), CPU)


def _model(kind: str, data: PreparedData) -> nn.Module:
    torch.manual_seed(0)
    net = build_model("small_cnn", tuple(data.x.shape[1:]), data.num_classes)
    with torch.no_grad():  # non-trivial running statistics: train and eval mode give different logits
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    if kind == "train":
        return net.train()
    if kind == "eval":
        return net.eval()
    if kind == "mixed":
        net.train()
        next(m for m in net.modules() if isinstance(m, nn.BatchNorm2d)).eval()
        return net
    return _FrozenNorm(net).train()


def _modes(model: nn.Module) -> list[bool]:
    return [m.training for m in model.modules()]


def _expected_after(model: nn.Module) -> list[bool]:
    """What `model.train(was_training)` (9b2283e's restore, in all three copies) leaves."""
    return _modes(copy.deepcopy(model).train(model.training))


def _watch(model: nn.Module) -> list[bool]:
    """Each forward's training flags of every module, seen during the pass."""
    seen: list[bool] = []
    for m in model.modules():
        m.register_forward_pre_hook(lambda mod, args: seen.append(mod.training))
    return seen


def _check(model: nn.Module, run: Callable[[nn.Module], object]) -> object:
    want = _expected_after(model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    seen = _watch(model)
    out = run(model)
    assert seen and not any(seen)  # every module ran in eval mode
    assert _modes(model) == want
    assert torch.is_grad_enabled()
    for k, v in model.state_dict().items():  # no running statistic moved
        assert torch.equal(v, state[k]), k
    return out


def _eval_copy(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).eval()


KINDS = ("train", "eval", "mixed", "frozen_override")


@pytest.mark.parametrize("kind", KINDS)
def test_test_accuracy_runs_in_eval_mode_and_restores(kind: str, data: PreparedData) -> None:
    model = _model(kind, data)
    ref = _eval_copy(model)
    x, y = data.test_inputs()
    with torch.no_grad():
        want = float((ref(x).argmax(1) == y).double().mean())
    assert _check(model, lambda m: _test_accuracy(m, data, 7)) == want


@pytest.mark.parametrize("how", ("break", "close", "raise", "exhaust"))
@pytest.mark.parametrize("kind", KINDS)
def test_eval_batches_left_early_restores(kind: str, how: str, data: PreparedData) -> None:
    model = _model(kind, data)
    ref = _eval_copy(model)
    idx = torch.arange(N)

    def run(m: nn.Module) -> list[torch.Tensor]:
        got: list[torch.Tensor] = []
        gen = eval_batches(m, data, idx, 5)
        if how == "break":
            for _, logits in gen:
                got.append(logits)
                break
            del gen
        elif how == "close":
            got.append(next(gen)[1])
            gen.close()
        elif how == "raise":
            with pytest.raises(KeyError):
                for _, logits in gen:
                    got.append(logits)
                    raise KeyError("consumer")
            del gen
        else:
            got = [logits for _, logits in gen]
        return got

    got = _check(model, run)
    with torch.no_grad():
        want = torch.cat([ref(data.inputs(idx[s : s + 5])) for s in range(0, N, 5)])  # the pass's batches
    assert torch.equal(torch.cat(got), want[: sum(len(g) for g in got)])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("request_", (RecorderRequest.of("input_grads"),
                                      RecorderRequest.of("curvature", n=1, h=1e-3, every=1)),
                         ids=("input_grads", "curvature"))
def test_gradient_recorders_run_in_eval_mode_and_restore(kind: str, request_: RecorderRequest,
                                                         data: PreparedData) -> None:
    def record(m: nn.Module) -> dict:
        ctx = RunContext(data, epochs=1, train_idx=torch.arange(N), batch_size=8, device=CPU, seed=3)
        rec = build_recorder(request_, ctx)
        rec.on_epoch_end(0, 1, m)
        return {k: v.copy() for k, v in rec.arrays().items()}

    model = _model(kind, data)
    want = record(_eval_copy(model))
    got = _check(model, record)
    assert set(got) == set(want) and want
    for k in want:
        assert got[k].tobytes() == want[k].tobytes() and not np.isnan(want[k]).all(), k
