"""Training recipes: everything about *how* a run trains, frozen so it can be hashed into a RunSpec."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from harness.errors import HarnessError
from harness.precision import PRECISIONS

SCHEDULES = ("multistep", "cosine", "constant", "onecycle")
#: Fields added after experiment ids (the --out ownership mark) were fixed, with the default that a
#: config made before them had in effect: left out of the id at that value, so old --out folders
#: stay the same experiment's. (Run addresses keep their own list: harness.runspec.)
LATER_RECIPE_DEFAULTS: dict[str, object] = {"augment_epochs": None}


def without_defaults(fields: dict[str, object], defaults: dict[str, object]) -> dict[str, object]:
    """A recipe's fields as hashed: those added later (`defaults`) left out at their default value,
    so a hash made before a field existed stays the same."""
    return {k: v for k, v in fields.items() if k not in defaults or v != defaults[k]}


@dataclass(frozen=True)
class Recipe:
    optimizer: str = "sgd"  # "sgd" | "adam"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    batch_size: int = 128
    epochs: int = 200
    schedule: str = "multistep"  # one of SCHEDULES
    milestones: tuple[int, ...] = (120, 180)
    gamma: float = 0.1
    augment: bool = True  # random crop (padding 4) + horizontal flip, batched on the device
    crop_padding: int = 4
    # augment only the first N epochs (of each phase), then show the plain images: the features are
    # learned under augmentation, and the plain last epochs let the network fit (memorise) every
    # label, which is the regime the memorization proxies are about. None: every epoch.
    augment_epochs: int | None = None
    # numerics (issue 10); part of the run's address because they change its numbers (see
    # RunSpec.digest for how old stores keep matching). torch.compile is not here: same numbers.
    precision: str = "fp32"  # one of PRECISIONS: autocast of the training forward (harness.precision)
    channels_last: bool = False  # NHWC memory format for the model and its 4-D inputs

    def __post_init__(self) -> None:
        """Augment epochs that change nothing take the plain form, so the same training has one store
        address: all the epochs is augmentation throughout, none of them is augmentation off."""
        if self.augment and self.augment_epochs is not None:
            if self.augment_epochs == self.epochs:
                object.__setattr__(self, "augment_epochs", None)
            elif self.augment_epochs == 0:
                object.__setattr__(self, "augment", False)
                object.__setattr__(self, "augment_epochs", None)

    def validate(self) -> None:
        if self.epochs < 1:
            raise HarnessError(f"epochs must be >= 1 (got {self.epochs})")
        if self.batch_size < 1:
            raise HarnessError(f"batch size must be >= 1 (got {self.batch_size})")
        if not self.lr > 0:
            raise HarnessError(f"learning rate must be > 0 (got {self.lr})")
        if self.optimizer not in ("sgd", "adam"):
            raise HarnessError(f"unknown optimizer {self.optimizer!r}; valid: sgd, adam")
        if self.schedule not in SCHEDULES:
            raise HarnessError(f"unknown lr schedule {self.schedule!r}; valid: {', '.join(SCHEDULES)}")
        if self.augment_epochs is not None:
            if not self.augment:
                raise HarnessError(f"augment epochs ({self.augment_epochs}) given with augmentation off; "
                                   "drop --augment-epochs or use --augment on")
            if not 0 <= self.augment_epochs <= self.epochs:
                raise HarnessError(f"augment epochs must be in [0, epochs={self.epochs}] "
                                   f"(got {self.augment_epochs})")
        if self.precision not in PRECISIONS:
            raise HarnessError(f"unknown precision {self.precision!r}; valid: {', '.join(PRECISIONS)}")
        self._validate_numbers()

    def _validate_numbers(self) -> None:
        """The fields no CLI flag sets (a Recipe built in Python): checked here, before anything
        trains, because torch refuses a negative momentum or weight decay only when the optimizer is
        built inside a worker, and a negative crop padding only at the first augmented batch."""
        if not 0 <= self.momentum < 1:
            raise HarnessError(f"momentum must be in [0, 1) (got {self.momentum})")
        if not 0 <= self.weight_decay < float("inf"):
            raise HarnessError(f"weight decay must be a finite number >= 0 (got {self.weight_decay})")
        if not 0 < self.gamma < float("inf"):
            raise HarnessError(f"lr decay factor gamma must be a finite number > 0 (got {self.gamma})")
        if self.crop_padding < 0:
            raise HarnessError(f"crop padding must be >= 0 (got {self.crop_padding})")
        if any(m < 1 for m in self.milestones):
            raise HarnessError(f"lr milestones must be epochs >= 1 (got {self.milestones})")
        late = [m for m in self.milestones if m >= self.epochs]
        if self.schedule == "multistep" and late:
            raise HarnessError(
                f"lr milestones {late} are at or past the end of training ({self.epochs} epochs), so the lr would "
                f"never decay there; give milestones below {self.epochs} (the paper's 120 and 180 of 200 epochs "
                f"are 60 and 90 of 100), or milestones=() for a constant lr")


def make_optimizer(recipe: Recipe, params) -> torch.optim.Optimizer:
    if recipe.optimizer == "adam":
        return torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)


def make_scheduler(recipe: Recipe, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    """Stepped once per epoch.

    "onecycle" is the piecewise-linear one-cycle of fast CIFAR training (Smith & Topin; Page's
    DAWNBench ResNet): lr/25 rising to lr at the epoch nearest a quarter of the epochs, then falling
    linearly towards 0 at the end (the last epoch still learns). The peak is a whole epoch because
    the schedule is stepped per epoch: at E/4 itself, 10 epochs never trained above 0.93 lr
    (ONECYCLE_VERSION). torch's OneCycleLR is made for per-batch steps and divides by zero for short
    runs stepped per epoch, hence a LambdaLR.
    """
    if recipe.schedule == "onecycle":
        peak = onecycle_peak(recipe.epochs)
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda e: float(np.interp(e, [0.0, peak, recipe.epochs], [1 / 25, 1.0, 0.0])))
    if recipe.schedule == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, list(recipe.milestones), recipe.gamma)
    if recipe.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, recipe.epochs)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


#: 2: one-cycle peaks at a whole epoch, max(1, round(E / 4)) (halves up); version 1 peaked at E / 4,
#: between epochs unless 4 divides E. Hashed into the address of the runs whose schedule it changed
#: (one-cycle, E > 1 and not a multiple of 4; harness.runspec), so none is reused with the old one.
ONECYCLE_VERSION = 2


def onecycle_peak(epochs: int) -> int:
    """The one-cycle schedule's peak epoch: the whole epoch nearest E / 4 (halves up), at least 1."""
    return max(1, int(epochs / 4 + 0.5))


