"""Batched ensembles: each member trains exactly as `train_run` would train its spec alone."""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch.func import functional_call, stack_module_state, vmap

import harness.ensemble as ensemble_module
from baselines.stability import stability_specs
from harness.ensemble import (
    MAX_STACKED_ELEMENTS,
    can_ensemble,
    ensemble_chunks,
    float32_batch_norm,
    largest_activation,
    members_that_fit,
    stacked_batch,
    train_ensemble,
    train_members,
)
from harness.errors import RunFailed
from harness.models import MODELS, build_model
from harness.recipe import make_optimizer
from harness.recorders import EVAL_LAST, RecorderRequest
from harness.recorders.eval_pass import eval_signals
from harness.runspec import RunSpec, TrainSubset
from harness.training import train_run

KEY = EVAL_LAST.key


def _specs(base: RunSpec, k: int, fraction: float = 0.7) -> list[RunSpec]:
    return stability_specs(base, k, fraction)


def _assert_same_run(ens, ref, *, exact_correct: float = 1.0) -> None:
    a, b = ens.arrays[KEY], ref.arrays[KEY]
    signals = eval_signals(torch.zeros(1, 10), torch.zeros(1, dtype=torch.long))
    assert set(a) == (set(signals) - {"probs"}) | {"probs_last"}  # every eval signal, probs at the end
    assert {"loss", "correct", "p_label", "p_max", "probs_last"} <= set(b) <= set(a)
    for name in b:
        assert a[name].shape == b[name].shape and a[name].dtype == b[name].dtype
    assert (a["correct"] == b["correct"]).mean() >= exact_correct
    np.testing.assert_allclose(a["p_label"], b["p_label"], atol=1e-4)
    np.testing.assert_allclose(a["probs_last"], b["probs_last"], atol=1e-4)
    np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-3, atol=1e-4)
    assert ens.train_flops == ref.train_flops
    assert ens.recorder_flops == ref.recorder_flops
    assert ens.train_acc == pytest.approx(ref.train_acc, abs=2e-3)
    assert ens.test_acc == pytest.approx(ref.test_acc, abs=3e-3)
    assert [h["epoch"] for h in ens.history] == [h["epoch"] for h in ref.history]
    np.testing.assert_allclose([h["loss"] for h in ens.history], [h["loss"] for h in ref.history], rtol=1e-4)


def test_can_ensemble(base_spec: RunSpec) -> None:
    assert can_ensemble(base_spec, {EVAL_LAST})
    assert can_ensemble(base_spec, set())
    assert can_ensemble(replace(base_spec, model="small_cnn"), {EVAL_LAST})  # batch norm: per-member buffers
    assert can_ensemble(replace(base_spec, recipe=replace(base_spec.recipe, precision="bf16")), {EVAL_LAST})
    assert not can_ensemble(replace(base_spec, model="no_such_model"), {EVAL_LAST})
    assert not can_ensemble(base_spec.with_subset(TrainSubset("half", 0, 2), TrainSubset("half", 1, 2)), set())
    assert not can_ensemble(base_spec, {RecorderRequest.of("eval_pass", epochs="all")})
    assert not can_ensemble(base_spec, {EVAL_LAST, RecorderRequest.of("train_loss")})


def test_members_match_train_run_sgd(base_spec: RunSpec, digits_noisy) -> None:
    specs = _specs(base_spec, 3)  # distinct seeds, distinct subsets, equal sizes
    outs = train_ensemble(specs, digits_noisy, [EVAL_LAST], progress=False)
    assert len(outs) == 3
    for spec, out in zip(specs, outs, strict=True):
        _assert_same_run(out, train_run(spec, digits_noisy, [EVAL_LAST], progress=False))
    # members really differ (own init and subset), so the comparison above is not vacuous
    assert not np.array_equal(outs[0].arrays[KEY]["p_label"], outs[1].arrays[KEY]["p_label"])


