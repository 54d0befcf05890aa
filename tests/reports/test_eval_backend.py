"""Detectron2 0.6's own fast COCO path (``COCOeval_opt``, needs ``_C``) is never selected by accident."""
import json

import pytest

import kd_det  # noqa: F401  (compat before Detectron2)
from detectron2.evaluation import COCOEvaluator
from detectron2.evaluation import coco_evaluation, fast_eval_api

from kd_det.config.detection import get_cfg
from kd_det.detection.engine.trainer import Trainer
from kd_det.evaluation.coco_eval import BACKENDS, check_backend, evaluate_coco
from kd_det.evaluation.evaluator import COCOBoxEvaluator


@pytest.fixture
def forbid_detectron2_eval(monkeypatch):
    """Make every Detectron2 COCO evaluation entry point raise if anything reaches it."""
    def boom(*args, **kwargs):
        raise AssertionError("Detectron2's own COCO evaluation was used")

    monkeypatch.setattr(COCOEvaluator, "__init__", boom)
    monkeypatch.setattr(coco_evaluation, "_evaluate_predictions_on_coco", boom)
    monkeypatch.setattr(fast_eval_api.COCOeval_opt, "evaluate", boom)
    monkeypatch.setattr(fast_eval_api.COCOeval_opt, "accumulate", boom)


def test_default_backend_is_faster_coco_eval():
    cfg = get_cfg()
    assert cfg.TEST.EVAL_BACKEND == "faster_coco_eval" == BACKENDS[0]
    assert set(BACKENDS) == {"faster_coco_eval", "pycocotools"}


@pytest.mark.parametrize("name", ["detectron2", "fast", "COCOeval_opt", ""])
def test_other_backend_names_are_refused(name):
    with pytest.raises(ValueError, match="expected one of faster_coco_eval, pycocotools"):
        check_backend(name)


@pytest.mark.parametrize("backend", BACKENDS)
def test_trainer_evaluator_is_kd_dets(backend, tmp_path, forbid_detectron2_eval):
    """Trainer.build_evaluator -> COCOBoxEvaluator, whose evaluate() runs without Detectron2's COCO code."""
    from kd_det.detection.data.datasets import register_coco

    gt = {"images": [{"id": 1, "width": 100, "height": 80, "file_name": "a.png"}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 30, 20], "area": 600,
                           "iscrowd": 0}],
          "categories": [{"id": 1, "name": "thing"}]}
    json_file = tmp_path / "gt.json"
    json_file.write_text(json.dumps(gt))
    register_coco("kd_det_test_backend", str(json_file), str(tmp_path))
    cfg = get_cfg()
    cfg.TEST.EVAL_BACKEND = backend
    cfg.OUTPUT_DIR = str(tmp_path)
    ev = Trainer.build_evaluator(cfg, "kd_det_test_backend")
    assert isinstance(ev, COCOBoxEvaluator) and not isinstance(ev, COCOEvaluator)
    ev.reset()
    ev._predictions = [(1, [{"image_id": 1, "category_id": 1, "bbox": [10, 10, 30, 20], "score": 0.9}])]
    assert ev.evaluate()["bbox"]["AP"] == pytest.approx(100.0)


def test_evaluate_coco_never_reaches_detectron2(tmp_path, forbid_detectron2_eval):
    gt = {"images": [{"id": i, "width": 64, "height": 64} for i in (1, 2)],
          "annotations": [{"id": i, "image_id": i, "category_id": 1, "bbox": [5, 5, 20, 20], "area": 400,
                           "iscrowd": 0} for i in (1, 2)],
          "categories": [{"id": 1, "name": "box"}]}
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    dets = [{"image_id": 1, "category_id": 1, "bbox": [5, 5, 20, 20], "score": 0.8}]
    for backend in BACKENDS:
        metrics, stats = evaluate_coco(str(path), [dict(d) for d in dets], backend)
        assert metrics["AP"] == pytest.approx(50.5, abs=0.5)  # one of two objects found
