"""Dataset registration and up-front checks.

* ``shapes_train`` / ``shapes_val`` (the built-in synthetic set) are registered on
  import, under ``$DETECTRON2_DATASETS/shapes``; they are built on first use.
* Any COCO-format dataset: ``register_coco("name", json, image_root)`` in Python, or
  one config line ``DATASETS.COCO_FORMAT [["name", "ann.json", "images/"]]``.
* Any Pascal VOC-layout dataset: ``DATASETS.VOC_FORMAT [["name", "dirname", "split", ["class", ...]]]``
  (:mod:`.voc`); Detectron2's built-in ``voc_2007_*`` / ``voc_2012_*`` are read by the same checked loader.
* YOLO-format labels: ``DATASETS.YOLO_FORMAT [["name", "images/", "labels/", ["class", ...]]]`` (:mod:`.yolo`).
* COCO 2017 (``coco_2017_train`` / ``coco_2017_val``) is registered by Detectron2
  itself under ``$DETECTRON2_DATASETS/coco``.
* LVIS (Detectron2's ``lvis_v1_*``, or ``register_lvis_instances``) is loaded by Detectron2's loader and
  needs the ``lvis`` package, checked at start.
* Every test set's ``evaluator_type`` is checked at start (:mod:`kd_det.evaluation.evaluators`).

:func:`setup_datasets` runs before any training step, so a missing path fails at
start with one sentence naming the path and the environment variable. Every COCO-json
dataset used (ours and Detectron2's built-ins) is read by :func:`load_coco_checked`:

* a json that cannot be parsed, has no images or no annotations, or lists images that do not exist
  under its image root, is refused (one sentence, before the first step);
* boxes with zero/negative width or height, non-finite numbers, or lying entirely outside
  their image are *skipped with one counted warning*, not refused: COCO-style files from
  annotation tools often hold a few such boxes, Detectron2 would otherwise pass them on
  silently (a zero-size box becomes a degenerate regression target), and one bad box in a
  million should not stop a run. Boxes partly outside the image are kept (the loader clips them).
* :func:`check_num_classes` compares the categories with ``MODEL.ROI_HEADS.NUM_CLASSES`` (or the family's key);
  :func:`check_masks` refuses a Mask R-CNN training set with an annotation without a mask.
"""
import json
import logging
import math
import os

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json

from ... import REPO_ROOT
from ...errors import DatasetError
from ...evaluation.evaluators import check_evaluator_types, check_packages
from .shapes import CATEGORIES, make_shapes, shapes_paths
from .voc import check_voc_files, register_voc
from .yolo import check_yolo_files, register_yolo

__all__ = ["DatasetError", "check_masks", "check_num_classes", "datasets_root", "load_coco_checked", "register_coco",
           "register_datasets", "register_shapes", "setup_datasets"]

logger = logging.getLogger(__name__)
_REPO_DATASETS = os.path.join(REPO_ROOT, "datasets")


def datasets_root():
    """``$DETECTRON2_DATASETS`` if set, else the repository's ``datasets/`` folder."""
    return os.path.abspath(os.path.expanduser(os.environ.get("DETECTRON2_DATASETS", _REPO_DATASETS)))


def _bad_box(box, width, height):
    x, y, w, h = box
    return (not all(math.isfinite(v) for v in box) or w <= 0 or h <= 0
            or x >= width or y >= height or x + w <= 0 or y + h <= 0)


