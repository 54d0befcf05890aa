"""Datasets: the built-in synthetic shapes set and COCO-format registration helpers."""
from .datasets import DatasetError, datasets_root, register_coco, register_shapes, setup_datasets  # noqa: F401
from .shapes import make_shapes, shapes_paths  # noqa: F401
