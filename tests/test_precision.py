"""bf16 autocast, channels-last and the float32 rule for recorded signals (harness.precision), and
the recipe fields that carry them into a run's address."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from harness.errors import HarnessError
from harness.models import build_model
from harness.precision import autocast, channels_last, full_precision, per_sample_loss
from harness.prepared import PreparedData
from harness.recipe import Recipe
from harness.recorders import RecorderRequest
from harness.runspec import Corruption, DataSpec, RunSpec, TrainSubset
from harness.training import train_run

CPU = torch.device("cpu")


@pytest.fixture
def cnn_batch() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = build_model("small_cnn", (3, 16, 16), 10).eval()
    return model, torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,))


def test_fp32_is_a_no_op_and_bf16_autocasts_matmuls() -> None:
    layer = nn.Linear(4, 3)
    x = torch.randn(2, 4)
    with autocast(CPU, "fp32"):
        assert layer(x).dtype == torch.float32
    with autocast(CPU, "bf16"):
        assert layer(x).dtype == torch.bfloat16
    assert layer.weight.dtype == torch.float32  # autocast casts per op; weights stay float32
    with pytest.raises(HarnessError, match="unknown precision 'fp16'.*fp32, bf16"):
        autocast(CPU, "fp16")


def test_bf16_per_sample_loss_is_float32_and_close_to_fp32(cnn_batch) -> None:
    model, x, y = cnn_batch
    reference = per_sample_loss(model(x), y)
    with autocast(CPU, "bf16"):
        logits = model(x)
        loss = per_sample_loss(logits, y)
    assert logits.dtype == torch.bfloat16
    assert loss.dtype == torch.float32
    assert not torch.equal(loss, reference)  # the forward really ran in bf16
    assert torch.allclose(loss, reference, atol=0.02)  # measured max |diff| 5e-4 (losses ~2.3)


def test_input_gradients_stay_float32_and_exact_under_full_precision(cnn_batch) -> None:
    model, x, y = cnn_batch
    x = x.requires_grad_()
    (g_ref,) = torch.autograd.grad(per_sample_loss(model(x), y).sum(), x)
    with autocast(CPU, "bf16"):
        (g_bf16,) = torch.autograd.grad(per_sample_loss(model(x), y).sum(), x)
        with full_precision(CPU):
            (g_full,) = torch.autograd.grad(per_sample_loss(model(x), y).sum(), x)
    assert g_bf16.dtype == g_full.dtype == torch.float32
    # a bf16 forward gives a gradient only roughly right (cosine 0.986 measured) ...
    assert nn.functional.cosine_similarity(g_bf16.flatten(), g_ref.flatten(), 0) > 0.9
    # ... which is why recorders run in float32: inside full_precision it is the fp32 gradient
    assert torch.equal(g_full, g_ref)


def test_channels_last_changes_layout_not_values(cnn_batch) -> None:
    model, x, _ = cnn_batch
    reference = model(x)
    assert channels_last(model) is model
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    xc = channels_last(x)
    assert xc.is_contiguous(memory_format=torch.channels_last) and torch.equal(xc, x)
    flat = torch.randn(3, 5)
    assert channels_last(flat) is flat  # MLP inputs pass through
    torch.testing.assert_close(model(xc), reference, atol=1e-5, rtol=1e-5)


# digests of specs stored before the precision fields existed (computed at commit d5d811c)
OLD_DIGESTS = [
    (RunSpec(DataSpec(), "mlp", Recipe()), "9e74518cfb14dd305044"),
    (RunSpec(DataSpec("cifar10", None, Corruption("noise", 0.1, 0, 0)), "resnet18",
             Recipe(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4, batch_size=128, epochs=200,
                    schedule="multistep", milestones=(120, 180), augment=True), seed=2),
     "6f761c24096fe82406c6"),
    (RunSpec(DataSpec("cifar10", 4000, Corruption("duplicates", 0, 20, 1)), "small_cnn",
             Recipe(optimizer="adam", lr=1e-3, momentum=0.9, weight_decay=0.0, batch_size=64, epochs=20,
                    schedule="cosine", milestones=(), augment=False),
             seed=1, train_on=TrainSubset("random", 3, 64, 0, 0.7)),
     "9775e9fb9510ca901367"),
]


@pytest.mark.parametrize(("spec", "digest"), OLD_DIGESTS)
def test_default_precision_keeps_old_run_addresses(spec: RunSpec, digest: str) -> None:
    # runs that augment moved once, on purpose: their crops were padded with grey before
    # AUGMENT_VERSION 2 (harness.recipe), and such a stored run must not be reused
    # and --subset runs once, on purpose: their test accuracy was measured on a prefix of the test
    # split before TEST_KEEP_VERSION 2 (harness.runspec)
    if spec.recipe.augment or spec.data.subset is not None:
        assert spec.digest() != digest
        assert replace(spec, recipe=replace(spec.recipe, augment=False)).digest() != digest
    else:
        assert spec.digest() == digest


def test_precision_and_channels_last_are_part_of_the_address() -> None:
    spec = OLD_DIGESTS[0][0]
    digests = {spec.digest(),
               replace(spec, recipe=replace(spec.recipe, precision="bf16")).digest(),
               replace(spec, recipe=replace(spec.recipe, channels_last=True)).digest(),
               replace(spec, recipe=replace(spec.recipe, precision="bf16", channels_last=True)).digest()}
    assert len(digests) == 4
    assert spec.to_dict()["recipe"]["precision"] == "fp32"  # still written to the manifest


def test_recipe_validates_precision() -> None:
    Recipe(precision="bf16").validate()
    with pytest.raises(HarnessError, match="unknown precision 'half'"):
        Recipe(precision="half").validate()


def _csl_auroc(out, positives: np.ndarray) -> float:
    return roc_auc_score(positives, out.arrays["train_loss"]["loss"].mean(0))


def test_bf16_training_run_records_float32_and_scores_like_fp32(digits_noisy: PreparedData, tiny_recipe) -> None:
    requests = [RecorderRequest.of(n) for n in ("train_loss", "train_margin", "train_prob", "eval_pass")]
    spec = RunSpec(data=digits_noisy.spec, model="mlp", recipe=replace(tiny_recipe, epochs=5), seed=0)
    fp32 = train_run(spec, digits_noisy, requests, progress=False)
    bf16 = train_run(replace(spec, recipe=replace(spec.recipe, precision="bf16", channels_last=True)),
                     digits_noisy, requests, progress=False)
    for out in (fp32, bf16):
        for arrays in out.arrays.values():
            for name, a in arrays.items():
                assert a.dtype in (np.float32, np.int64, np.bool_), (name, a.dtype)
    positives = digits_noisy.positives
    assert abs(_csl_auroc(bf16, positives) - _csl_auroc(fp32, positives)) < 0.03
    assert abs(bf16.train_acc - fp32.train_acc) < 0.05
    # the bf16 run must actually have run in bf16
    assert not np.array_equal(bf16.arrays["train_loss"]["loss"], fp32.arrays["train_loss"]["loss"])
