"""Wide ResNets (``wrn_16_1`` ... ``wrn_40_2``) and BN-VGGs (``vgg8``, ``vgg13``) of the CRD
CIFAR zoo, with CRD's parameter names."""
from typing import List, Optional, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .base import ClsNet

__all__ = ["WideResNet", "VGG", "wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2", "vgg8", "vgg13"]


class WideBasic(nn.Module):
    """Pre-activation block (BN-ReLU-conv x2); (N, C_in, H, W) -> (N, C_out, H/s, W/s)."""

    def __init__(self, in_planes: int, out_planes: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, 1, 1, bias=False)
        self.equal_in_out = in_planes == out_planes
        self.convShortcut = None if self.equal_in_out else nn.Conv2d(
            in_planes, out_planes, 1, stride, 0, bias=False)

    def forward(self, x: torch.Tensor, bn_x: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``bn_x``: ``self.bn1(x)`` when the caller computed it already (WRN's pre-activation
        tap of the previous stage), so batch norm runs once."""
        act = self.relu1(self.bn1(x)) if bn_x is None else F.relu(bn_x)
        out = self.conv2(self.relu2(self.bn2(self.conv1(act))))
        shortcut = x if self.equal_in_out else self.convShortcut(act)
        return shortcut + out


class NetworkBlock(nn.Module):
    def __init__(self, n: int, in_planes: int, out_planes: int, stride: int):
        super().__init__()
        self.layer = nn.Sequential(*[
            WideBasic(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1)
            for i in range(n)])

    def forward(self, x: torch.Tensor, bn_x: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = self.layer[0](x, bn_x)
        for block in self.layer[1:]:
            x = block(x)
        return x


class WideResNet(ClsNet):
    """WRN-depth-widen for 32x32 inputs (3 stages; the last map is after the final BN-ReLU)."""

    def __init__(self, depth: int, widen_factor: int, num_classes: int = 100):
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WideResNet depth must be 6n+4, got {depth}.")
        n = (depth - 4) // 6
        ch = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(3, ch[0], 3, 1, 1, bias=False)
        self.block1 = NetworkBlock(n, ch[0], ch[1], 1)
        self.block2 = NetworkBlock(n, ch[1], ch[2], 2)
        self.block3 = NetworkBlock(n, ch[2], ch[3], 2)
        self.bn1 = nn.BatchNorm2d(ch[3])
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(ch[3], num_classes)
        self.stage_channels = tuple(ch[1:])  # stage_feats: the same channels
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.data.fill_(1)
                m.bias.data.zero_()
            elif isinstance(m, nn.Linear):
                m.bias.data.zero_()

    def forward_taps(self, x: torch.Tensor, preact: bool = False):
        """feats: block1, block2 outputs and BN-ReLU(block3 output) (pooled into the embedding).
        stage_feats (CRD's WRN): the three block outputs. preact_feats (CRD's ``preact=True``):
        each block output through the BN that the next ReLU follows (the first BN of the next
        block; ``bn1`` for the last), computed once and reused by that block."""
        f1 = self.block1(self.conv1(x))
        p1 = self.block2.layer[0].bn1(f1)
        f2 = self.block2(f1, p1)
        p2 = self.block3.layer[0].bn1(f2)
        f3_raw = self.block3(f2, p2)
        p3 = self.bn1(f3_raw)
        f3 = F.relu(p3)
        return {"feats": [f1, f2, f3], "stage_feats": [f1, f2, f3_raw],
                "preact_feats": [p1, p2, p3] if preact else None}

    def get_classifier(self) -> nn.Module:
        return self.fc


def wrn_16_1(num_classes: int = 100) -> WideResNet:
    return WideResNet(16, 1, num_classes)


def wrn_16_2(num_classes: int = 100) -> WideResNet:
    return WideResNet(16, 2, num_classes)


def wrn_40_1(num_classes: int = 100) -> WideResNet:
    return WideResNet(40, 1, num_classes)


def wrn_40_2(num_classes: int = 100) -> WideResNet:
    return WideResNet(40, 2, num_classes)


_VGG_CFG = {
    "vgg8": [[64], [128], [256], [512], [512]],
    "vgg13": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
}


class VGG(ClsNet):
    """BN-VGG of CRD: 5 conv blocks (max-pool between the first four on 32x32 inputs).

    Stages are the outputs of blocks 1-4 (block 0 is the stem); the last one (512 ch, 4x4
    on CIFAR) is pooled into the embedding.
    """

    def __init__(self, cfg: Sequence[Sequence[int]], num_classes: int = 100):
        super().__init__()
        in_ch = [3] + [c[-1] for c in cfg[:-1]]
        for i in range(5):
            setattr(self, f"block{i}", self._make_layers(cfg[i], in_ch[i]))
        self.pool = nn.MaxPool2d(2, 2)
        self.classifier = nn.Linear(cfg[-1][-1], num_classes)
        self.stage_channels = tuple(c[-1] for c in cfg[1:])
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                m.weight.data.normal_(0, (2.0 / n) ** 0.5)
                m.bias.data.zero_()
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.data.fill_(1)
                m.bias.data.zero_()
            elif isinstance(m, nn.Linear):
                m.weight.data.normal_(0, 0.01)
                m.bias.data.zero_()

    @staticmethod
    def _make_layers(widths: Sequence[int], in_channels: int) -> nn.Sequential:
        layers: List[nn.Module] = []
        for v in widths:
            layers += [nn.Conv2d(in_channels, v, 3, padding=1), nn.BatchNorm2d(v),
                       nn.ReLU(inplace=True)]
            in_channels = v
        return nn.Sequential(*layers[:-1])  # the block's last ReLU is applied in forward

    def forward_taps(self, x: torch.Tensor, preact: bool = False):
        """Stages: blocks 1-4 after their ReLU; pre-activation = before it (CRD)."""
        h = x.shape[2]
        x = self.pool(F.relu(self.block0(x)))
        p1 = self.block1(x)
        f1 = F.relu(p1)
        p2 = self.block2(self.pool(f1))
        f2 = F.relu(p2)
        p3 = self.block3(self.pool(f2))
        f3 = F.relu(p3)
        p4 = self.block4(self.pool(f3) if h == 64 else f3)
        f4 = F.relu(p4)
        feats = [f1, f2, f3, f4]
        return {"feats": feats, "stage_feats": feats, "preact_feats": [p1, p2, p3, p4] if preact else None}

    def get_classifier(self) -> nn.Module:
        return self.classifier


def vgg8(num_classes: int = 100) -> VGG:
    return VGG(_VGG_CFG["vgg8"], num_classes)


def vgg13(num_classes: int = 100) -> VGG:
    return VGG(_VGG_CFG["vgg13"], num_classes)
