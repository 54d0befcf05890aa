"""Detectron2 parts: the distillation wrappers (one per detector family, :mod:`.wrapper` holds what they share),
teacher loading, extra backbones."""
from .wrapper import DISTILL_ARCHS, check_distill_arch, student_config  # noqa: F401
from .distill_rcnn import DistillRCNN  # noqa: F401  (registers META_ARCHITECTURE "DistillRCNN")
from .fcos import FCOS  # noqa: F401  (registers META_ARCHITECTURE "FCOS": Detectron2 0.6 builds it from LazyConfig only)
from .dense import DistillFCOS, DistillRetinaNet  # noqa: F401  (registers "DistillRetinaNet", "DistillFCOS")
from .teacher import build_teacher, file_sha256  # noqa: F401
from .mobilenetv2 import MobileNetV2, build_mobilenetv2_fpn_backbone  # noqa: F401  (registers the backbone)
