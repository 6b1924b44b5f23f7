"""Model registry, in the spirit of timm's: a name maps to a factory taking the input shape and
the number of classes, so run specs can name models and the store can hash them.

`batchnorm_free` tells the ensemble trainer (baselines) whether a model can be trained K at a time
with torch.func: batch-norm running statistics are buffers that vmap cannot update.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from harness.errors import HarnessError

Factory = Callable[[tuple[int, int, int], int], nn.Module]


@dataclass(frozen=True)
class ModelEntry:
    name: str
    description: str
    factory: Factory
    batchnorm_free: bool


MODELS: dict[str, ModelEntry] = {}


def register_model(name: str, description: str, *, batchnorm_free: bool = False):
    def wrap(factory: Factory) -> Factory:
        MODELS[name] = ModelEntry(name, description, factory, batchnorm_free)
        return factory

    return wrap


def build_model(name: str, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    if name not in MODELS:
        raise HarnessError(
            f"unknown model {name!r}; valid models: {', '.join(sorted(MODELS))} "
            "(see `python -m harness list`)"
        )
    return MODELS[name].factory(input_shape, num_classes)


@register_model("mlp", "2-hidden-layer MLP (256 units, ReLU); the digits default", batchnorm_free=True)
def mlp(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    c, h, w = input_shape
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(c * h * w, 256),
        nn.ReLU(),
        nn.Linear(256, 256),
        nn.ReLU(),
        nn.Linear(256, num_classes),
    )


@register_model("mlp_small", "1-hidden-layer MLP (64 units, ReLU); for large stability ensembles", batchnorm_free=True)
def mlp_small(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    c, h, w = input_shape
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, 64), nn.ReLU(), nn.Linear(64, num_classes))


def _small_cnn(channels: int, num_classes: int, norm: Callable[[int], nn.Module]) -> nn.Sequential:
    """Four 3x3 conv + norm + ReLU blocks (32-64-128-256), max-pooling between them."""
    layers: list[nn.Module] = []
    widths = (channels, 32, 64, 128, 256)
    for i, (cin, cout) in enumerate(zip(widths, widths[1:])):
        if i:
            layers.append(nn.MaxPool2d(2))
        layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), norm(cout), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(256, num_classes))


@register_model("small_cnn", "4-conv CNN with batch norm, pooling after each conv (~0.4M params); fast CPU model")
def small_cnn(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    return _small_cnn(input_shape[0], num_classes, nn.BatchNorm2d)


@register_model("small_cnn_gn", "small_cnn with GroupNorm (8 groups) for batch norm: no running statistics, "
                "so stability ensembles of it train batched", batchnorm_free=True)
def small_cnn_gn(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """GroupNorm normalises each sample on its own, so a member's output does not depend on the
    rest of its batch and there are no buffers to update: ``torch.func.vmap`` can stack it."""
    return _small_cnn(input_shape[0], num_classes, lambda width: nn.GroupNorm(8, width))


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 with the 3x3 stride-1 stem and no max-pool used for 32x32 inputs (paper App. B.1)."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU())
        layers: list[nn.Module] = []
        cin = 64
        for cout, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
            layers += [_BasicBlock(cin, cout, stride), _BasicBlock(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.head = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(self.stem(x))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(out, 1), 1))


@register_model("resnet18", "ResNet-18 with a 3x3 stem for 32x32 inputs (the paper's model)")
def resnet18(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    return ResNet18(input_shape[0], num_classes)
