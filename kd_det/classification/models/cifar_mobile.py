"""Mobile students of the CRD CIFAR zoo: ``mobilenetv2_cifar`` (CRD's ``mobile_half``:
MobileNetV2, expansion 6, width 0.5), ``shufflenetv1`` (g=3) and ``shufflenetv2`` (1x)."""

import torch
from torch import nn
from torch.nn import functional as F

from .base import ClsNet, run_stages

__all__ = ["MobileNetV2Cifar", "ShuffleNetV1", "ShuffleNetV2", "mobilenetv2_cifar",
           "shufflenetv1", "shufflenetv2"]


def _conv_bn(inp: int, oup: int, k: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inp, oup, k, stride, k // 2, bias=False),
                         nn.BatchNorm2d(oup), nn.ReLU(inplace=True))


class InvertedResidual(nn.Module):
    """CRD's inverted residual (always with the 1x1 expansion, even for t=1)."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int):
        super().__init__()
        hid = inp * expand_ratio
        self.use_res_connect = stride == 1 and inp == oup
        self.conv = nn.Sequential(
            nn.Conv2d(inp, hid, 1, 1, 0, bias=False), nn.BatchNorm2d(hid), nn.ReLU(inplace=True),
            nn.Conv2d(hid, hid, 3, stride, 1, groups=hid, bias=False), nn.BatchNorm2d(hid),
            nn.ReLU(inplace=True),
            nn.Conv2d(hid, oup, 1, 1, 0, bias=False), nn.BatchNorm2d(oup))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2Cifar(ClsNet):
    """MobileNetV2 for 32x32 inputs; stages end at strides 2, 4, 8 and the 1x1 ``conv2``."""

    def __init__(self, expansion: int = 6, width_mult: float = 0.5, num_classes: int = 100):
        super().__init__()
        setting = [[1, 16, 1, 1], [expansion, 24, 2, 1], [expansion, 32, 3, 2],
                   [expansion, 64, 4, 2], [expansion, 96, 3, 1], [expansion, 160, 3, 2],
                   [expansion, 320, 1, 1]]
        inp = int(32 * width_mult)
        self.conv1 = _conv_bn(3, inp, 3, 2)
        self.blocks = nn.ModuleList()
        for t, c, n, s in setting:
            oup = int(c * width_mult)
            layers = []
            for stride in [s] + [1] * (n - 1):
                layers.append(InvertedResidual(inp, oup, stride, t))
                inp = oup
            self.blocks.append(nn.Sequential(*layers))
        self.last_channel = int(1280 * width_mult) if width_mult > 1.0 else 1280
        self.conv2 = _conv_bn(inp, self.last_channel, 1, 1)
        self.classifier = nn.Sequential(nn.Linear(self.last_channel, num_classes))
        w = [int(c * width_mult) for c in (24, 32, 96, 320)]
        self.stage_channels = (w[0], w[1], w[2], self.last_channel)
        self._stage_feat_channels = tuple(w)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                m.weight.data.normal_(0, (2.0 / n) ** 0.5)
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.data.fill_(1)
                m.bias.data.zero_()
            elif isinstance(m, nn.Linear):
                m.weight.data.normal_(0, 0.01)
                m.bias.data.zero_()

    def forward_taps(self, x: torch.Tensor, preact: bool = False):
        """feats: groups 1, 2, 4 and the 1x1 ``conv2`` (pooled into the embedding).
        stage_feats (CRD's MobileNetV2): groups 1, 2, 4 and 6. These inverted-residual outputs
        end in BN (no activation), so they are their own pre-activation maps."""
        out = self.conv1(x)
        taps = []
        for i, block in enumerate(self.blocks):
            out = block(out)
            if i in (1, 2, 4, 6):
                taps.append(out)
        feats = taps[:3] + [self.conv2(out)]
        return {"feats": feats, "stage_feats": taps, "preact_feats": taps if preact else None}

    def get_classifier(self) -> nn.Module:
        return self.classifier


def _channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleBottleneck(nn.Module):
    """ShuffleNetV1 unit; stride 2 concatenates an average-pooled shortcut."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, groups: int):
        super().__init__()
        self.stride = stride
        mid = out_planes // 4
        self.g = 1 if in_planes == 24 else groups
        self.conv1 = nn.Conv2d(in_planes, mid, 1, groups=self.g, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, out_planes, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = nn.Sequential(nn.AvgPool2d(3, 2, 1)) if stride == 2 else nn.Sequential()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_preact(x)[0]

    def forward_preact(self, x: torch.Tensor):
        """(output, the concatenation / sum before the final ReLU)."""
        out = _channel_shuffle(F.relu(self.bn1(self.conv1(x))), self.g)
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        res = self.shortcut(x)
        pre = torch.cat([out, res], 1) if self.stride == 2 else out + res
        return F.relu(pre), pre


class ShuffleNetV1(ClsNet):
    """ShuffleNetV1 (g=3, 240/480/960) for 32x32 inputs; 3 stages."""

    def __init__(self, out_planes=(240, 480, 960), num_blocks=(4, 8, 4), groups: int = 3,
                 num_classes: int = 100):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 24, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        self.in_planes = 24
        self.layer1 = self._make_layer(out_planes[0], num_blocks[0], groups)
        self.layer2 = self._make_layer(out_planes[1], num_blocks[1], groups)
        self.layer3 = self._make_layer(out_planes[2], num_blocks[2], groups)
        self.linear = nn.Linear(out_planes[2], num_classes)
        self.stage_channels = tuple(out_planes)

    def _make_layer(self, out_planes: int, blocks: int, groups: int) -> nn.Sequential:
        layers = []
        for i in range(blocks):
            cat = self.in_planes if i == 0 else 0
            layers.append(ShuffleBottleneck(self.in_planes, out_planes - cat,
                                            2 if i == 0 else 1, groups))
            self.in_planes = out_planes
        return nn.Sequential(*layers)

    def forward_taps(self, x: torch.Tensor, preact: bool = False):
        """Stages ``layer1..3``; pre-activation = the last unit's output before its ReLU (CRD)."""
        out = F.relu(self.bn1(self.conv1(x)))
        feats, pres = run_stages((self.layer1, self.layer2, self.layer3), out, preact)
        return {"feats": feats, "stage_feats": feats, "preact_feats": pres}

    def get_classifier(self) -> nn.Module:
        return self.linear


class ShuffleV2Basic(nn.Module):
    """ShuffleNetV2 unit: split channels, transform one half, concat, shuffle."""

    def __init__(self, in_channels: int):
        super().__init__()
        c = in_channels // 2
        self.conv1 = nn.Conv2d(c, c, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, 1, 1, groups=c, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.conv3 = nn.Conv2d(c, c, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_preact(x)[0]

    def forward_preact(self, x: torch.Tensor):
        """(output, ``cat([x1, bn3(conv3(.))])`` before the ReLU and the channel shuffle, as the
        CRD / mdistiller ShuffleNetV2 returns it)."""
        c = x.shape[1] // 2
        x1, x2 = x[:, :c], x[:, c:]
        out = F.relu(self.bn1(self.conv1(x2)))
        out = self.bn2(self.conv2(out))
        pre = self.bn3(self.conv3(out))
        return _channel_shuffle(torch.cat([x1, F.relu(pre)], 1), 2), torch.cat([x1, pre], 1)


class ShuffleV2Down(nn.Module):
    """ShuffleNetV2 stride-2 unit; (N, C_in, H, W) -> (N, C_out, H/2, W/2)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        mid = out_channels // 2
        self.conv1 = nn.Conv2d(in_channels, in_channels, 3, 2, 1, groups=in_channels, bias=False)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv2 = nn.Conv2d(in_channels, mid, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(in_channels, mid, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv4 = nn.Conv2d(mid, mid, 3, 2, 1, groups=mid, bias=False)
        self.bn4 = nn.BatchNorm2d(mid)
        self.conv5 = nn.Conv2d(mid, mid, 1, bias=False)
        self.bn5 = nn.BatchNorm2d(mid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out1 = F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        out2 = F.relu(self.bn3(self.conv3(x)))
        out2 = F.relu(self.bn5(self.conv5(self.bn4(self.conv4(out2)))))
        return _channel_shuffle(torch.cat([out1, out2], 1), 2)


class ShuffleNetV2(ClsNet):
    """ShuffleNetV2 1x (116/232/464, 1x1 conv to 1024) for 32x32 inputs.

    Stages: ``layer1``, ``layer2`` and ``layer3`` followed by the 1x1 ``conv2`` (the map
    pooled into the 1024-d embedding).
    """

    def __init__(self, out_channels=(116, 232, 464, 1024), num_blocks=(3, 7, 3),
                 num_classes: int = 100):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 24, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        self.in_channels = 24
        self.layer1 = self._make_layer(out_channels[0], num_blocks[0])
        self.layer2 = self._make_layer(out_channels[1], num_blocks[1])
        self.layer3 = self._make_layer(out_channels[2], num_blocks[2])
        self.conv2 = nn.Conv2d(out_channels[2], out_channels[3], 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels[3])
        self.linear = nn.Linear(out_channels[3], num_classes)
        self.stage_channels = (out_channels[0], out_channels[1], out_channels[3])
        self._stage_feat_channels = tuple(out_channels[:3])

    def _make_layer(self, out_channels: int, blocks: int) -> nn.Sequential:
        layers = [ShuffleV2Down(self.in_channels, out_channels)]
        layers += [ShuffleV2Basic(out_channels) for _ in range(blocks)]
        self.in_channels = out_channels
        return nn.Sequential(*layers)

    def forward_taps(self, x: torch.Tensor, preact: bool = False):
        """feats: ``layer1``, ``layer2`` and ReLU(BN(conv2(layer3))) (pooled into the embedding).
        stage_feats (CRD's ShuffleNetV2): ``layer1..3``; pre-activation as the last unit's
        ``forward_preact``."""
        out = F.relu(self.bn1(self.conv1(x)))
        taps, pres = run_stages((self.layer1, self.layer2, self.layer3), out, preact)
        f3 = F.relu(self.bn2(self.conv2(taps[-1])))
        return {"feats": [taps[0], taps[1], f3], "stage_feats": taps, "preact_feats": pres}

    def get_classifier(self) -> nn.Module:
        return self.linear


def mobilenetv2_cifar(num_classes: int = 100) -> MobileNetV2Cifar:
    return MobileNetV2Cifar(6, 0.5, num_classes)


def shufflenetv1(num_classes: int = 100) -> ShuffleNetV1:
    return ShuffleNetV1(num_classes=num_classes)


def shufflenetv2(num_classes: int = 100) -> ShuffleNetV2:
    return ShuffleNetV2(num_classes=num_classes)
