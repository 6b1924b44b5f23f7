"""Model registry, in the spirit of timm's: a name maps to a factory taking the input shape and
the number of classes, so run specs can name models and the store can hash them.

The cross-architecture models (paper App. B.2; Feldman & Zhang's CIFAR-100 Inception) are the
CIFAR variants that common CIFAR code trains on 32x32 inputs: 3x3 stride-1 stems and no ImageNet
max-pool, so a 32x32 image is not reduced to 1x1 before the last stage. Where torchvision has the
architecture it builds it, with only the stem (and MobileNetV2's first stride) changed; parameter
counts and FLOPs are checked against published figures in tests/test_models.py.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from harness.errors import HarnessError
from harness.model_registry import MODELS, Factory, ModelEntry, build_model, register_model  # noqa: F401


@register_model("mlp", "2-hidden-layer MLP (256 units, ReLU); the digits default")
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


@register_model("mlp_small", "1-hidden-layer MLP (64 units, ReLU); for large stability ensembles")
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


@register_model("small_cnn_gn", "small_cnn with GroupNorm (8 groups) for batch norm: each sample normalised "
                "on its own, independent of its batch")
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


def _conv_bn_relu(cin: int, cout: int, pool: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                               nn.ReLU(inplace=True)]
    return nn.Sequential(*layers, nn.MaxPool2d(2)) if pool else nn.Sequential(*layers)


class _Residual(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv_bn_relu(width, width), _conv_bn_relu(width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _resnet9(in_channels: int, num_classes: int, width: int) -> nn.Sequential:
    """The ResNet-9 of the DAWNBench CIFAR-10 entries (Page, 2018): stages of width w, 2w, 4w, 8w,
    each stage after the first pooled, a residual pair of convs after the second and the fourth,
    global max-pooling. Unlike small_cnn it convolves at full resolution before it pools, which is
    where small_cnn loses its accuracy; at w=16 it costs 1.6x small_cnn's FLOPs."""
    return nn.Sequential(
        _conv_bn_relu(in_channels, width),
        _conv_bn_relu(width, 2 * width, pool=True), _Residual(2 * width),
        _conv_bn_relu(2 * width, 4 * width, pool=True),
        _conv_bn_relu(4 * width, 8 * width, pool=True), _Residual(8 * width),
        nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(8 * width, num_classes),
    )


@register_model("resnet9", "ResNet-9 of the DAWNBench CIFAR-10 entries (widths 64-128-256-512, two residual "
                "pairs, ~6.6M params, 0.76 GFLOP per 32x32 image)")
def resnet9(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    _min_size("resnet9", input_shape, 8)
    return _resnet9(input_shape[0], num_classes, 64)


@register_model("resnet9_quarter", "resnet9 at a quarter of its widths (16-32-64-128, ~0.41M params, 48 MFLOP "
                "per 32x32 image); the cpu-full model")
def resnet9_quarter(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    _min_size("resnet9_quarter", input_shape, 8)
    return _resnet9(input_shape[0], num_classes, 16)


def _min_size(name: str, input_shape: tuple[int, int, int], side: int) -> None:
    if min(input_shape[1:]) < side:
        raise HarnessError(f"model {name} needs inputs of at least {side}x{side} pixels (got "
                           f"{input_shape[1]}x{input_shape[2]}); pick small_cnn or mlp for small images")


_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


@register_model("vgg16", "VGG-16 with batch norm, CIFAR variant: 13 conv layers, one linear layer on the "
                "512 features (~14.7M params); paper App. B.2")
def vgg16(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """The CIFAR VGG-16 of common CIFAR code: torchvision's vgg16_bn convolution stack ("D" with
    batch norm) and, because five poolings leave 1x1x512 on a 32x32 image, one linear layer in
    place of the three 4096-wide ImageNet ones."""
    _min_size("vgg16", input_shape, 32)
    layers: list[nn.Module] = []
    cin = input_shape[0]
    for v in _VGG16:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(cin, int(v), 3, padding=1), nn.BatchNorm2d(int(v)), nn.ReLU(inplace=True)]
            cin = int(v)
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, num_classes))


