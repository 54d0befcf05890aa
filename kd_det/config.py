"""kd_det configuration: Detectron2's defaults plus the project's keys.

``get_cfg()`` is what every tool uses. Later features only add keys here, each in
an ``add_*_config`` function with a one-line comment above every key.
"""
from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg as _d2_get_cfg

__all__ = ["get_cfg", "add_kd_det_config"]


def add_kd_det_config(cfg):
    """Add the foundation keys (datasets, evaluation) to a Detectron2 config in place."""
    # COCO-format datasets to register before training, each (name, json_file, image_root);
    # the name can then be used in DATASETS.TRAIN / DATASETS.TEST.
    cfg.DATASETS.COCO_FORMAT = []
    # COCO evaluation backend: "faster_coco_eval" (C++, fast) or "pycocotools" (the reference).
    cfg.TEST.EVAL_BACKEND = "faster_coco_eval"
    return cfg


def get_cfg():
    """Detectron2 defaults + every kd_det key. Returns a mutable CfgNode."""
    cfg = _d2_get_cfg()
    add_kd_det_config(cfg)
    return cfg
