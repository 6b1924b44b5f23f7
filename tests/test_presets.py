"""Presets: `paper` is App. B.1 exactly, `gpu` is the fast full-CIFAR recipe, `quick` depends on
the dataset; the one-cycle schedule the gpu preset uses."""

from __future__ import annotations

import pytest
import torch

from harness.errors import HarnessError
from harness.models import MODELS
from harness.presets import PRESETS, preset_for
from harness.recipe import Recipe, make_optimizer, make_scheduler
from harness.registry import Registry


def test_paper_preset_is_appendix_b1() -> None:
    p = preset_for("paper", "cifar10")
    assert p.model == "resnet18" and p.subset is None
    assert p.recipe == Recipe(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4, batch_size=128,
                              epochs=200, schedule="multistep", milestones=(120, 180), gamma=0.1,
                              augment=True, crop_padding=4, precision="fp32", channels_last=False)


def test_gpu_preset_trains_resnet18_fast_on_the_full_dataset() -> None:
    p = preset_for("gpu", "cifar100")
    assert p.model == "resnet18" and p.subset is None
    r = p.recipe
    assert (r.precision, r.channels_last, r.schedule, r.augment) == ("bf16", True, "onecycle", False)
    assert r.batch_size == 512 and r.epochs == 40
    r.validate()


def test_quick_preset_depends_on_the_dataset() -> None:
    assert preset_for("quick", "digits").model == "mlp"
    assert preset_for("quick", "cifar10").model == "small_cnn"
    assert preset_for("quick", "cifar10").subset == 4000


def test_registry_holds_every_preset_with_a_known_model() -> None:
    assert isinstance(PRESETS, Registry)
    assert list(PRESETS) == ["quick", "cpu-full", "paper", "gpu"]
    for entry in PRESETS.values():
        for preset in (entry.default, *entry.by_dataset.values()):
            assert preset.model in MODELS and preset.name == entry.name
            preset.recipe.validate()
    with pytest.raises(HarnessError, match="unknown preset 'fast'.*cpu-full, gpu, paper, quick"):
        preset_for("fast", "cifar10")


def _lrs(recipe: Recipe) -> list[float]:
    opt = make_optimizer(recipe, [torch.zeros(1, requires_grad=True)])
    sched = make_scheduler(recipe, opt)
    out = []
    for _ in range(recipe.epochs):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_onecycle_rises_to_lr_at_a_quarter_then_falls_linearly() -> None:
    # 4 epochs, lr 0.4: peak at epoch 1; lr/25 at epoch 0; 2/3 and 1/3 of the peak after it
    assert _lrs(Recipe(lr=0.4, epochs=4, schedule="onecycle")) == pytest.approx([0.016, 0.4, 0.4 * 2 / 3, 0.4 / 3])
    lrs = _lrs(Recipe(lr=0.4, epochs=40, schedule="onecycle"))
    assert max(lrs) == pytest.approx(0.4) and lrs.index(max(lrs)) == 10
    assert 0 < lrs[-1] < 0.02  # the last epoch still learns
    assert _lrs(Recipe(lr=0.4, epochs=1, schedule="onecycle")) == pytest.approx([0.016])  # no crash when short


@pytest.mark.parametrize(("epochs", "peak"), [(2, 1), (3, 1), (5, 1), (6, 2), (10, 3), (13, 3), (20, 5), (22, 6)])
def test_onecycle_reaches_its_lr_at_a_whole_epoch_whatever_the_epochs(epochs: int, peak: int) -> None:
    """Peaking at E/4 itself left 10 epochs at most 0.93 of the lr (and 5 at 0.81): the schedule is
    stepped per epoch, so the peak is the whole epoch nearest E/4."""
    lrs = _lrs(Recipe(lr=0.4, epochs=epochs, schedule="onecycle"))
    assert max(lrs) == pytest.approx(0.4) and lrs.index(max(lrs)) == peak
    assert lrs[0] == pytest.approx(0.016) and 0 < lrs[-1] < 0.4 / (epochs - peak) + 1e-9


def test_only_runs_whose_onecycle_moved_get_new_addresses() -> None:
    """The runs stored before the peak moved to a whole epoch are reused where their schedule is the
    same (E = 1 or a multiple of 4, every preset as shipped) and never where it is not."""
    from harness.runspec import DataSpec, RunSpec

    def digest(epochs: int, schedule: str = "onecycle") -> str:
        return RunSpec(DataSpec("digits"), "mlp", Recipe(epochs=epochs, schedule=schedule)).digest()

    def old_digest(epochs: int, schedule: str = "onecycle") -> str:
        import harness.runspec as runspec
        original = runspec.onecycle_changed
        runspec.onecycle_changed = lambda e: False
        try:
            return digest(epochs, schedule)
        finally:
            runspec.onecycle_changed = original

    for epochs in (1, 4, 20, 40):
        assert digest(epochs) == old_digest(epochs)
    for epochs in (2, 5, 10):
        assert digest(epochs) != old_digest(epochs)
        assert digest(epochs, "cosine") == old_digest(epochs, "cosine")


@pytest.mark.parametrize(("epochs", "milestones"), [(200, (120, 180)), (100, (60, 90)), (150, (90, 135)),
                                                    (10, (6, 9)), (2, (1,)), (1, ())])
def test_epochs_scale_the_paper_presets_milestones(epochs: int, milestones: tuple[int, ...]) -> None:
    """--epochs 100 cut both of 120/180 and trained the paper preset at a constant lr, silently."""
    from harness.api import experiment_config
    from harness.cli import preset_note

    cfg = experiment_config(preset="paper", epochs=epochs, dataset="digits", model="mlp")
    assert cfg.recipe.milestones == milestones
    steps = ", ".join(map(str, milestones))
    assert (f"multistep (/10 at epochs {steps})" if milestones else "multistep (no milestone") in preset_note(cfg)
