"""Evaluation: COCO box AP (faster-coco-eval fast path, pycocotools reference) and reports."""
from .coco_eval import BACKENDS, STAT_NAMES, evaluate_coco  # noqa: F401