def test_members_match_train_run_adam_weight_decay(base_spec: RunSpec, digits_noisy) -> None:
    recipe = replace(base_spec.recipe, optimizer="adam", lr=1e-3, weight_decay=1e-3, epochs=2, schedule="multistep",
                     milestones=(1,), gamma=0.5)
    specs = _specs(replace(base_spec, recipe=recipe), 2)
    outs = train_ensemble(specs, digits_noisy, [EVAL_LAST], progress=False)
    for spec, out in zip(specs, outs, strict=True):
        _assert_same_run(out, train_run(spec, digits_noisy, [EVAL_LAST], progress=False))


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_one_optimizer_over_stacked_tensors_is_per_member_optimizers(tiny_recipe, optimizer: str) -> None:
    """The premise of the ensemble: torch.optim on (K, ...) stacked tensors updates each member
    exactly (bitwise) as K separate optimizers would."""
    recipe = replace(tiny_recipe, optimizer=optimizer, momentum=0.9, weight_decay=0.01, lr=0.1)
    gen = torch.Generator().manual_seed(0)
    stacked = [torch.randn(3, 4, 5, generator=gen).requires_grad_(), torch.randn(3, 5, generator=gen).requires_grad_()]
    members = [[p.detach()[j].clone().requires_grad_() for p in stacked] for j in range(3)]
    opt = make_optimizer(recipe, stacked)
    opts = [make_optimizer(recipe, m) for m in members]
    for _ in range(4):
        grads = [torch.randn(p.shape, generator=gen) for p in stacked]
        for p, g in zip(stacked, grads, strict=True):
            p.grad = g.clone()
        for j, m in enumerate(members):
            for p, g in zip(m, grads, strict=True):
                p.grad = g[j].clone()
        opt.step()
        for o in opts:
            o.step()
    for j, m in enumerate(members):
        for p, q in zip(stacked, m, strict=True):
            torch.testing.assert_close(p.detach()[j], q.detach(), rtol=0, atol=0)


def test_unequal_subset_sizes_train_apart(base_spec: RunSpec, digits_noisy) -> None:
    """Members whose subsets differ in size cannot share batches: they are grouped by size, and a
    group of one still trains in the ensemble engine (an ensemble of one), so how a spec is trained
    never depends on its company: bitwise the same as that spec's ensemble of one."""
    recipe = replace(base_spec.recipe, epochs=1)
    base = replace(base_spec, recipe=recipe)
    specs = [*_specs(base, 2, 0.7), _specs(base, 2, 0.5)[0]]
    outs = train_ensemble(specs, digits_noisy, [EVAL_LAST], progress=False)
    (alone,) = train_ensemble([specs[2]], digits_noisy, [EVAL_LAST], progress=False)
    np.testing.assert_array_equal(outs[2].arrays[KEY]["p_label"], alone.arrays[KEY]["p_label"])
    _assert_same_run(outs[2], train_run(specs[2], digits_noisy, [EVAL_LAST], progress=False))
    _assert_same_run(outs[0], train_run(specs[0], digits_noisy, [EVAL_LAST], progress=False))


def test_no_requests_still_reports_accuracy(base_spec: RunSpec, digits_noisy) -> None:
    specs = _specs(replace(base_spec, recipe=replace(base_spec.recipe, epochs=1)), 2)
    outs = train_ensemble(specs, digits_noisy, [], progress=False)
    ref = train_run(specs[1], digits_noisy, [], progress=False)
    assert outs[1].arrays == {} and outs[1].recorder_seconds == {}
    assert outs[1].train_acc == pytest.approx(ref.train_acc, abs=2e-3)
    assert outs[1].train_seconds > 0 and outs[1].train_flops == ref.train_flops


def test_non_finite_member_raises(base_spec: RunSpec, digits_noisy) -> None:
    recipe = replace(base_spec.recipe, epochs=1, lr=1e6)
    specs = _specs(replace(base_spec, recipe=recipe), 2)
    with pytest.raises(RunFailed, match="non-finite"):
        train_ensemble(specs, digits_noisy, [EVAL_LAST], progress=False)


def test_a_diverging_member_fails_alone(base_spec: RunSpec, digits_noisy) -> None:
    """The summed loss gives each member only its own gradient: one member's NaN (a poisoned
    initial weight) fails that member alone and leaves the other's training bitwise untouched."""
    specs = _specs(replace(base_spec, recipe=replace(base_spec.recipe, epochs=1)), 2)
    import harness.ensemble as ensemble

    real_init = ensemble._init_models

    def poisoned(specs_, data):
        models = real_init(specs_, data)
        if len(models) == 2:
            with torch.no_grad():
                next(models[1].parameters()).fill_(float("nan"))
        return models

    clean = train_members(specs, digits_noisy, [EVAL_LAST], progress=False)
    try:
        ensemble._init_models = poisoned
        outs = train_members(specs, digits_noisy, [EVAL_LAST], progress=False)
    finally:
        ensemble._init_models = real_init
    assert isinstance(outs[1], RunFailed) and specs[1].digest() in str(outs[1]) and "non-finite" in str(outs[1])
    np.testing.assert_array_equal(outs[0].arrays[KEY]["p_label"], clean[0].arrays[KEY]["p_label"])


