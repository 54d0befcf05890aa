"""Checkpoint files of the classification path.

``last_checkpoint.pth`` (resume) holds ``{"model": student state_dict, "distill": learnable
loss parts, "optimizer", "scaler", "epoch", "best_top1", "arch", "num_classes", "cfg"}``;
``model_final.pth`` / ``model_best.pth`` hold ``{"model", "arch", "num_classes"}`` only.
The engine writes them with :func:`kd_det.core.atomic_save` (a reader sees the old file or the new one).
"""
import os
from typing import Any, Dict

import torch
from torch import nn

from ..errors import UserError
from ..safe_load import load_torch, state_dict_mismatch
from ..weights_catalog import missing_weights_error

__all__ = ["extract_state_dict", "load_weights", "LAST", "FINAL", "BEST"]

LAST, FINAL, BEST = "last_checkpoint.pth", "model_final.pth", "model_best.pth"


def extract_state_dict(obj: Any, path: str = "<checkpoint>") -> Dict[str, torch.Tensor]:
    """The model state dict inside a checkpoint of kd_det, CRD/RepDistiller, mdistiller
    (``{"model": ...}``), ``{"state_dict": ...}`` or a bare torchvision state dict; a leading
    ``module.`` (DDP) is stripped."""
    sd = obj
    for key in ("model", "state_dict", "student"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
            break
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise UserError(f"Checkpoint {path} holds no model state dict (expected a 'model' entry "
                        "or a mapping of parameter names to tensors).")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}


def load_weights(model: nn.Module, path: str, what: str = "MODEL.WEIGHTS") -> None:
    """Load a local checkpoint into ``model`` strictly.

    Raises:
        UserError: naming ``path`` when it is missing or its keys/shapes do not fit.
    """
    if not os.path.isfile(path):
        raise missing_weights_error(what, path)  # names the fetch or train command where kd_det knows it
    sd = extract_state_dict(load_torch(path, f"{what} file"), path)
    missing, unexpected, bad = (sorted(keys) for keys in state_dict_mismatch(model.state_dict(), sd))
    if missing or unexpected or bad:
        raise UserError(
            f"{what} file {path} does not fit {type(model).__name__}: {len(missing)} missing "
            f"keys {missing[:3]}, {len(unexpected)} unexpected {unexpected[:3]}, "
            f"{len(bad)} with another shape {bad[:3]}.")
    model.load_state_dict(sd, strict=True)