def load_coco_checked(json_file, image_root, name):
    """``detectron2.data.datasets.load_coco_json`` + the checks in the module doc.

    Returns Detectron2's list of dataset dicts without the skipped boxes.
    """
    where = f"COCO json {json_file} (dataset '{name}')"
    try:
        dicts = load_coco_json(json_file, image_root, name)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{where} is not valid JSON ({e}).") from None
    except KeyError as e:
        raise DatasetError(f"{where} lacks the key {e.args[0]!r} in an image, annotation or category entry "
                           "(or an annotation names a category id the file does not define).") from None
    except (AssertionError, TypeError, ValueError) as e:
        raise DatasetError(f"{where} is not a COCO instances file ({type(e).__name__}: {e}).") from None
    if not dicts:
        raise DatasetError(f"{where} has no images.")
    missing = [d["file_name"] for d in dicts if not os.path.isfile(d["file_name"])]
    if missing:
        raise DatasetError(f"{where} lists {len(missing)} images that do not exist under {image_root} "
                           f"(first: {os.path.relpath(missing[0], image_root)}).")
    total = sum(len(d.get("annotations", ())) for d in dicts)
    if total == 0:
        raise DatasetError(f"{where} has no annotations: there is nothing to train on or to compute AP against.")
    skipped = []
    for d in dicts:
        keep = []
        for a in d.get("annotations", ()):
            if _bad_box(a["bbox"], d["width"], d["height"]):
                skipped.append((os.path.basename(d["file_name"]), a["bbox"]))
            else:
                keep.append(a)
        d["annotations"] = keep
    if skipped:
        logger.warning(f"{where}: skipped {len(skipped)} of {total} boxes with zero/negative width or height or "
                       f"entirely outside their image (first: {skipped[0][0]} bbox {skipped[0][1]}).")
    return dicts


def register_coco(name, json_file, image_root):
    """Register a COCO-format instance dataset under ``name`` (idempotent for the same paths).

    Same metadata as Detectron2's ``register_coco_instances``; the loader is :func:`load_coco_checked`.
    """
    json_file, image_root = os.path.abspath(json_file), os.path.abspath(image_root)
    if name in DatasetCatalog.list():
        meta = MetadataCatalog.get(name)
        if (getattr(meta, "json_file", None) == json_file and getattr(meta, "image_root", None) == image_root
                and getattr(meta, "checked", False)):
            return
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: load_coco_checked(json_file, image_root, name))
    MetadataCatalog.get(name).set(json_file=json_file, image_root=image_root, evaluator_type="coco", checked=True)


def check_num_classes(cfg, names):
    """Refuse a dataset whose category count differs from the model's (``MODEL.ROI_HEADS.NUM_CLASSES``, or the
    family's key: :func:`kd_det.config.detection.num_classes_key`) (call after loading)."""
    from ...config.detection import num_classes

    key, k = num_classes(cfg)
    for name in names:
        meta = MetadataCatalog.get(name)
        classes = getattr(meta, "thing_classes", None)
        if classes is not None and len(classes) != k:
            raise DatasetError(
                f"Dataset '{name}' ({getattr(meta, 'json_file', 'registered in Python')}) has {len(classes)} "
                f"categories but {key} is {k}; set it to {len(classes)} or use a dataset "
                "with the model's classes.")


def check_masks(cfg, dicts, names):
    """Refuse, for ``MODEL.MASK_ON``, training dataset dicts with an annotation lacking ``segmentation``
    (Detectron2 would build no ``gt_masks`` and the mask head fail at its first step)."""
    if not cfg.MODEL.MASK_ON:
        return
    for d in dicts:
        if any(not a.get("segmentation") for a in d.get("annotations", ())):
            raise DatasetError(f"MODEL.MASK_ON True but dataset {', '.join(names)} has an annotation without "
                               f"'segmentation' (image {d['file_name']}); a Mask R-CNN trains on instance masks: add "
                               "polygons or RLE to the json, or set MODEL.MASK_ON False.")


def register_shapes(root=None):
    """(Re-)register ``shapes_train`` / ``shapes_val`` under ``root`` (default :func:`datasets_root`)."""
    root = root or datasets_root()
    for split in ("train", "val"):
        json_file, image_root = shapes_paths(root, split)
        register_coco(f"shapes_{split}", json_file, image_root)
        MetadataCatalog.get(f"shapes_{split}").set(
            thing_classes=[c["name"] for c in CATEGORIES], shapes_root=root, evaluator_type="coco")


