"""The built-in "shapes" dataset: a deterministic synthetic COCO instance dataset.

Coloured circles, squares and triangles of varied sizes (some overlapping) on
noisy backgrounds, written as real COCO json + PNG files::

    <root>/shapes/
      train/000000.png ...          val/000000.png ...
      annotations/instances_train.json  annotations/instances_val.json

Everything comes from one seeded ``numpy.random.Generator`` per split, so the same
arguments always give byte-identical files. Only NumPy, OpenCV and kd_det.core (the atomic
json write) are used here; registration with Detectron2 lives in :mod:`kd_det.detection.data.datasets`.
"""
import json
import os

import cv2
import numpy as np

from ...core import atomic_write_text

__all__ = ["CATEGORIES", "SPLITS", "make_shapes", "shapes_paths"]

CATEGORIES = [
    {"id": 1, "name": "circle", "supercategory": "shape"},
    {"id": 2, "name": "square", "supercategory": "shape"},
    {"id": 3, "name": "triangle", "supercategory": "shape"},
]
# split -> (number of images, seed); sizes chosen so a CPU run trains in minutes.
SPLITS = {"train": (240, 1), "val": (60, 2)}
IMAGE_SIZE = (128, 160)  # (height, width)


def shapes_paths(root, split):
    """Return ``(json_file, image_root)`` of a shapes split under ``root``."""
    base = os.path.join(root, "shapes")
    return os.path.join(base, "annotations", f"instances_{split}.json"), os.path.join(base, split)


def _polygon(cat, cx, cy, r, rng):
    """Outline of one shape as an (P, 2) float array of (x, y) points."""
    if cat == 1:  # circle
        t = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], 1)
    angle = rng.uniform(0, 2 * np.pi)
    n = 4 if cat == 2 else 3  # square / triangle: a rotated regular polygon
    t = angle + np.arange(n) * 2 * np.pi / n
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], 1)


def _render(rng, image_id, height, width):
    """One image (H, W, 3) uint8 BGR and its list of COCO annotations (no ids)."""
    base = rng.integers(0, 90, size=3)
    img = (base + rng.integers(0, 40, size=(height, width, 3))).clip(0, 255).astype(np.uint8)
    anns = []
    for _ in range(int(rng.integers(1, 5))):
        cat = int(rng.integers(1, 4))
        r = float(rng.uniform(7, min(height, width) / 3.2))
        cx, cy = rng.uniform(r * 0.5, width - r * 0.5), rng.uniform(r * 0.5, height - r * 0.5)
        pts = _polygon(cat, cx, cy, r, rng)
        pts[:, 0] = pts[:, 0].clip(0, width - 1)
        pts[:, 1] = pts[:, 1].clip(0, height - 1)
        color = tuple(int(c) for c in rng.integers(110, 256, size=3))
        cv2.fillPoly(img, [np.round(pts).astype(np.int32)], color, lineType=cv2.LINE_8)
        x0, y0 = pts.min(0)
        x1, y1 = pts.max(0)
        if x1 - x0 < 2 or y1 - y0 < 2:
            continue
        anns.append({
            "image_id": image_id,
            "category_id": cat,
            "bbox": [round(float(x0), 2), round(float(y0), 2), round(float(x1 - x0), 2), round(float(y1 - y0), 2)],
            "area": round(float(cv2.contourArea(pts.astype(np.float32))), 2),
            "segmentation": [[round(float(v), 2) for v in pts.reshape(-1)]],
            "iscrowd": 0,
        })
    return img, anns


def make_shapes(root, splits=None, overwrite=False):
    """Write the shapes dataset under ``root/shapes``; returns {split: json_file}.

    Args:
        root: dataset root (``$DETECTRON2_DATASETS``).
        splits: {split: (num_images, seed)}; defaults to :data:`SPLITS`.
        overwrite: rewrite splits whose json already exists.
    """
    out = {}
    for split, (num_images, seed) in (splits or SPLITS).items():
        json_file, image_root = shapes_paths(root, split)
        out[split] = json_file
        if os.path.isfile(json_file) and not overwrite:
            continue
        os.makedirs(image_root, exist_ok=True)
        os.makedirs(os.path.dirname(json_file), exist_ok=True)
        rng = np.random.default_rng(seed)
        height, width = IMAGE_SIZE
        images, annotations = [], []
        for image_id in range(1, num_images + 1):
            img, anns = _render(rng, image_id, height, width)
            file_name = f"{image_id:06d}.png"
            cv2.imwrite(os.path.join(image_root, file_name), img)
            images.append({"id": image_id, "file_name": file_name, "height": height, "width": width})
            for ann in anns:
                ann["id"] = len(annotations) + 1
                annotations.append(ann)
        coco = {
            "info": {"description": f"kd_det synthetic shapes ({split}, seed {seed})", "version": "1.0"},
            "licenses": [],
            "images": images,
            "annotations": annotations,
            "categories": CATEGORIES,
        }
        atomic_write_text(json_file, json.dumps(coco))  # the json appears last, complete: it marks the split as built
    return out