def _stem(in_channels: int, out_channels: int) -> nn.Conv2d:
    """3x3 stride-1 stem conv, initialised as torchvision initialises the conv it replaces."""
    conv = nn.Conv2d(in_channels, out_channels, 3, 1, 1, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return conv


#: torchvision's MobileNetV2 stages (expansion t, channels c, repeats n, stride s) with the
#: 24-channel stage at stride 1, as in common CIFAR code: with the stride-1 stem, a 32x32 image
#: reaches the last stage at 4x4 (ImageNet's setting would leave 1x1).
_MOBILENETV2_CIFAR = [[1, 16, 1, 1], [6, 24, 2, 1], [6, 32, 3, 2], [6, 64, 4, 2], [6, 96, 3, 1],
                      [6, 160, 3, 2], [6, 320, 1, 1]]


@register_model("mobilenetv2", "MobileNetV2 (torchvision), CIFAR variant: stride-1 3x3 stem and stride-1 "
                "second stage, no dropout (~2.24M params); paper App. B.2")
def mobilenetv2(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    import torchvision  # here, not at import: torchvision.models costs seconds of start-up in every worker

    model = torchvision.models.MobileNetV2(num_classes=num_classes, inverted_residual_setting=_MOBILENETV2_CIFAR,
                                           dropout=0.0)
    model.features[0][0] = _stem(input_shape[0], 32)
    return model


@register_model("resnet50", "ResNet-50 (torchvision bottleneck blocks) with a 3x3 stride-1 stem and no "
                "max-pool for 32x32 inputs (~23.5M params)")
def resnet50(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    import torchvision

    model = torchvision.models.resnet50(num_classes=num_classes)
    model.conv1 = _stem(input_shape[0], 64)
    model.maxpool = nn.Identity()
    return model


class _ConvBN(nn.Module):
    """Zhang et al.'s conv module: conv, batch norm with a learned shift but no learned scale
    (TensorFlow's batch_norm default, which their parameter count reflects), ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout, affine=False)
        self.shift = nn.Parameter(torch.zeros(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x)) + self.shift[:, None, None])


class _Inception(nn.Module):
    """A 1x1 and a 3x3 conv module side by side, concatenated."""

    def __init__(self, cin: int, ch1: int, ch3: int) -> None:
        super().__init__()
        self.b1 = _ConvBN(cin, ch1, 1)
        self.b3 = _ConvBN(cin, ch3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b1(x), self.b3(x)], 1)


class _Downsample(nn.Module):
    """A stride-2 3x3 conv module beside a stride-2 3x3 max-pool, concatenated."""

    def __init__(self, cin: int, ch3: int) -> None:
        super().__init__()
        self.conv = _ConvBN(cin, ch3, 3, stride=2)
        self.pool = nn.MaxPool2d(3, 2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.conv(x), self.pool(x)], 1)


class InceptionSmall(nn.Module):
    """The small Inception of Zhang et al. 2017 (Understanding deep learning requires rethinking
    generalization, App. A, Fig. 3), the network Feldman & Zhang (2020) trained on CIFAR-100.
    Zhang et al. fed 28x28 crops; here "same" padding and global mean pooling take any size
    (32x32 -> 16x16 -> 8x8 before pooling); the parameter count does not depend on it."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _ConvBN(in_channels, 96, 3),
            _Inception(96, 32, 32),
            _Inception(64, 32, 48),
            _Downsample(80, 80),
            _Inception(160, 112, 48),
            _Inception(160, 96, 64),
            _Inception(160, 80, 80),
            _Inception(160, 48, 96),
            _Downsample(144, 96),
            _Inception(240, 176, 160),
            _Inception(336, 176, 160),
        )
        self.head = nn.Linear(336, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean((2, 3)))


@register_model("inception_small", "Zhang et al. (2017)'s small Inception for CIFAR (~1.65M params), the one "
                "Feldman & Zhang trained on CIFAR-100")
def inception_small(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    return InceptionSmall(input_shape[0], num_classes)


# Text classifiers (token-id inputs from `hf:` text datasets) are registered by their own module.
from harness import text_models as _text_models  # noqa: E402,F401
