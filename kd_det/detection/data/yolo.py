"""YOLO-format datasets: ``images/`` plus ``labels/<image stem>.txt``, one ``class cx cy w h`` line per box.

Registered from one config line, ``DATASETS.YOLO_FORMAT [["name", "images/", "labels/", ["class", ...]]]``.
Coordinates are normalised to [0, 1] by the image's width and height (read from the image header);
an image without a label file has no objects (YOLO's convention). Scored by kd_det's COCO evaluator,
whose ground truth is built in memory from these dicts (``evaluator_type "coco"``, no json file).

A line with the wrong number of fields, a class index outside the list or a coordinate outside
[0, 1] is refused naming the file and line; boxes of zero width or height are skipped with one
counted warning, as for COCO.
"""
import logging
import os

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode
from PIL import Image

from ...errors import DatasetError
from .mapper import undecodable_image

__all__ = ["IMAGE_EXTENSIONS", "check_yolo_files", "load_yolo_checked", "register_yolo"]

logger = logging.getLogger(__name__)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


def _images(image_dir):
    return sorted(f for f in os.listdir(image_dir) if f.lower().endswith(IMAGE_EXTENSIONS))


def check_yolo_files(name, image_dir, label_dir):
    """Refuse, at start, a missing image or label folder, or an image folder without images (one sentence)."""
    for path in (image_dir, label_dir):
        if not os.path.isdir(path):
            raise DatasetError(f"Dataset '{name}' needs the folder {path}, which does not exist.")
    if not _images(image_dir):
        raise DatasetError(f"Dataset '{name}': {image_dir} holds no images ({', '.join(IMAGE_EXTENSIONS)}).")


def _read_labels(path, classes):
    """[(class index, cx, cy, w, h)] of one label file; one sentence naming file and line for a bad line."""
    out = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            where = f"YOLO label file {path} line {n} ({line.strip()!r})"
            if len(fields) != 5:
                raise DatasetError(f"{where} has {len(fields)} fields; expected 5: class cx cy w h.")
            try:
                cls, coords = int(fields[0]), [float(v) for v in fields[1:]]
            except ValueError:
                raise DatasetError(f"{where} is not an int class index and four numbers.") from None
            if not 0 <= cls < len(classes):
                raise DatasetError(f"{where} names class {cls}, outside the dataset's {len(classes)} classes.")
            if not all(0.0 <= v <= 1.0 for v in coords):
                raise DatasetError(f"{where} has a coordinate outside [0, 1]; YOLO boxes are normalised.")
            out.append((cls, *coords))
    return out


def load_yolo_checked(name, image_dir, label_dir, classes):
    """Detectron2 dataset dicts (``XYWH_ABS`` boxes, integer image ids in file order) of a YOLO folder pair."""
    dicts, skipped, total = [], [], 0
    for i, file in enumerate(_images(image_dir)):
        path = os.path.join(image_dir, file)
        try:
            with Image.open(path) as im:
                width, height = im.size
        except OSError as e:
            raise undecodable_image(path, e, name) from None
        label = os.path.join(label_dir, os.path.splitext(file)[0] + ".txt")
        annos = []
        for cls, cx, cy, w, h in (_read_labels(label, classes) if os.path.isfile(label) else []):
            total += 1
            if w <= 0 or h <= 0:
                skipped.append(f"{os.path.basename(label)}")
                continue
            annos.append({"category_id": cls, "bbox_mode": BoxMode.XYWH_ABS, "iscrowd": 0,
                          "bbox": [(cx - w / 2) * width, (cy - h / 2) * height, w * width, h * height]})
        dicts.append({"file_name": path, "image_id": i + 1, "width": width, "height": height, "annotations": annos})
    if skipped:
        logger.warning(f"YOLO dataset '{name}' ({label_dir}): skipped {len(skipped)} of {total} boxes with zero "
                       f"width or height (first in {skipped[0]}).")
    return dicts


def register_yolo(name, image_dir, label_dir, classes):
    """Register a YOLO-format dataset under ``name`` with :func:`load_yolo_checked` (replaces an earlier one).

    Metadata: ``thing_classes``, ``image_root``, ``label_dir`` and ``evaluator_type "coco"`` (no ``json_file``:
    the COCO evaluator builds its ground truth from the loaded dicts).
    """
    image_dir, label_dir, classes = os.path.abspath(image_dir), os.path.abspath(label_dir), list(classes)
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: load_yolo_checked(name, image_dir, label_dir, classes))
    MetadataCatalog.get(name).set(thing_classes=classes, image_root=image_dir, label_dir=label_dir,
                                  evaluator_type="coco", checked=True)
