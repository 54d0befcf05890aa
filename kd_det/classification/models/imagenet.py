"""ImageNet models: torchvision ResNet-18/34/50 and MobileNetV2 (same parameter names as
torchvision, so torchvision checkpoints load and ``convert_backbone`` reads either), plus a
MobileNet (V1). The ResNet-50 -> MobileNet rows of the DCD paper use MobileNetV2 (its v2,
Table 3, and its code's ImageNet zoo); no table row uses the V1."""

import torch
from torch import nn
from torchvision.models import mobilenet as tv_mobilenet
from torchvision.models import resnet as tv_resnet

from .base import ClsNet, run_stages

__all__ = ["TVResNet", "TVMobileNetV2", "MobileNetV1", "resnet18", "resnet34", "resnet50",
           "mobilenet_v2", "mobilenet_v1"]


class TVResNet(ClsNet, tv_resnet.ResNet):
    """torchvision ResNet; stages = ``layer1``..``layer4`` (strides 4, 8, 16, 32)."""

    def __init__(self, block, layers, num_classes: int = 1000):
        super().__init__(block, layers, num_classes=num_classes)
        w = 4 if block is tv_resnet.Bottleneck else 1
        self.stage_channels = (64 * w, 128 * w, 256 * w, 512 * w)

    def forward_taps(self, x: torch.Tensor, preact: bool = False):
        """Stages ``layer1..4``; pre-activation = the last block's sum before its ReLU
        (mdistiller's ImageNet ResNet ``preact_feats``)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        feats, pres = run_stages((self.layer1, self.layer2, self.layer3, self.layer4), x, preact, _tv_block_preact)
        return {"feats": feats, "stage_feats": feats, "preact_feats": pres}

    def get_classifier(self) -> nn.Module:
        return self.fc

    forward = ClsNet.forward


class TVMobileNetV2(ClsNet, tv_mobilenet.MobileNetV2):
    """torchvision MobileNetV2; stages end at ``features.3/6/13/18`` (strides 4, 8, 16, 32)."""

    STAGE_ENDS = (3, 6, 13, 18)

    def __init__(self, num_classes: int = 1000):
        super().__init__(num_classes=num_classes)
        self.stage_channels = tuple(
            _out_channels(self.features[i]) for i in self.STAGE_ENDS)

    def forward_taps(self, x: torch.Tensor, preact: bool = False):
        """Stage ends 3, 6, 13 are inverted-residual outputs (no activation: their own
        pre-activation); stage end 18 is conv-BN-ReLU6, whose pre-activation is the BN output."""
        feats, pres = [], []
        last = len(self.features) - 1
        for i, layer in enumerate(self.features):
            if preact and i == last:
                pre = layer[1](layer[0](x))
                x = nn.functional.relu6(pre)  # not layer[2]: it is in-place
            else:
                x = layer(x)
                pre = x
            if i in self.STAGE_ENDS:
                feats.append(x)
                pres.append(pre)
        return {"feats": feats, "stage_feats": feats, "preact_feats": pres if preact else None}

    def get_classifier(self) -> nn.Module:
        return self.classifier

    forward = ClsNet.forward


def _tv_block_preact(block: nn.Module, x: torch.Tensor):
    """(output, sum before the final ReLU) of a torchvision BasicBlock / Bottleneck."""
    identity = x if block.downsample is None else block.downsample(x)
    out = block.relu(block.bn1(block.conv1(x)))
    if isinstance(block, tv_resnet.Bottleneck):
        out = block.relu(block.bn2(block.conv2(out)))
        out = block.bn3(block.conv3(out))
    else:
        out = block.bn2(block.conv2(out))
    pre = out + identity
    return torch.relu(pre), pre


def _out_channels(module: nn.Module) -> int:
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels


def _conv_bn(inp: int, oup: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inp, oup, 3, stride, 1, bias=False), nn.BatchNorm2d(oup),
                         nn.ReLU(inplace=True))


def _conv_dw(inp: int, oup: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inp, inp, 3, stride, 1, groups=inp, bias=False), nn.BatchNorm2d(inp),
        nn.ReLU(inplace=True),
        nn.Conv2d(inp, oup, 1, 1, 0, bias=False), nn.BatchNorm2d(oup), nn.ReLU(inplace=True))


class MobileNetV1(ClsNet):
    """MobileNet (V1, width 1.0), the ImageNet student of mdistiller's r50_mv1 configs; 4.2 M parameters.

    Stages end at ``model.3/5/11/13`` (strides 4, 8, 16, 32).
    """

    STAGE_ENDS = (3, 5, 11, 13)

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        cfg = [(32, 64, 1), (64, 128, 2), (128, 128, 1), (128, 256, 2), (256, 256, 1),
               (256, 512, 2)] + [(512, 512, 1)] * 5 + [(512, 1024, 2), (1024, 1024, 1)]
        self.model = nn.Sequential(_conv_bn(3, 32, 2), *[_conv_dw(*c) for c in cfg])
        self.fc = nn.Linear(1024, num_classes)
        self.stage_channels = (128, 256, 512, 1024)

    def forward_taps(self, x: torch.Tensor, preact: bool = False):
        """Stage ends are depthwise-separable blocks ending in ReLU; pre-activation = before it."""
        feats, pres = [], []
        for i, layer in enumerate(self.model):
            if preact and i in self.STAGE_ENDS:
                pre = layer[:-1](x)
                x = torch.relu(pre)
                pres.append(pre)
            else:
                x = layer(x)
            if i in self.STAGE_ENDS:
                feats.append(x)
        return {"feats": feats, "stage_feats": feats, "preact_feats": pres if preact else None}

    def get_classifier(self) -> nn.Module:
        return self.fc


def resnet18(num_classes: int = 1000) -> TVResNet:
    return TVResNet(tv_resnet.BasicBlock, [2, 2, 2, 2], num_classes)


def resnet34(num_classes: int = 1000) -> TVResNet:
    return TVResNet(tv_resnet.BasicBlock, [3, 4, 6, 3], num_classes)


def resnet50(num_classes: int = 1000) -> TVResNet:
    return TVResNet(tv_resnet.Bottleneck, [3, 4, 6, 3], num_classes)


def mobilenet_v2(num_classes: int = 1000) -> TVMobileNetV2:
    return TVMobileNetV2(num_classes)


def mobilenet_v1(num_classes: int = 1000) -> MobileNetV1:
    return MobileNetV1(num_classes)