def _check_one(name):
    if name not in DatasetCatalog.list():
        raise DatasetError(
            f"Dataset '{name}' is not registered; known: {', '.join(sorted(DatasetCatalog.list())[:12])}, ... "
            "(add it with DATASETS.COCO_FORMAT [[name, json_file, image_root]]).")
    meta = MetadataCatalog.get(name)
    shapes_root = getattr(meta, "shapes_root", None)
    json_file = getattr(meta, "json_file", None)
    if json_file and getattr(meta, "evaluator_type", None) == "coco" and not getattr(meta, "checked", False):
        old = meta.as_dict()
        register_coco(name, json_file, meta.image_root)  # a Detectron2 built-in: same files, checked loader
        meta = MetadataCatalog.get(name)
        meta.set(**{k: v for k, v in old.items() if k != "name" and not hasattr(meta, k)})
    if getattr(meta, "dirname", None) and not getattr(meta, "checked", False):
        _check_builtin_voc(name, meta)  # a Detectron2 built-in voc_*: same files, checked loader
    elif getattr(meta, "dirname", None):
        check_voc_files(name, meta.dirname, meta.split)
    if getattr(meta, "label_dir", None):
        check_yolo_files(name, meta.image_root, meta.label_dir)
    if shapes_root is not None and not os.path.isfile(json_file):
        logger.info(f"Building the synthetic shapes dataset under {shapes_root} ...")
        make_shapes(shapes_root)
    for path in (json_file, getattr(meta, "image_root", None)):
        if path is not None and not os.path.exists(path):
            raise DatasetError(
                f"Dataset '{name}' needs {path}, which does not exist: put the data there or point "
                f"$DETECTRON2_DATASETS (now {datasets_root()}) at the folder that holds it (see datasets/README.md).")


def _check_entry(where, entry, fields):
    """Refuse a ``[name, <fields>, [class, ...]]`` entry of the wrong shape or with a bad class list."""
    where = f"{where} is {list(entry)!r}"
    if len(entry) != 4 or not isinstance(entry[3], (list, tuple)):
        raise DatasetError(f"{where}; expected [name, {fields}, [class, ...]].")
    classes = list(entry[3])
    if not classes:
        raise DatasetError(f"{where}; its class list is empty.")
    twice = sorted({c for c in classes if classes.count(c) > 1})
    if twice:
        raise DatasetError(f"{where}; its class list names {twice[0]!r} twice.")


def _check_builtin_voc(name, meta):
    """Check a Detectron2-registered VOC dataset's files and re-register it with the checked loader."""
    check_voc_files(name, meta.dirname, meta.split,
                    f" (Detectron2 registers {name} under $DETECTRON2_DATASETS, now "
                    f"{os.environ.get('DETECTRON2_DATASETS', 'unset: ./datasets')}; see datasets/README.md)")
    register_voc(name, meta.dirname, meta.split, meta.thing_classes, getattr(meta, "year", None))


def register_datasets(cfg):
    """Register ``cfg.DATASETS.{COCO,VOC,YOLO}_FORMAT`` (entries' form checked; their files are read at load)."""
    for i, entry in enumerate(cfg.DATASETS.COCO_FORMAT):
        if len(entry) != 3:
            raise DatasetError(
                f"DATASETS.COCO_FORMAT[{i}] is {list(entry)!r}; expected [name, json_file, image_root].")
        register_coco(*entry)
    for key, fields, register in (("VOC_FORMAT", "dirname, split", register_voc),
                                  ("YOLO_FORMAT", "image_dir, label_dir", register_yolo)):
        for i, entry in enumerate(cfg.DATASETS[key]):
            _check_entry(f"DATASETS.{key}[{i}]", entry, fields)
            register(*entry)


def setup_datasets(cfg):
    """:func:`register_datasets`, then check every dataset in TRAIN/TEST and the test sets' evaluator types."""
    register_datasets(cfg)
    check_evaluator_types([n for n in cfg.DATASETS.TEST if n in DatasetCatalog.list()])  # before any path check
    check_packages([n for n in cfg.DATASETS.TRAIN if n in DatasetCatalog.list()])  # e.g. LVIS loading needs lvis
    for name in list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST):
        _check_one(name)


register_shapes()
