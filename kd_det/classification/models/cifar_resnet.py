"""CIFAR ResNets of the CRD / DKD model zoo (``resnet8`` ... ``resnet110``, ``resnet8x4``,
``resnet32x4``) and the CIFAR ResNet-50 (``resnet50_cifar``).

Parameter names follow the CRD (RepDistiller) code, so its published teacher checkpoints
load with ``strict=True``.
"""
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .base import ClsNet, run_stages

__all__ = ["CifarResNet", "CifarResNetV2", "resnet8", "resnet14", "resnet20", "resnet32",
           "resnet44", "resnet56", "resnet110", "resnet8x4", "resnet32x4", "resnet50_cifar"]


def _init_weights(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)


class BasicBlock(nn.Module):
    """3x3-3x3 residual block; (N, C_in, H, W) -> (N, planes, H/stride, W/stride)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_preact(x)[0]

    def forward_preact(self, x: torch.Tensor):
        """(output, the sum before the final ReLU)."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        pre = out + identity
        return F.relu(pre), pre


class CifarResNet(ClsNet):
    """ResNet-(6n+2) for 32x32 inputs: 3 stages at strides 1, 2, 4.

    Args:
        depth: 6n + 2 (8, 14, 20, 32, 44, 56, 110).
        num_filters: channels of the stem and of the three stages.
        num_classes: output classes.
    """

    def __init__(self, depth: int, num_filters: Sequence[int], num_classes: int = 100):
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}.")
        n = (depth - 2) // 6
        self.inplanes = num_filters[0]
        self.conv1 = nn.Conv2d(3, num_filters[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(num_filters[0])
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(num_filters[1], n, 1)
        self.layer2 = self._make_layer(num_filters[2], n, 2)
        self.layer3 = self._make_layer(num_filters[3], n, 2)
        self.fc = nn.Linear(num_filters[3], num_classes)
        self.stage_channels = tuple(num_filters[1:])
        _init_weights(self)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for i in range(blocks):
            layers.append(BasicBlock(self.inplanes, planes, stride if i == 0 else 1))
            self.inplanes = planes
        return nn.Sequential(*layers)

    def forward_taps(self, x: torch.Tensor, preact: bool = False):
        """Stages ``layer1..3``; pre-activation = the last block's sum before its ReLU (CRD)."""
        x = self.relu(self.bn1(self.conv1(x)))
        feats, pres = run_stages((self.layer1, self.layer2, self.layer3), x, preact)
        return {"feats": feats, "stage_feats": feats, "preact_feats": pres}

    def get_classifier(self) -> nn.Module:
        return self.fc


class Bottleneck(nn.Module):
    """1x1-3x3-1x1 bottleneck; (N, C_in, H, W) -> (N, 4 * planes, H/stride, W/stride)."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, self.expansion * planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(self.expansion * planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != self.expansion * planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, self.expansion * planes, 1, stride, bias=False),
                nn.BatchNorm2d(self.expansion * planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_preact(x)[0]

    def forward_preact(self, x: torch.Tensor):
        """(output, the sum before the final ReLU)."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        pre = out + self.shortcut(x)
        return F.relu(pre), pre


class CifarResNetV2(ClsNet):
    """The CIFAR ResNet-50 of CRD ("ResNet50"): 3x3 stem, 4 bottleneck stages."""

    def __init__(self, num_blocks: Sequence[int] = (3, 4, 6, 3), num_classes: int = 100):
        super().__init__()
        self.in_planes = 64
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = self._make_layer(64, num_blocks[0], 1)
        self.layer2 = self._make_layer(128, num_blocks[1], 2)
        self.layer3 = self._make_layer(256, num_blocks[2], 2)
        self.layer4 = self._make_layer(512, num_blocks[3], 2)
        self.linear = nn.Linear(512 * Bottleneck.expansion, num_classes)
        self.stage_channels = (256, 512, 1024, 2048)
        _init_weights(self)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for i in range(blocks):
            layers.append(Bottleneck(self.in_planes, planes, stride if i == 0 else 1))
            self.in_planes = planes * Bottleneck.expansion
        return nn.Sequential(*layers)

    def forward_taps(self, x: torch.Tensor, preact: bool = False):
        """Stages ``layer1..4``; pre-activation = the last block's sum before its ReLU (CRD)."""
        out = F.relu(self.bn1(self.conv1(x)))
        feats, pres = run_stages((self.layer1, self.layer2, self.layer3, self.layer4), out, preact)
        return {"feats": feats, "stage_feats": feats, "preact_feats": pres}

    def get_classifier(self) -> nn.Module:
        return self.linear


def resnet8(num_classes: int = 100) -> CifarResNet:
    return CifarResNet(8, [16, 16, 32, 64], num_classes)


def resnet14(num_classes: int = 100) -> CifarResNet:
    return CifarResNet(14, [16, 16, 32, 64], num_classes)


def resnet20(num_classes: int = 100) -> CifarResNet:
    return CifarResNet(20, [16, 16, 32, 64], num_classes)


def resnet32(num_classes: int = 100) -> CifarResNet:
    return CifarResNet(32, [16, 16, 32, 64], num_classes)


def resnet44(num_classes: int = 100) -> CifarResNet:
    return CifarResNet(44, [16, 16, 32, 64], num_classes)


def resnet56(num_classes: int = 100) -> CifarResNet:
    return CifarResNet(56, [16, 16, 32, 64], num_classes)


def resnet110(num_classes: int = 100) -> CifarResNet:
    return CifarResNet(110, [16, 16, 32, 64], num_classes)


def resnet8x4(num_classes: int = 100) -> CifarResNet:
    return CifarResNet(8, [32, 64, 128, 256], num_classes)


def resnet32x4(num_classes: int = 100) -> CifarResNet:
    return CifarResNet(32, [32, 64, 128, 256], num_classes)


def resnet50_cifar(num_classes: int = 100) -> CifarResNetV2:
    return CifarResNetV2((3, 4, 6, 3), num_classes)
