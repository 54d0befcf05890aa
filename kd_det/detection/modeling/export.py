"""Export a distilled student (DistillRCNN, DistillRetinaNet, DistillFCOS) as a plain Detectron2 checkpoint + config."""
import os

from ...core import atomic_save, atomic_write_text
from ...config.detection import load_config
from ...errors import ConfigError
from ...safe_load import load_torch
from .wrapper import DISTILL_PREFIX, student_config

__all__ = ["export_student"]


def _keep_stock_keys(cfg):
    """Drop every key stock Detectron2's get_cfg() lacks (KD.*, DATASETS.COCO_FORMAT, ...) in place.

    MODEL.MOBILENET is kept when the student uses kd_det's MobileNetV2 backbone, MODEL.FCOS when it is an FCOS:
    that backbone / Detectron2 0.6's FCOS from a yacs config (and their keys) need ``import kd_det.detection.modeling``
    in any case (the FCOS weights also load into stock ``detectron2.modeling.meta_arch.fcos.FCOS`` built by hand).
    """
    from detectron2.config import get_cfg as stock_get_cfg

    keep_extra = {"MODEL.MOBILENET"} if "mobilenet" in cfg.MODEL.BACKBONE.NAME else set()
    if cfg.MODEL.META_ARCHITECTURE == "FCOS":
        keep_extra.add("MODEL.FCOS")

    def prune(node, ref, prefix):
        for key in list(node.keys()):
            name = prefix + key
            if name in keep_extra:
                continue
            if key not in ref:
                del node[key]
            elif hasattr(node[key], "keys") and hasattr(ref[key], "keys"):
                prune(node[key], ref[key], name + ".")

    prune(cfg, stock_get_cfg(), "")


def export_student(config_file, weights, out_dir, opts=()):
    """Write ``out_dir/model_final.pth`` (student only) and ``out_dir/config.yaml`` (the wrapper's ``STUDENT_ARCH``).

    Args:
        config_file: the distillation config the checkpoint was trained with.
        weights: a checkpoint written by train_net.py for that config.
        out_dir: output folder (created).
        opts: extra ``KEY VALUE`` overrides for the config.

    Returns:
        (checkpoint path, config path, number of dropped distillation tensors).
    """
    cfg = student_config(load_config(config_file, opts))
    ckpt = load_torch(weights, "Checkpoint")
    model = ckpt.get("model", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(model, dict):
        raise ConfigError(f"Checkpoint {weights} holds no model state dict.")
    student = {k: v for k, v in model.items() if not k.startswith(DISTILL_PREFIX)}
    dropped = len(model) - len(student)
    cfg.MODEL.WEIGHTS = ""
    _keep_stock_keys(cfg)
    os.makedirs(out_dir, exist_ok=True)
    ckpt_path, cfg_path = os.path.join(out_dir, "model_final.pth"), os.path.join(out_dir, "config.yaml")
    atomic_save({"model": student, "__author__": "kd_det export_student"}, ckpt_path)
    atomic_write_text(cfg_path, cfg.dump())
    return ckpt_path, cfg_path, dropped
