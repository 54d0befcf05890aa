"""Detectron2 parts: the DistillRCNN meta-architecture, teacher loading, extra backbones."""
from .distill_rcnn import DistillRCNN, loss_specs  # noqa: F401  (registers META_ARCHITECTURE "DistillRCNN")
from .teacher import build_teacher, file_sha256  # noqa: F401
from .mobilenetv2 import MobileNetV2, build_mobilenetv2_fpn_backbone  # noqa: F401  (registers the backbone)
