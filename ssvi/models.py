"""Model registry: CIFAR-style ResNet-18 and VGG-16 with a width multiplier, deterministic or Bayesian.

    model = create_model("resnet18", num_classes=10, width=0.25, in_channels=1, bayesian=True)

Names registered with ``@register_model`` build an ordinary ``nn.Module``; ``bayesian=True`` passes it
through :func:`ssvi.bayesianize.bayesianize`. Any timm model is also available as ``timm/<name>``
(built with ``pretrained=False``), so users can try other architectures without editing this file.
"""

from __future__ import annotations

from typing import Callable

import torch.nn as nn

from .bayesianize import bayesianize
from .layers import PosteriorInit

MODELS: dict[str, Callable[..., nn.Module]] = {}
TIMM_PREFIX = "timm/"


def register_model(name: str):
    def decorate(fn: Callable[..., nn.Module]):
        MODELS[name] = fn
        return fn
    return decorate


def list_models() -> list[str]:
    return sorted(MODELS)


def is_known_model(name: str) -> bool:
    """A registered name, or ``timm/<name>`` of a model in timm's registry (imports timm only then)."""
    if name.startswith(TIMM_PREFIX):
        import timm
        return timm.is_model(name[len(TIMM_PREFIX):])
    return name in MODELS


def create_model(name: str, num_classes: int, width: float = 1.0, in_channels: int = 3, bayesian: bool = True,
                 init: PosteriorInit = PosteriorInit()) -> nn.Module:
    if name in MODELS:
        model = MODELS[name](num_classes=num_classes, width=width, in_channels=in_channels)
    elif name.startswith(TIMM_PREFIX):
        import timm
        model = timm.create_model(name[len(TIMM_PREFIX):], pretrained=False, num_classes=num_classes,
                                  in_chans=in_channels)
    else:
        raise ValueError(f"unknown architecture {name!r}; allowed: {', '.join(list_models())} or timm/<name>")
    return bayesianize(model, init) if bayesian else model


def scaled(channels: int, width: float) -> int:
    return max(1, int(round(channels * width)))


# --------------------------------------------------------------------------------------------
# ResNet-18, CIFAR variant: 3x3 stride-1 stem, no max-pool, 1x1 conv + BN shortcuts
# --------------------------------------------------------------------------------------------

class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = self.bn1(self.conv1(x)).relu()
        out = self.bn2(self.conv2(out))
        return (out + self.shortcut(x)).relu()


class CifarResNet(nn.Module):
    def __init__(self, blocks_per_stage: list[int], num_classes: int, width: float, in_channels: int):
        super().__init__()
        planes = [scaled(c, width) for c in (64, 128, 256, 512)]
        self.conv1 = nn.Conv2d(in_channels, planes[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes[0])
        stages, in_planes = [], planes[0]
        for i, (p, n) in enumerate(zip(planes, blocks_per_stage)):
            blocks = []
            for j in range(n):
                blocks.append(BasicBlock(in_planes, p, stride=2 if (i > 0 and j == 0) else 1))
                in_planes = p
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(in_planes, num_classes)

    def forward(self, x):
        out = self.bn1(self.conv1(x)).relu()
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.linear(self.pool(out).flatten(1))


@register_model("resnet18")
def resnet18(num_classes: int, width: float = 1.0, in_channels: int = 3) -> nn.Module:
    return CifarResNet([2, 2, 2, 2], num_classes, width, in_channels)


# --------------------------------------------------------------------------------------------
# VGG-16, CIFAR style: conv3x3 + BN + ReLU stacks, max-pools, one linear classifier
# --------------------------------------------------------------------------------------------

VGG16_LAYOUT = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


class CifarVGG(nn.Module):
    def __init__(self, layout: list, num_classes: int, width: float, in_channels: int):
        super().__init__()
        layers, channels = [], in_channels
        for item in layout:
            if item == "M":
                # ceil_mode keeps 1x1 maps alive so small inputs (16x16 digits) fit the 32x32 layout
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
            else:
                out = scaled(item, width)
                layers += [nn.Conv2d(channels, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
                channels = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)).flatten(1))


@register_model("vgg16")
def vgg16(num_classes: int, width: float = 1.0, in_channels: int = 3) -> nn.Module:
    return CifarVGG(VGG16_LAYOUT, num_classes, width, in_channels)
