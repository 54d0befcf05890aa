"""Turn a classification checkpoint into Detectron2 backbone weights (``MODEL.WEIGHTS``).

Accepted sources: a kd_det classification checkpoint (``model_final.pth``, ``{"model": ...}``)
or any torchvision-layout state dict of ResNet-18/34/50/101/152 or MobileNetV2.

* ResNets are renamed to Detectron2's ``ResNet`` names (``stem.conv1``, ``res2.0.conv1``,
  ``res2.0.conv1.norm`` ..., ``res2.0.shortcut``); BatchNorm weight / bias / running mean /
  running var are kept as they are, which is exactly what ``FrozenBN`` (eps 1e-5, like
  torchvision) loads. ``num_batches_tracked`` and the classifier are dropped.
* MobileNetV2 keeps torchvision's ``features.N...`` layout (the layout of kd_det's
  MobileNetV2-FPN bottom-up); the classifier is dropped.

Every name gets ``prefix`` (default ``backbone.bottom_up.``, the bottom-up of an FPN backbone
in GeneralizedRCNN), and the file is a Detectron2 model-zoo style pickle
``{"model": {name: ndarray}, "__author__": "kd_det", "matching_heuristics": False}``: exact
names, no suffix guessing, so a name that does not fit shows up as a missing / unexpected key.
Detectron2 settings the converted ResNet needs (torchvision preprocessing and strides) are
returned by :func:`detectron2_settings`.

The file also records the input normalisation the weights expect, under the extra top-level key
``"required_settings"`` (:data:`REQUIRED_SETTINGS_KEY`): Detectron2 config key -> value, i.e.
:data:`TORCHVISION_INPUT` plus ``MODEL.RESNETS.STRIDE_IN_1X1: False`` for bottleneck ResNets
(:func:`required_settings`). Detectron2 / fvcore checkpointers ignore unknown top-level keys;
kd_det's loaders (``KDCheckpointer``, the teacher loader) refuse a model whose config disagrees.
"""
import os
import pickle
import re
from typing import Dict, List, Tuple

import torch

from ..core import atomic_save, atomic_write
from ..errors import UserError
from ..safe_load import load_torch
from .checkpoint import extract_state_dict

__all__ = ["detect_arch", "convert_resnet", "convert_mobilenet_v2", "convert_state_dict",
           "convert_checkpoint", "detectron2_settings", "required_settings", "REQUIRED_SETTINGS_KEY",
           "TORCHVISION_INPUT"]

#: Input every torchvision ImageNet network was trained on, as Detectron2 config values: RGB order,
#: 0-255 pixels normalised by torchvision's mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225)
#: times 255, both listed in RGB order like the input (torchvision's ImageNet reference transforms).
#: The one place for these values: configs/COCO-Detection/faster_rcnn_{R_18,R_34,MV2}_FPN_*.yaml must
#: equal them (tests/classification/test_cls_convert.py checks it).
TORCHVISION_INPUT = {
    "INPUT.FORMAT": "RGB",
    "MODEL.PIXEL_MEAN": [123.675, 116.28, 103.53],
    "MODEL.PIXEL_STD": [58.395, 57.12, 57.375],
}
#: Top-level key of a converted file holding :func:`required_settings` (unknown to Detectron2, ignored by it).
REQUIRED_SETTINGS_KEY = "required_settings"

_DEPTHS = {(2, 2, 2, 2): 18, (3, 4, 6, 3): 34, (3, 4, 23, 3): 101, (3, 8, 36, 3): 152}
_BN = ("weight", "bias", "running_mean", "running_var")


def detect_arch(sd: Dict[str, torch.Tensor]) -> Tuple[str, int]:
    """("resnet", depth) or ("mobilenet_v2", 0) from the keys of a torchvision-layout dict."""
    if any(k.startswith("features.") for k in sd) and "features.18.0.weight" in sd:
        return "mobilenet_v2", 0
    if "conv1.weight" in sd and "layer4.0.conv1.weight" in sd:
        blocks = tuple(len({k.split(".")[1] for k in sd if k.startswith(f"layer{i}.")})
                       for i in range(1, 5))
        bottleneck = "layer1.0.conv3.weight" in sd
        depth = 50 if bottleneck and blocks == (3, 4, 6, 3) else _DEPTHS.get(blocks)
        if depth is None or (bottleneck and depth in (18, 34)) or (not bottleneck and depth > 34):
            raise UserError(f"ResNet with blocks {blocks} (bottleneck={bottleneck}) is not a "
                            "ResNet-18/34/50/101/152.")
        return "resnet", depth
    raise UserError("The checkpoint is neither a torchvision-layout ResNet (conv1, layer1..4) nor "
                    "a MobileNetV2 (features.0..18); CIFAR models cannot be converted.")


