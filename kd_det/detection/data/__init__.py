"""Datasets: the built-in synthetic shapes set, registration helpers and the checked dataset mapper."""
from .datasets import (DatasetError, check_masks, check_num_classes, datasets_root, load_coco_checked,  # noqa: F401
                       register_coco, register_datasets, register_shapes, setup_datasets)
from .mapper import CheckedDatasetMapper  # noqa: F401
from .shapes import make_shapes, shapes_paths  # noqa: F401
