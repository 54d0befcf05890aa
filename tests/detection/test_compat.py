"""kd_det.compat: Detectron2 0.6 Python code on current NumPy/Pillow/torch without detectron2._C."""
import subprocess
import sys

import numpy as np
import pytest
import torch

import kd_det
from kd_det.compat import MissingCppOpError

pytestmark = pytest.mark.skipif(kd_det.compat.HAS_CPP_OPS, reason="a full Detectron2 build is installed")


def test_removed_aliases_restored():
    from PIL import Image

    assert np.int is int and np.float is float and np.object is object  # NumPy 2 has np.bool again
    assert Image.LINEAR == Image.BILINEAR


def test_cuda_deform_conv_op_fails_with_one_clear_sentence():
    from detectron2.layers import deform_conv  # imports `_C` at module level: must not fail

    with pytest.raises(MissingCppOpError, match=r"detectron2\._C\.deform_conv_forward is a C\+\+/CUDA op"):
        deform_conv._C.deform_conv_forward  # what DeformConv calls on CUDA tensors


def test_detectron2_fast_coco_eval_fails_clearly(tiny_shapes):
    import contextlib
    import io

    from detectron2.evaluation.fast_eval_api import COCOeval_opt
    from pycocotools.coco import COCO

    from kd_det.detection.data.shapes import shapes_paths

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(shapes_paths(tiny_shapes, "val")[0])
        dt = gt.loadRes([{"image_id": 1, "category_id": 1, "bbox": [1, 1, 9, 9], "score": 0.5}])
        with pytest.raises(MissingCppOpError, match="fast COCO evaluation"):
            COCOeval_opt(gt, dt, "bbox").evaluate()


def test_collect_env_and_train_loader_histogram():
    from detectron2.data.build import print_instances_class_histogram
    from detectron2.utils.collect_env import collect_env_info

    assert "Python-only Detectron2" in collect_env_info()
    print_instances_class_histogram([{"annotations": [{"category_id": 0, "iscrowd": 0}]}], ["a"])  # np.int


def test_import_kd_det_does_not_import_detectron2():
    code = "import sys, kd_det, kd_det.compat; assert 'detectron2' not in sys.modules, 'imported'"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