def convert_resnet(sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """torchvision ResNet names -> Detectron2 ResNet names (no prefix); drops ``fc``."""
    out: Dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        if k.endswith("num_batches_tracked") or k.startswith("fc."):
            continue
        if k == "conv1.weight":
            out["stem.conv1.weight"] = v
            continue
        m = re.fullmatch(r"bn1\.(\w+)", k)
        if m:
            out[f"stem.conv1.norm.{m.group(1)}"] = v
            continue
        m = re.fullmatch(r"layer(\d)\.(\d+)\.(conv|bn)(\d)\.(\w+)", k)
        if m:
            stage, block, kind, idx, leaf = m.groups()
            name = f"res{int(stage) + 1}.{block}.conv{idx}"
            out[name + (".weight" if kind == "conv" else f".norm.{leaf}")] = v
            continue
        m = re.fullmatch(r"layer(\d)\.(\d+)\.downsample\.([01])\.(\w+)", k)
        if m:
            stage, block, part, leaf = m.groups()
            name = f"res{int(stage) + 1}.{block}.shortcut"
            out[name + (".weight" if part == "0" else f".norm.{leaf}")] = v
            continue
        raise UserError(f"Unexpected ResNet parameter {k!r}; not a torchvision-layout ResNet.")
    return out


def convert_mobilenet_v2(sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """torchvision MobileNetV2 -> its ``features.N...`` entries (classifier dropped)."""
    return {k: v for k, v in sd.items()
            if k.startswith("features.") and not k.endswith("num_batches_tracked")}


def convert_state_dict(sd: Dict[str, torch.Tensor], prefix: str = "backbone.bottom_up.") -> Tuple[Dict[str, torch.Tensor], str, int]:
    """Detect the architecture and convert; returns (weights with ``prefix``, arch, depth)."""
    arch, depth = detect_arch(sd)
    conv = convert_resnet(sd) if arch == "resnet" else convert_mobilenet_v2(sd)
    return {prefix + k: v for k, v in conv.items()}, arch, depth


def required_settings(arch: str, depth: int) -> Dict[str, object]:
    """Config key -> value the converted weights only work with (recorded in the file they go to).

    The input normalisation of :data:`TORCHVISION_INPUT`, plus ``MODEL.RESNETS.STRIDE_IN_1X1``
    False for bottleneck ResNets (torchvision strides the 3x3 conv, MSRA's Caffe2 models the 1x1;
    BasicBlock ResNets have no such choice).
    """
    out: Dict[str, object] = {k: (list(v) if isinstance(v, list) else v) for k, v in TORCHVISION_INPUT.items()}
    if arch == "resnet" and depth >= 50:
        out["MODEL.RESNETS.STRIDE_IN_1X1"] = False
    return out


def detectron2_settings(arch: str, depth: int) -> List[str]:
    """``KEY VALUE`` Detectron2 overrides a converted torchvision backbone needs."""
    common = [str(x) for k, v in TORCHVISION_INPUT.items() for x in (k, v)]
    if arch != "resnet":
        return common
    out = common + ["MODEL.RESNETS.DEPTH", str(depth), "MODEL.RESNETS.STRIDE_IN_1X1", "False"]
    if depth in (18, 34):
        out += ["MODEL.RESNETS.RES2_OUT_CHANNELS", "64"]
    return out


def convert_checkpoint(src: str, dst: str, prefix: str = "backbone.bottom_up.",
                       matching_heuristics: bool = False) -> Tuple[str, int, int]:
    """Convert the file ``src`` and write ``dst`` (``.pkl``: numpy pickle; ``.pth``: torch).

    Returns:
        (arch, depth, number of tensors written).
    """
    if not os.path.isfile(src):
        raise UserError(f"Checkpoint {src} does not exist.")
    sd = extract_state_dict(load_torch(src, "Input"), src)
    weights, arch, depth = convert_state_dict(sd, prefix)
    blob = {"__author__": "kd_det", "matching_heuristics": bool(matching_heuristics),
            REQUIRED_SETTINGS_KEY: required_settings(arch, depth)}
    if dst.endswith(".pkl"):
        blob["model"] = {k: v.detach().cpu().numpy() for k, v in weights.items()}
        atomic_write(dst, lambda f: pickle.dump(blob, f))
    elif dst.endswith(".pth"):
        blob["model"] = {k: v.detach().cpu() for k, v in weights.items()}
        atomic_save(blob, dst)
    else:
        raise UserError(f"Output {dst} must end in .pkl or .pth.")
    return arch, depth, len(weights)