def onecycle_changed(epochs: int) -> bool:
    """Whether ONECYCLE_VERSION 2 trains these epochs differently from version 1 (peak at E / 4)."""
    return epochs > 1 and epochs % 4 != 0


#: Bumped when augmentation changes what a run sees; hashed into the address of every run whose recipe
#: augments (harness.runspec), so a stored run is never reused for other images. 2: the crop pads the
#: raw image with black, before normalizing (methods.md, torchvision's RandomCrop then Normalize);
#: version 1 padded the normalized image with 0, i.e. with each channel's mean.
AUGMENT_VERSION = 2


def random_crop_flip(x: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Random crop with zero padding plus horizontal flip for a whole batch at once. Call it on the
    raw uint8 images and normalize after, so that the padding is black, as the recipe specifies.

    One gather over precomputed index grids keeps augmentation on the device with no per-sample
    Python, which is what makes the in-memory pipeline fast.
    """
    b, c, h, w = x.shape
    padded = nn.functional.pad(x, (padding, padding, padding, padding))
    dev = x.device
    oy = torch.randint(0, 2 * padding + 1, (b,), device=dev, generator=generator)
    ox = torch.randint(0, 2 * padding + 1, (b,), device=dev, generator=generator)
    flip = torch.rand(b, device=dev, generator=generator) < 0.5
    rows = oy[:, None] + torch.arange(h, device=dev)[None, :]  # (b, h)
    cols = torch.arange(w, device=dev)[None, :].expand(b, w)
    cols = torch.where(flip[:, None], w - 1 - cols, cols) + ox[:, None]  # (b, w)
    bi = torch.arange(b, device=dev)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[bi, rows[:, :, None], cols[:, None, :]]  # (b, h, w, c)
    return out.permute(0, 3, 1, 2).contiguous()
