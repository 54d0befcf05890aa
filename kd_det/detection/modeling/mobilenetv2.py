"""MobileNetV2-FPN backbone with torchvision's layer layout, so converted ImageNet weights load.

Parameter names are torchvision's (``features.0.0.weight``, ``features.1.conv.0.0.weight``,
...), under ``backbone.bottom_up.`` in a detector checkpoint; ``tools/convert_backbone.py``
writes exactly that. Stages (outputs named like ResNet's for FPN):

========= ================= ======== ========
name      torchvision blocks stride   channels
========= ================= ======== ========
``res2``  features[0:4]      4        24
``res3``  features[4:7]      8        32
``res4``  features[7:14]     16       96
``res5``  features[14:18]    32       320
========= ================= ======== ========

``features[18]`` (the 1280-channel classifier conv) is not built. BatchNorm follows
``MODEL.MOBILENET.NORM`` ("FrozenBN" by default, like Detectron2's ResNets); the first
``MODEL.BACKBONE.FREEZE_AT`` stages are frozen.
"""
from detectron2.layers import FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool
from torch import nn
from torchvision.models import mobilenet_v2

__all__ = ["MobileNetV2", "build_mobilenetv2_fpn_backbone"]  # its MODEL.MOBILENET.* keys: kd_det/config/detection.py

STAGES = {"res2": (0, 4, 4, 24), "res3": (4, 7, 8, 32), "res4": (7, 14, 16, 96), "res5": (14, 18, 32, 320)}


class MobileNetV2(Backbone):
    """torchvision MobileNetV2 ``features[0:18]`` returning stage outputs (B, C, H/s, W/s)."""

    def __init__(self, out_features, norm="FrozenBN", freeze_at=0):
        super().__init__()
        unknown = [f for f in out_features if f not in STAGES]
        if unknown:
            raise ValueError(f"MODEL.MOBILENET.OUT_FEATURES has {unknown}; known: {', '.join(STAGES)}.")
        self.features = mobilenet_v2(weights=None).features[:18]
        if norm == "FrozenBN":
            self.features = FrozenBatchNorm2d.convert_frozen_batchnorm(self.features)
        elif norm != "BN":
            raise ValueError(f"MODEL.MOBILENET.NORM is {norm!r}; expected 'FrozenBN' or 'BN'.")
        self._out_features = list(out_features)
        self._out_feature_strides = {k: STAGES[k][2] for k in out_features}
        self._out_feature_channels = {k: STAGES[k][3] for k in out_features}
        # FREEZE_AT as in Detectron2's ResNet: 1 = stem (features[0]), 2 = + res2, ... 5 = everything.
        frozen = [self.features[0]] if freeze_at >= 1 else []
        frozen += [self.features[a:b] for i, (a, b, _, _) in enumerate(STAGES.values()) if freeze_at >= i + 2]
        for module in frozen:
            for p in module.parameters():
                p.requires_grad_(False)

    def forward(self, x):
        """(B, 3, H, W) -> {stage: (B, C, H/s, W/s)} for the requested stages."""
        out = {}
        for name, (start, end, _, _) in STAGES.items():
            x = self.features[start:end](x)
            if name in self._out_features:
                out[name] = x
        return out

    def output_shape(self):
        return {k: ShapeSpec(channels=self._out_feature_channels[k], stride=self._out_feature_strides[k])
                for k in self._out_features}


@BACKBONE_REGISTRY.register()
def build_mobilenetv2_fpn_backbone(cfg, input_shape):
    """MobileNetV2 + FPN (p2..p6 with LastLevelMaxPool), as ``build_resnet_fpn_backbone``."""
    bottom_up = MobileNetV2(cfg.MODEL.MOBILENET.OUT_FEATURES, cfg.MODEL.MOBILENET.NORM,
                            cfg.MODEL.BACKBONE.FREEZE_AT)
    return FPN(bottom_up=bottom_up, in_features=cfg.MODEL.FPN.IN_FEATURES, out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
               norm=cfg.MODEL.FPN.NORM, top_block=LastLevelMaxPool(), fuse_type=cfg.MODEL.FPN.FUSE_TYPE)
