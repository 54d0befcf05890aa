"""A student's detections on images, folders and videos: pictures drawn with Detectron2's Visualizer and a COCO
results list (``tools/predict.py``).

Preprocessing is Detectron2's ``DefaultPredictor``'s (``detectron2/engine/defaults.py``): BGR read by OpenCV,
flipped to ``INPUT.FORMAT``, ``ResizeShortestEdge([MIN_SIZE_TEST] * 2, MAX_SIZE_TEST)``, boxes returned in the
original image's pixels. A distillation config is turned into its student's (:func:`student_config`): no teacher is
built or needed. Weights are loaded strictly (:func:`load_student`).
"""
import json
import logging
import os

import cv2
import numpy as np
import torch

from ..config.detection import load_config, num_classes
from ..core import atomic_write_text
from ..errors import ConfigError, UserError
from ..weights_catalog import require_weights

__all__ = ["IMAGE_EXTS", "VIDEO_EXTS", "collect_inputs", "class_metadata", "Predictor", "predict"]

logger = logging.getLogger(__name__)

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm")


def collect_inputs(paths):
    """``paths`` (images, videos, folders of them: not recursive, sorted) -> list of (path, "image" | "video")."""
    out = []
    for path in paths:
        if not os.path.exists(path):
            raise UserError(f"--input {path} does not exist.")
        if os.path.isdir(path):
            found = [(os.path.join(path, f), _kind(f)) for f in sorted(os.listdir(path))]
            found = [(p, k) for p, k in found if k and os.path.isfile(p)]
            if not found:
                raise UserError(f"--input {path} holds no image ({' '.join(IMAGE_EXTS)}) or video "
                                f"({' '.join(VIDEO_EXTS)}).")
            out += found
        elif _kind(path):
            out.append((path, _kind(path)))
        else:
            raise UserError(f"--input {path} has extension {os.path.splitext(path)[1]!r}; predict.py reads images "
                            f"({' '.join(IMAGE_EXTS)}) and videos ({' '.join(VIDEO_EXTS)}).")
    return out


def _kind(name):
    ext = os.path.splitext(name)[1].lower()
    return "image" if ext in IMAGE_EXTS else "video" if ext in VIDEO_EXTS else None


def class_metadata(cfg, num_classes):
    """(class names, contiguous index -> dataset category id) for ``cfg.DATASETS.TEST[0]``: its registered
    ``thing_classes`` / ``thing_dataset_id_to_contiguous_id``, else a COCO json's categories (sorted by id, as
    Detectron2's loader maps them), else "class <i>" and the index itself."""
    from detectron2.data import MetadataCatalog

    from .data import register_datasets

    register_datasets(cfg)
    names, ids = None, None
    if cfg.DATASETS.TEST:
        meta = MetadataCatalog.get(cfg.DATASETS.TEST[0])
        names = getattr(meta, "thing_classes", None)
        to_contiguous = getattr(meta, "thing_dataset_id_to_contiguous_id", None)
        if to_contiguous:
            ids = {c: d for d, c in to_contiguous.items()}
        json_file = getattr(meta, "json_file", None)
        if (names is None or ids is None) and json_file and os.path.isfile(json_file):
            with open(json_file) as f:
                cats = sorted(json.load(f).get("categories", []), key=lambda c: c["id"])
            names = names or [c["name"] for c in cats]
            ids = ids or {i: c["id"] for i, c in enumerate(cats)}
    if not names or len(names) != num_classes:
        names = [f"class {i}" for i in range(num_classes)]
    return list(names), ids or {i: i for i in range(num_classes)}


class Predictor:
    """``DefaultPredictor``'s preprocessing around a strictly loaded student: ``predictor(bgr (H, W, 3) uint8)`` ->
    Instances in that image's pixels (on the CPU)."""

    def __init__(self, cfg, weights):
        from detectron2.data import transforms as T

        from .modeling.export import load_student

        self.model, _, _ = load_student(cfg, weights)
        self.aug = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)
        self.input_format = cfg.INPUT.FORMAT

    def __call__(self, bgr):
        image = bgr[:, :, ::-1] if self.input_format == "RGB" else bgr
        height, width = image.shape[:2]
        image = self.aug.get_transform(image).apply_image(image)
        tensor = torch.as_tensor(image.astype("float32").transpose(2, 0, 1))
        with torch.no_grad():
            return self.model([{"image": tensor, "height": height, "width": width}])[0]["instances"].to("cpu")


