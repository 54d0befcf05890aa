"""FCOS built from a yacs config: Detectron2 0.6 ships ``FCOS`` / ``FCOSHead`` for LazyConfig only (not
registered, no ``MODEL.FCOS`` keys), so ``MODEL.META_ARCHITECTURE: "FCOS"`` needs this class.

It is Detectron2's ``FCOS`` with a ``from_config`` (keys :func:`kd_det.config.detection.add_fcos_config`, the d2go
layout) and the ``input_format`` every kd_det detector records; its parameters and buffers are exactly the stock
class's, so a checkpoint loads into a stock ``FCOS(backbone=..., head=FCOSHead(...), ...)`` unchanged. The backbone
is whatever ``MODEL.BACKBONE.NAME`` builds (the shapes configs: ``build_retinanet_resnet_fpn_backbone``, P6 from
C5; Detectron2's LazyConfig computes P6 from P5, Sec. 2.2 of FCOS's journal version; a stated difference).
"""
from detectron2.config import configurable
from torch import nn
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone
from detectron2.modeling.meta_arch.fcos import FCOS as _StockFCOS
from detectron2.modeling.meta_arch.fcos import FCOSHead

__all__ = ["FCOS", "head_norm"]


def head_norm(norm):
    """``MODEL.FCOS.HEAD_NORM`` as ``FCOSHead`` takes it. "GN" becomes a callable giving Detectron2's
    ``GroupNorm(32, C)`` (same parameters): the head's ``RetinaNetHead.__init__`` probes ``get_norm(norm, 1)``, which
    current torch refuses for 32 groups of 1 channel; the probe gets ``GroupNorm(1, 1)``."""
    if norm != "GN":
        return norm
    return lambda channels: nn.GroupNorm(32 if channels % 32 == 0 else 1, channels)


@META_ARCH_REGISTRY.register()
class FCOS(_StockFCOS):
    """Detectron2's FCOS, buildable by ``build_model(cfg)`` (``MODEL.FCOS.*``) or from explicit arguments."""

    @configurable
    def __init__(self, *, input_format="BGR", **kwargs):
        super().__init__(**kwargs)
        self.input_format = input_format

    @classmethod
    def from_config(cls, cfg):
        c = cfg.MODEL.FCOS
        backbone = build_backbone(cfg)
        shapes = [backbone.output_shape()[f] for f in c.IN_FEATURES]
        head = FCOSHead(input_shape=shapes, conv_dims=[shapes[0].channels] * c.NUM_CONVS, num_classes=c.NUM_CLASSES,
                        prior_prob=c.PRIOR_PROB, norm=head_norm(c.HEAD_NORM))
        return {"backbone": backbone, "head": head, "head_in_features": list(c.IN_FEATURES),
                "num_classes": c.NUM_CLASSES, "center_sampling_radius": c.CENTER_SAMPLING_RADIUS,
                "focal_loss_alpha": c.FOCAL_LOSS_ALPHA, "focal_loss_gamma": c.FOCAL_LOSS_GAMMA,
                "test_score_thresh": c.SCORE_THRESH_TEST, "test_topk_candidates": c.TOPK_CANDIDATES_TEST,
                "test_nms_thresh": c.NMS_THRESH_TEST, "max_detections_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
                "pixel_mean": cfg.MODEL.PIXEL_MEAN, "pixel_std": cfg.MODEL.PIXEL_STD, "input_format": cfg.INPUT.FORMAT}
