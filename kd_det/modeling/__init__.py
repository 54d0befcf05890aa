"""Detectron2 parts: the DistillRCNN meta-architecture, teacher loading, extra backbones."""
from .distill_rcnn import DistillRCNN, loss_specs  # noqa: F401  (registers META_ARCHITECTURE "DistillRCNN")
from .teacher import build_teacher, file_sha256  # noqa: F401
