"""Finite-difference curvature: closed-form quadratic cases, a linear-softmax model with a known
Hessian, the checkpoint schedule, and the proxy's request."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from harness.datasets import load_dataset
from harness.errors import HarnessError
from harness.prepared import PreparedData, prepare
from harness.recipe import Recipe
from harness.recorders import RecorderRequest, RunContext, build_recorder
from harness.recorders.curvature import curvature_seed, finite_difference_curvature, rademacher
from harness.runspec import DataSpec, RunSpec
from proxies import make_proxy

CPU = torch.device("cpu")


def _quadratic_grad_fn(a: torch.Tensor, b: torch.Tensor):
    """Per-row gradient of l(x) = 1/2 x^T A x + b^T x, by autograd on the loss itself."""

    def grad_fn(x: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            loss = 0.5 * ((x @ a) * x).sum(1) + x @ b
            (g,) = torch.autograd.grad(loss.sum(), x)
        return g

    return grad_fn


def _symmetric(d: int, seed: int) -> torch.Tensor:
    m = torch.randn(d, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return m + m.T


def test_quadratic_equals_mean_norm_of_h_a_v_with_the_same_draws() -> None:
    d, rows, n, h = 6, 5, 7, 1e-3
    a, b = _symmetric(d, 0), torch.arange(d, dtype=torch.float64)
    x = torch.randn(rows, d, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    got = finite_difference_curvature(_quadratic_grad_fn(a, b), x, n, h, torch.Generator().manual_seed(42))
    gen = torch.Generator().manual_seed(42)
    draws = [rademacher(x.shape, gen, CPU).double() for _ in range(n)]
    want = torch.stack([(h * v @ a).norm(dim=1) for v in draws]).mean(0)  # A symmetric: (Av)^T = v^T A
    torch.testing.assert_close(got, want, rtol=1e-9, atol=0.0)
    assert all(set(v.unique().tolist()) == {-1.0, 1.0} for v in draws)


def test_reflection_curvature_is_h_c_sqrt_d_for_every_draw() -> None:
    # A = c (I - 2uu^T) is symmetric and c times orthogonal, so ||hAv|| = h c ||v|| = h c sqrt(d) for any v
    d, c, h = 16, 3.0, 1e-2
    u = torch.randn(d, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    u = u / u.norm()
    a = c * (torch.eye(d, dtype=torch.float64) - 2 * torch.outer(u, u))
    x = torch.randn(4, d, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    got = finite_difference_curvature(_quadratic_grad_fn(a, torch.zeros(d, dtype=torch.float64)), x, 3, h,
                                      torch.Generator().manual_seed(0))
    torch.testing.assert_close(got, torch.full((4,), h * c * np.sqrt(d), dtype=torch.float64), rtol=1e-9, atol=0.0)


def _data(n: int) -> PreparedData:
    return prepare(DataSpec(subset=n), load_dataset("digits", subset=n), CPU)


def test_recorder_matches_closed_form_hessian_of_a_linear_softmax_model() -> None:
    # logits = W x + c: the input Hessian of cross-entropy is W^T (diag(p) - p p^T) W, so the finite
    # difference equals h H v up to O(h^2)
    torch.manual_seed(0)
    data, n_draws, h, batch = _data(20), 3, 1e-3, 2  # eval batches of 4*2: 8, 8, 4
    linear = nn.Linear(64, data.num_classes)
    model = nn.Sequential(nn.Flatten(), linear)
    ctx = RunContext(data, epochs=2, train_idx=torch.arange(data.n), batch_size=batch, device=CPU)
    rec = build_recorder(RecorderRequest.of("curvature", n=n_draws, h=h, every=1), ctx)
    rec.on_epoch_end(1, 1, model)
    got = rec.arrays()["curvature"]
    assert np.isnan(got[0]).all()

    w = linear.weight.detach().double()
    x = data.inputs(torch.arange(data.n)).double()
    p = torch.softmax(x.flatten(1) @ w.T + linear.bias.detach().double(), 1)
    hess = torch.einsum("kd,nkl,le->nde", w, torch.diag_embed(p) - p[:, :, None] * p[:, None, :], w)
    gen = torch.Generator().manual_seed(curvature_seed(0, 1))
    want = []
    step = ctx.eval_batch_size
    for start in range(0, data.n, step):
        sl = slice(start, start + step)
        vs = [rademacher(x[sl].shape, gen, CPU).double().flatten(1) for _ in range(n_draws)]
        want.append(torch.stack([(h * torch.einsum("nde,ne->nd", hess[sl], v)).norm(dim=1) for v in vs]).mean(0))
    np.testing.assert_allclose(got[1], torch.cat(want).numpy(), rtol=5e-3)


def test_schedule_every_k_and_last_epoch_and_proxy_nanmean(score_ctx) -> None:
    torch.manual_seed(0)
    data = _data(12)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, data.num_classes))
    ctx = RunContext(data, epochs=5, train_idx=torch.arange(data.n), batch_size=5, device=CPU)
    rec = build_recorder(RecorderRequest.of("curvature", n=2, h=1e-3, every=2), ctx)
    for epoch in range(5):
        rec.on_epoch_end(epoch, 1, model)
    c = rec.arrays()["curvature"]
    assert [bool(np.isfinite(c[e]).all()) for e in range(5)] == [False, True, False, True, True]
    assert np.isnan(c[[0, 2]]).all() and (c[[1, 3, 4]] > 0).all()
    # same model, different checkpoints -> different draws; same checkpoint again -> identical
    assert not np.array_equal(c[1], c[3])
    again = build_recorder(RecorderRequest.of("curvature", n=2, h=1e-3, every=2), ctx)
    again.on_epoch_end(3, 1, model)
    np.testing.assert_array_equal(again.arrays()["curvature"][3], c[3])

    proxy = make_proxy("curvature", n=2, every=2)
    spec = RunSpec(data=data.spec, model="mlp", recipe=Recipe(epochs=5), seed=0)
    (need,) = proxy.needs(spec)
    (request,) = need.recorders
    assert request == RecorderRequest.of("curvature", n=2, h=1e-3, every=2)
    ctx_s = score_ctx({request.key: rec.arrays()})
    np.testing.assert_allclose(proxy.score(ctx_s), c[[1, 3, 4]].mean(0), rtol=1e-6)


def test_proxy_defaults_label_and_validation() -> None:
    proxy = make_proxy("curvature")
    assert proxy.params == {"n": 10, "h": 1e-3, "every": 1} and proxy.label == "curvature"
    assert proxy.request.key == "curvature[every=1,h=0.001,n=10]"
    assert make_proxy("curvature", n=2).label == "curvature(n=2)"
    for bad in ({"n": 0}, {"n": 2.5}, {"h": 0.0}, {"every": 0}):
        with pytest.raises(HarnessError):
            make_proxy("curvature", **bad)


def test_second_phase_does_not_overwrite_phase_one() -> None:
    """A two-phase run calls every recorder at each phase's checkpoints; curvature records phase 1
    only, like the other phase-1 recorders (a phase-2 call used to overwrite the same epoch row)."""
    torch.manual_seed(0)
    data = _data(12)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, data.num_classes))
    ctx = RunContext(data, epochs=2, train_idx=torch.arange(data.n), batch_size=4, device=CPU)
    rec = build_recorder(RecorderRequest.of("curvature", n=2, h=1e-3, every=1), ctx)
    rec.on_epoch_end(1, 1, model)
    before = rec.arrays()["curvature"].copy()
    with torch.no_grad():
        model[1].weight.mul_(5.0)  # phase 2 trains on: a different model at the same epoch index
    assert not rec.active(1, 2)
    rec.on_epoch_end(1, 2, model)
    np.testing.assert_array_equal(rec.arrays()["curvature"], before)
    assert rec.active(1, 1)


def test_ieee_float32_switches_tf32_off_on_cuda_only_and_restores_it() -> None:
    from harness.precision import ieee_float32

    conv, matmul = torch.backends.cudnn.conv, torch.backends.cuda.matmul
    before = conv.fp32_precision, matmul.fp32_precision
    with ieee_float32(CPU):
        assert (conv.fp32_precision, matmul.fp32_precision) == before
    with pytest.raises(RuntimeError), ieee_float32(torch.device("cuda")):  # the flags exist without a GPU
        assert (conv.fp32_precision, matmul.fp32_precision) == ("ieee", "ieee")
        raise RuntimeError("a failed pass")
    assert (conv.fp32_precision, matmul.fp32_precision) == before
    assert torch.backends.cudnn.allow_tf32 == (before[0] == "tf32")  # legacy flags readable again


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_curvature_of_a_conv_net_matches_float64_with_the_same_draws() -> None:
    """cuDNN runs float32 convolutions in TF32 by default; the recorder must not (a CPU emulation gave
    curvature a median 1.1 % error that way, against ~3e-4 in IEEE float32)."""
    cuda = torch.device("cuda")
    torch.manual_seed(0)
    data = prepare(DataSpec(subset=64), load_dataset("digits", subset=64), cuda)
    model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.Tanh(),
                          nn.Conv2d(16, 16, 3, padding=1), nn.Tanh(), nn.Flatten(),
                          nn.Linear(16 * 64, data.num_classes)).to(cuda)
    x = data.inputs(torch.arange(data.n, device=cuda))  # digits as (n, 1, 8, 8) images
    ctx = RunContext(data, epochs=1, train_idx=torch.arange(data.n), batch_size=data.n // 4, device=cuda)
    rec = build_recorder(RecorderRequest.of("curvature", n=4, h=1e-3, every=1), ctx)
    rec.on_epoch_end(0, 1, model)
    got = rec.arrays()["curvature"][0]

    from harness.recorders.input_grads import per_sample_input_grads

    model64 = model.double().eval()
    gen = torch.Generator(device=cuda).manual_seed(curvature_seed(0, 0))
    want = []
    for start in range(0, data.n, ctx.eval_batch_size):
        sl = slice(start, start + ctx.eval_batch_size)
        y = data.y[sl]
        want.append(finite_difference_curvature(lambda v, y=y: per_sample_input_grads(model64, v, y)[0],
                                                x[sl].double(), 4, 1e-3, gen))
    rel = np.abs(got - torch.cat(want).cpu().numpy()) / torch.cat(want).cpu().numpy()
    assert np.median(rel) < 2e-3, np.median(rel)


def test_ieee_float32_uses_the_legacy_flags_on_a_torch_without_fp32_precision(monkeypatch) -> None:
    """torch >= 2.3 is supported; `fp32_precision` exists only since 2.9 (the GPU machine had 2.11)."""
    from types import SimpleNamespace

    from harness.precision import ieee_float32

    cudnn, matmul = SimpleNamespace(allow_tf32=True), SimpleNamespace(allow_tf32=True)
    monkeypatch.setattr(torch.backends, "cudnn", cudnn)
    monkeypatch.setattr(torch.backends.cuda, "matmul", matmul)
    with ieee_float32(torch.device("cuda")):
        assert (cudnn.allow_tf32, matmul.allow_tf32) == (False, False)
    assert (cudnn.allow_tf32, matmul.allow_tf32) == (True, True)