def test_every_eval_signal_is_stored(base_spec: RunSpec, digits_noisy, monkeypatch) -> None:
    """A signal added to eval_signals reaches ensemble members without an edit here."""
    import harness.ensemble as ensemble
    from harness.recorders import eval_pass

    def with_extra(logits, labels):
        out = eval_pass.eval_signals(logits, labels)
        return {**out, "extra_signal": out["loss"] * 2}

    monkeypatch.setattr(ensemble, "eval_signals", with_extra)
    specs = _specs(replace(base_spec, recipe=replace(base_spec.recipe, epochs=1)), 2)
    outs = train_ensemble(specs, digits_noisy, [EVAL_LAST], progress=False)
    arrays = outs[0].arrays[KEY]
    assert "probs" not in arrays and arrays["probs_last"].shape == (digits_noisy.n, 10)
    np.testing.assert_allclose(arrays["extra_signal"], 2 * arrays["loss"])
    assert arrays["extra_signal"].shape == (1, digits_noisy.n)


def test_chunks_of_max_members(base_spec: RunSpec, digits_noisy) -> None:
    """Three members in chunks of two: the lone third member is an ensemble of one (bitwise)."""
    specs = _specs(replace(base_spec, recipe=replace(base_spec.recipe, epochs=1)), 3)
    outs = train_ensemble(specs, digits_noisy, [EVAL_LAST], progress=False, max_members=2)
    (alone,) = train_ensemble([specs[2]], digits_noisy, [EVAL_LAST], progress=False)
    np.testing.assert_array_equal(outs[2].arrays[KEY]["p_label"], alone.arrays[KEY]["p_label"])
    _assert_same_run(outs[1], train_run(specs[1], digits_noisy, [EVAL_LAST], progress=False))


def test_cpu_batches_linear_models_only(base_spec: RunSpec) -> None:
    for model in ("small_cnn_gn", "small_cnn", "resnet18"):
        conv = replace(base_spec, model=model)
        assert can_ensemble(conv, {EVAL_LAST})  # stackable, batch norm included
        assert not can_ensemble(conv, {EVAL_LAST}, "cpu")  # grouped convolutions are slow on a CPU
        assert can_ensemble(conv, {EVAL_LAST}, "cuda")
    assert can_ensemble(base_spec, {EVAL_LAST}, torch.device("cpu"))


