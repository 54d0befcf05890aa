"""Pascal VOC-layout datasets: one checked reader of the XML for training and for evaluation.

A VOC folder (``dirname``) holds ``Annotations/<id>.xml``, ``ImageSets/Main/<split>.txt`` (one id a
line) and ``JPEGImages/<id>.jpg``. Own data is registered from one config line,
``DATASETS.VOC_FORMAT [["name", "dirname", "split", ["class", ...]]]``; Detectron2's built-in
``voc_2007_*`` / ``voc_2012_*`` are re-registered with the same loader by ``setup_datasets``.

The XML is read as annotation tools write it (LabelImg, CVAT, Roboflow exports), not only as the
VOC devkit did: missing ``<pose>`` / ``<truncated>`` / ``<difficult>`` read as Unspecified / 0 / 0 and
coordinates may be floats. Boxes are returned as Detectron2's loader does (``xmin - 1, ymin - 1,
xmax, ymax``: VOC's 1-based inclusive pixels in continuous coordinates), so IoU on these boxes equals
the devkit's "+1" IoU. Boxes with zero or negative size as written (``xmax <= xmin`` or
``ymax <= ymin``) are skipped with one counted warning.
"""
import logging
import os
import xml.etree.ElementTree as ET

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from ...errors import DatasetError

__all__ = ["check_voc_files", "load_voc_checked", "read_voc_xml", "register_voc", "voc_ids"]

logger = logging.getLogger(__name__)


def voc_ids(dirname, split):
    """The image ids listed in ``dirname/ImageSets/Main/<split>.txt`` (first column, blank lines skipped)."""
    with open(os.path.join(dirname, "ImageSets", "Main", split + ".txt")) as f:
        return [line.split()[0] for line in f if line.strip()]


def check_voc_files(name, dirname, split, hint=""):
    """Refuse, at start, a missing VOC folder, split file, annotation folder or image (one sentence).

    Args:
        hint: appended to the sentence (e.g. where ``$DETECTRON2_DATASETS`` points, for built-ins).
    """
    split_file = os.path.join(dirname, "ImageSets", "Main", split + ".txt")
    for path in (dirname, split_file, os.path.join(dirname, "Annotations")):
        if not os.path.exists(path):
            raise DatasetError(f"Dataset '{name}' needs {path}, which does not exist{hint}.")
    ids = voc_ids(dirname, split)
    for what, folder, ext in (("annotation", "Annotations", ".xml"), ("image", "JPEGImages", ".jpg")):
        missing = [i for i in ids if not os.path.isfile(os.path.join(dirname, folder, i + ext))]
        if missing:
            raise DatasetError(
                f"Dataset '{name}' lists {len(missing)} {what}s that do not exist in {os.path.join(dirname, folder)} "
                f"(first: {missing[0]}{ext}).")


def _text(node, tag, default=None):
    child = node.find(tag)
    return default if child is None or child.text is None else child.text.strip()


def read_voc_xml(path, class_names):
    """Read one VOC annotation file tolerantly.

    Returns:
        dict with "width", "height" (ints) and "objects": list of {"category_id", "bbox" [x0, y0, x1, y1]
        (Detectron2's continuous coordinates, see module doc), "difficult" (bool)}.

    Raises:
        DatasetError: the file cannot be parsed, lacks ``<size>`` / ``<bndbox>`` (or one of their numbers),
            or names a class that is not in ``class_names``.
    """
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise DatasetError(f"VOC annotation {path} is not valid XML ({e}).") from None

    def number(node, tag, parent):
        try:
            return float(_text(node, tag))
        except (TypeError, ValueError):
            raise DatasetError(f"VOC annotation {path} has no numeric <{tag}> in <{parent}>.") from None

    size = root.find("size")
    if size is None:
        raise DatasetError(f"VOC annotation {path} has no <size>.")
    out = {"width": int(number(size, "width", "size")), "height": int(number(size, "height", "size")), "objects": []}
    for obj in root.findall("object"):
        cls = _text(obj, "name")
        if cls not in class_names:
            raise DatasetError(f"VOC annotation {path} has an object of class {cls!r}, which is not in the "
                               f"dataset's classes {list(class_names)}.")
        box = obj.find("bndbox")
        if box is None:
            raise DatasetError(f"VOC annotation {path} has an object of class {cls!r} without <bndbox>.")
        x0, y0, x1, y1 = (number(box, t, "bndbox") for t in ("xmin", "ymin", "xmax", "ymax"))
        out["objects"].append({"category_id": list(class_names).index(cls), "bbox": [x0 - 1.0, y0 - 1.0, x1, y1],
                               "difficult": _text(obj, "difficult", "0") not in ("0", "false", "")})
    return out


def load_voc_checked(name, dirname, split, class_names):
    """Detectron2 dataset dicts of a VOC folder (difficult objects included in training, as Detectron2 does)."""
    dicts, skipped, total = [], [], 0
    for fileid in voc_ids(dirname, split):
        rec = read_voc_xml(os.path.join(dirname, "Annotations", fileid + ".xml"), class_names)
        annos = []
        for o in rec["objects"]:
            total += 1
            x0, y0, x1, y1 = o["bbox"]
            if x1 <= x0 + 1 or y1 <= y0 + 1:  # xmax <= xmin or ymax <= ymin as written in the XML
                skipped.append((fileid, o["bbox"]))
                continue
            annos.append({"category_id": o["category_id"], "bbox": o["bbox"], "bbox_mode": BoxMode.XYXY_ABS})
        dicts.append({"file_name": os.path.join(dirname, "JPEGImages", fileid + ".jpg"), "image_id": fileid,
                      "height": rec["height"], "width": rec["width"], "annotations": annos})
    if skipped:
        logger.warning(f"VOC dataset '{name}' ({dirname}): skipped {len(skipped)} of {total} boxes with zero or "
                       f"negative width or height (first: {skipped[0][0]}.xml bbox {skipped[0][1]}).")
    return dicts


def register_voc(name, dirname, split, class_names, year=None):
    """Register a VOC-layout dataset under ``name`` with :func:`load_voc_checked` (replaces an earlier one).

    Metadata: ``thing_classes``, ``dirname``, ``split``, ``year`` (2007 selects the 11-point AP) and
    ``evaluator_type "pascal_voc"``.
    """
    dirname, class_names = os.path.abspath(dirname), list(class_names)
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: load_voc_checked(name, dirname, split, class_names))
    MetadataCatalog.get(name).set(thing_classes=class_names, dirname=dirname, split=split, year=year,
                                  evaluator_type="pascal_voc", checked=True)
