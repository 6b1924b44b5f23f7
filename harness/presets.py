"""Named recipes. `quick` fits on 2 CPU cores in minutes and still trains into the memorization
regime (near-100% training accuracy on the noisy labels: below that, final loss separates noisy
samples trivially and the comparison says nothing about memorization). `paper` is App. B.1.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.errors import HarnessError
from harness.recipe import Recipe


@dataclass(frozen=True)
class Preset:
    name: str
    model: str
    recipe: Recipe
    subset: int | None
    note: str


_QUICK_DIGITS = Preset(
    "quick",
    "mlp",
    Recipe(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=0.0, batch_size=128, epochs=40,
           schedule="cosine", milestones=(), augment=False),
    None,
    "CPU preset: MLP on digits, 40 epochs SGD (lr 0.1, cosine), batch 128, no augmentation",
)
_QUICK_IMAGES = Preset(
    "quick",
    "small_cnn",
    Recipe(optimizer="adam", lr=1e-3, momentum=0.9, weight_decay=0.0, batch_size=64, epochs=20,
           schedule="cosine", milestones=(), augment=False),
    4000,
    "CPU preset: small CNN on a 4,000-sample subset, 20 epochs Adam (lr 1e-3, cosine), no augmentation "
    "(augmentation would keep a small CNN from fitting the noisy labels within a CPU budget)",
)
_PAPER = Preset(
    "paper",
    "resnet18",
    Recipe(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4, batch_size=128, epochs=200,
           schedule="multistep", milestones=(120, 180), augment=True),
    None,
    "paper App. B.1: ResNet-18, SGD lr 0.1 momentum 0.9 wd 1e-4, batch 128, 200 epochs, "
    "lr /10 at 120 and 180, random crop 32 (pad 4) + flip",
)
PRESETS = ("quick", "paper")


def preset_for(name: str, dataset: str) -> Preset:
    if name == "paper":
        return _PAPER
    if name == "quick":
        return _QUICK_DIGITS if dataset == "digits" else _QUICK_IMAGES
    raise HarnessError(f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)}")
