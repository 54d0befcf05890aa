"""Dataset registration and up-front checks.

* ``shapes_train`` / ``shapes_val`` (the built-in synthetic set) are registered on
  import, under ``$DETECTRON2_DATASETS/shapes``; they are built on first use.
* Any COCO-format dataset: ``register_coco("name", json, image_root)`` in Python, or
  one config line ``DATASETS.COCO_FORMAT [["name", "ann.json", "images/"]]``.
* COCO 2017 (``coco_2017_train`` / ``coco_2017_val``) is registered by Detectron2
  itself under ``$DETECTRON2_DATASETS/coco``.

:func:`setup_datasets` runs before any training step, so a missing path fails at
start with one sentence naming the path and the environment variable.
"""
import logging
import os

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances

from .. import REPO_ROOT
from ..errors import DatasetError
from .shapes import CATEGORIES, make_shapes, shapes_paths

__all__ = ["DatasetError", "datasets_root", "register_coco", "register_shapes", "setup_datasets"]

logger = logging.getLogger(__name__)
_REPO_DATASETS = os.path.join(REPO_ROOT, "datasets")


def datasets_root():
    """``$DETECTRON2_DATASETS`` if set, else the repository's ``datasets/`` folder."""
    return os.path.abspath(os.path.expanduser(os.environ.get("DETECTRON2_DATASETS", _REPO_DATASETS)))


def register_coco(name, json_file, image_root):
    """Register a COCO-format instance dataset under ``name`` (idempotent for the same paths)."""
    json_file, image_root = os.path.abspath(json_file), os.path.abspath(image_root)
    if name in DatasetCatalog.list():
        meta = MetadataCatalog.get(name)
        if getattr(meta, "json_file", None) == json_file and getattr(meta, "image_root", None) == image_root:
            return
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    register_coco_instances(name, {}, json_file, image_root)


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
    if shapes_root is not None and not os.path.isfile(json_file):
        logger.info(f"Building the synthetic shapes dataset under {shapes_root} ...")
        make_shapes(shapes_root)
    for path in (json_file, getattr(meta, "image_root", None)):
        if path is not None and not os.path.exists(path):
            raise DatasetError(
                f"Dataset '{name}' needs {path}, which does not exist: put the data there or point "
                f"$DETECTRON2_DATASETS (now {datasets_root()}) at the folder that holds it (see datasets/README.md).")


def setup_datasets(cfg):
    """Register ``cfg.DATASETS.COCO_FORMAT`` and check every dataset in TRAIN/TEST exists."""
    for i, entry in enumerate(cfg.DATASETS.COCO_FORMAT):
        if len(entry) != 3:
            raise DatasetError(
                f"DATASETS.COCO_FORMAT[{i}] is {list(entry)!r}; expected [name, json_file, image_root].")
        register_coco(*entry)
    for name in list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST):
        _check_one(name)


register_shapes()