def _records(inst, image_id, file_name, names, ids, frame=None):
    """Instances -> COCO results entries (bbox [x, y, w, h]; RLE ``segmentation`` for masks)."""
    from pycocotools import mask as mask_util

    boxes = inst.pred_boxes.tensor.numpy()
    out = []
    for i, (box, score, cls) in enumerate(zip(boxes, inst.scores.tolist(), inst.pred_classes.tolist())):
        rec = {"image_id": image_id, "file_name": file_name, "category_id": ids[cls], "category_name": names[cls],
               "bbox": [round(float(v), 3) for v in (box[0], box[1], box[2] - box[0], box[3] - box[1])],
               "score": round(score, 5)}
        if inst.has("pred_masks"):
            rle = mask_util.encode(np.asfortranarray(inst.pred_masks[i].numpy().astype(np.uint8)))
            rec["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode()}
        if frame is not None:
            rec["frame"] = frame
        out.append(rec)
    return out


def _draw(bgr, inst, metadata):
    from detectron2.utils.visualizer import Visualizer

    vis = Visualizer(bgr[:, :, ::-1], metadata).draw_instance_predictions(inst)
    return vis.get_image()[:, :, ::-1]


def _out_name(out_dir, path, ext, used):
    stem = os.path.splitext(os.path.basename(path))[0]
    name, n = stem, 1
    while name in used:  # two inputs with one stem (other folders): keep both
        name, n = f"{stem}_{n}", n + 1
    used.add(name)
    return os.path.join(out_dir, name + ext)


def predict(config_file, weights, inputs, out_dir, opts=()):
    """Run the student of ``config_file`` with ``weights`` on ``inputs`` (paths); write ``out_dir/<name>.jpg`` per
    image, ``out_dir/<stem>.mp4`` per video and ``out_dir/detections.json`` (COCO results list with
    ``file_name`` / ``category_name``, and ``frame`` for video entries). Returns the detections list."""
    from detectron2.data.catalog import Metadata

    from .modeling import student_config

    items = collect_inputs(inputs)  # bad paths: refused before the model is built
    require_weights("--weights", weights)
    cfg = student_config(load_config(config_file, list(opts)))
    cfg.defrost()
    cfg.MODEL.WEIGHTS = ""
    predictor = Predictor(cfg, weights)
    names, ids = class_metadata(cfg, num_classes(cfg)[1])  # the family's class-count key
    metadata = Metadata(thing_classes=names)
    os.makedirs(out_dir, exist_ok=True)
    detections, used = [], set()
    for image_id, (path, kind) in enumerate(items, start=1):
        if kind == "image":
            bgr = cv2.imread(path, cv2.IMREAD_COLOR)
            if bgr is None:
                raise UserError(f"--input {path} cannot be decoded as an image.")
            inst = predictor(bgr)
            detections += _records(inst, image_id, path, names, ids)
            cv2.imwrite(_out_name(out_dir, path, ".jpg", used), _draw(bgr, inst, metadata))
        else:
            detections += _video(predictor, path, image_id, _out_name(out_dir, path, ".mp4", used), names, ids,
                                 metadata)
    atomic_write_text(os.path.join(out_dir, "detections.json"), json.dumps(detections))
    return detections


def _video(predictor, path, image_id, out_path, names, ids, metadata):
    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        raise UserError(f"--input {path} cannot be opened as a video by OpenCV.")
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    writer, detections, frame = None, [], 0
    try:
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            inst = predictor(bgr)
            detections += _records(inst, image_id, path, names, ids, frame=frame)
            if writer is None:
                h, w = bgr.shape[:2]
                writer = cv2.VideoWriter(out_path, cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
                if not writer.isOpened():
                    raise ConfigError(f"OpenCV cannot write the video {out_path} (codec mp4v).")
            writer.write(_draw(bgr, inst, metadata))
            frame += 1
    finally:
        cap.release()
        if writer is not None:
            writer.release()
    if frame == 0:
        raise UserError(f"--input {path} cannot be opened as a video by OpenCV (no frame could be read).")
    return detections