def test_batchnorm_cnn_members_match_train_run(tiny_recipe) -> None:
    """Batch norm under vmap: each member normalises with its own batch in training and its own
    running statistics in the eval pass, as it would alone (forced through the ensemble engine,
    which on a CPU the planner would not pick for a convolutional model)."""
    data = _images()
    recipe = replace(tiny_recipe, epochs=2, batch_size=32, lr=0.02)
    specs = _specs(RunSpec(data.spec, "small_cnn", recipe, seed=0), 2)
    outs = train_ensemble(specs, data, [EVAL_LAST], progress=False)
    for spec, out in zip(specs, outs, strict=True):
        _assert_same_run(out, train_run(spec, data, [EVAL_LAST], progress=False), exact_correct=0.98)
    assert not np.array_equal(outs[0].arrays[KEY]["p_label"], outs[1].arrays[KEY]["p_label"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_batchnorm_cnn_members_on_cuda(tiny_recipe, precision: str) -> None:
    """The GPU path the planner takes for conv nets: batch norm under vmap on CUDA (cuDNN's batch
    norm, not the CPU kernel), chunks sized by `_gpu_chunk`, against train_run on the same device."""
    data = _images(device="cuda")
    recipe = replace(tiny_recipe, epochs=2, batch_size=32, lr=0.02, precision=precision)
    specs = _specs(RunSpec(data.spec, "small_cnn", recipe, seed=0), 3)
    assert can_ensemble(specs[0], {EVAL_LAST}, "cuda") and ensemble_chunks(specs, data) == [[0, 1, 2]]
    outs = train_ensemble(specs, data, [EVAL_LAST], progress=False)
    for spec, out in zip(specs, outs, strict=True):
        ref = train_run(spec, data, [EVAL_LAST], progress=False)
        a, b = out.arrays[KEY], ref.arrays[KEY]
        assert (a["correct"] == b["correct"]).mean() >= 0.95
        np.testing.assert_allclose(a["p_label"], b["p_label"], atol=0.05 if precision == "bf16" else 2e-3)


def test_bf16_members_close_to_train_run(base_spec: RunSpec, digits_noisy) -> None:
    """bf16 autocast of the forward in both engines: the same run up to bf16 rounding, losses float32."""
    spec = replace(base_spec, recipe=replace(base_spec.recipe, precision="bf16", epochs=3))
    specs = _specs(spec, 2)
    outs = train_ensemble(specs, digits_noisy, [EVAL_LAST], progress=False)
    for s, out in zip(specs, outs, strict=True):
        ref = train_run(s, digits_noisy, [EVAL_LAST], progress=False)
        a, b = out.arrays[KEY], ref.arrays[KEY]
        assert a["loss"].dtype == np.float32
        assert (a["correct"] == b["correct"]).mean() >= 0.97
        assert np.corrcoef(a["loss"][0], b["loss"][0])[0, 1] > 0.99


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_stacks_under_vmap(name: str) -> None:
    """Every registered model can be an ensemble member: a stacked training forward equals each
    member's own, and each member's batch-norm running statistics move as they would alone."""
    side = 32 if name in ("vgg16", "resnet50", "inception_small", "mobilenetv2") else 16
    shape = (12, 1, 1) if name.startswith("text_") else (3, side, side)  # text models take token ids
    torch.manual_seed(0)
    models = [build_model(name, shape, 10) for _ in range(2)]
    params, buffers = stack_module_state(models)
    skeleton = copy.deepcopy(models[0]).to("meta").train()
    x = torch.randint(0, 50, (2, 4, *shape)) if name.startswith("text_") else torch.randn(2, 4, *shape)
    out = vmap(lambda p, b, xb: functional_call(skeleton, (p, b), (xb,)))(params, buffers, x)
    for j, model in enumerate(models):
        alone = model.train()(x[j])
        torch.testing.assert_close(out[j], alone, atol=1e-4, rtol=1e-4)
        for key, value in model.state_dict().items():
            if key in buffers:
                torch.testing.assert_close(buffers[key][j], value, atol=1e-4, rtol=1e-4)


def test_members_that_fit() -> None:
    assert members_that_fit(100 * 2**30, 2**30, share=0.6) == 60
    assert members_that_fit(2**30, 4 * 2**30) == 1  # never zero: one member still trains
    assert members_that_fit(10 * 2**30, 2**30, share=0.6 * 0.25) == 1


def test_gpu_fraction_ignored_without_cuda(base_spec: RunSpec, digits_noisy) -> None:
    specs = _specs(base_spec, 4)
    assert ensemble_chunks(specs, digits_noisy, gpu_fraction=0.25) == ensemble_chunks(specs, digits_noisy)


def _images(n: int = 96, side: int = 16, seed: int = 0, device: str = "cpu"):
    """Three classes of 16x16 RGB images (a bright square in one of three corners, plus noise):
    large enough for the crop-and-flip augmentation, learnable in a few epochs."""
    from harness.datasets import Dataset
    from harness.prepared import prepare
    from harness.runspec import DataSpec

    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = torch.randint(0, 60, (n, 3, side, side), generator=g)
    for i, c in enumerate(y.tolist()):
        r0, c0 = [(0, 0), (0, side // 2), (side // 2, 0)][c]
        x[i, :, r0 : r0 + side // 2, c0 : c0 + side // 2] += 150
    ds = Dataset("squares", x.to(torch.uint8), y, x[:12].to(torch.uint8), y[:12], ("a", "b", "c"), n)
    return prepare(DataSpec(dataset="squares"), ds, torch.device(device))


@pytest.mark.parametrize("augment", [False, True])
def test_groupnorm_cnn_members_match_train_run(tiny_recipe, augment: bool) -> None:
    """Convolutions and GroupNorm under vmap, with each member's own augmentation draws."""
    data = _images()
    recipe = replace(tiny_recipe, epochs=2, batch_size=32, augment=augment, lr=0.02)
    specs = _specs(RunSpec(data.spec, "small_cnn_gn", recipe, seed=0), 2)
    outs = train_ensemble(specs, data, [EVAL_LAST], progress=False)
    for spec, out in zip(specs, outs, strict=True):
        _assert_same_run(out, train_run(spec, data, [EVAL_LAST], progress=False), exact_correct=0.98)
    assert not np.array_equal(outs[0].arrays[KEY]["p_label"], outs[1].arrays[KEY]["p_label"])


def test_float32_batch_norm_matches_the_plain_layer() -> None:
    """The bf16-on-CUDA batch norm of ensembles (`float32_batch_norm`): under vmap it gives each
    member's own layer's numbers and running statistics, and a bf16 input comes back bf16, the
    rounded float32 result, as cuDNN's mixed-precision kernel returns it for one model."""
    torch.manual_seed(0)
    layers = [torch.nn.BatchNorm2d(4) for _ in range(2)]
    params, buffers = stack_module_state(layers)
    skeleton = copy.deepcopy(layers[0]).to("meta")
    float32_batch_norm(skeleton)
    x = torch.randn(2, 8, 4, 5, 5)
    out = vmap(lambda p, b, xi: functional_call(skeleton, (p, b), (xi,)))(params, buffers, x)
    ref = torch.stack([layer(x[j]) for j, layer in enumerate(layers)])
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(buffers["running_var"], torch.stack([layer.running_var for layer in layers]))
    half = x[0].bfloat16()
    single = copy.deepcopy(layers[0]).eval()
    float32_batch_norm(single)
    assert single(half).dtype == torch.bfloat16
    assert torch.equal(single(half), layers[0].eval()(half.float()).bfloat16())


def test_stacked_batch_keeps_activations_indexable() -> None:
    """The cuDNN limit that a 16-member ResNet-18 eval pass hit on an H200: 16 members x 2,048
    images x 65,536 elements (64 channels of 32x32) is exactly 2^31."""
    assert 16 * 2048 * 65536 > MAX_STACKED_ELEMENTS
    assert stacked_batch(16, 2048, 65536) == 2047
    # each_member pads every member's rows to a multiple of 16: 2,047 became 2,048 rows, the limit again
    assert stacked_batch(16, 2048, 65536, align=16) == 2032
    assert stacked_batch(4, 512, 65536) == 512  # well inside: the batch asked for
    assert stacked_batch(10**6, 512, 10**6) == 1  # never below one sample


def test_largest_activation_counts_per_sample_elements() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(8 * 4 * 4, 2))
    assert largest_activation(model, torch.zeros(5, 3, 4, 4)) == 8 * 4 * 4
    small = build_model("small_cnn", (3, 32, 32), 10)
    first_conv = next(m for m in small.modules() if isinstance(m, torch.nn.Conv2d))
    assert largest_activation(small, torch.zeros(2, 3, 32, 32)) >= first_conv.out_channels * 32 * 32


def test_eval_batch_shrinks_under_the_element_limit(base_spec: RunSpec, digits_noisy, monkeypatch) -> None:
    """With the limit lowered so the eval pass runs 3 images a batch, members' eval signals are
    those of the default batch (eval mode: a sample's outputs do not depend on its batch)."""
    spec = replace(base_spec, recipe=replace(base_spec.recipe, epochs=2))
    specs = _specs(spec, 2)
    default = train_ensemble(specs, digits_noisy, [EVAL_LAST], progress=False)
    per_sample = largest_activation(build_model(spec.model, tuple(digits_noisy.x.shape[1:]), 10),
                                    digits_noisy.inputs(torch.arange(1)))
    monkeypatch.setattr("harness.ensemble_plan.MAX_STACKED_ELEMENTS", 2 * 3 * per_sample)
    batches: list[int] = []
    plain_eval = ensemble_module._eval_pass
    monkeypatch.setattr(ensemble_module, "_eval_pass", lambda *a: batches.append(a[-1]) or plain_eval(*a))
    small = train_ensemble(specs, digits_noisy, [EVAL_LAST], progress=False)
    assert batches == [3, 3]  # the pass runs twice: once under the FLOP counter, once timed (count_then_time)
    for a, b in zip(default, small, strict=True):
        for name in ("loss", "p_label", "probs_last"):
            np.testing.assert_allclose(a.arrays[KEY][name], b.arrays[KEY][name], rtol=1e-5, atol=1e-6)
        assert a.test_acc == b.test_acc
