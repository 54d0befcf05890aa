"""faster-coco-eval (fast path) against pycocotools (reference) on synthetic detections."""
import numpy as np
import pytest

from kd_det.detection.data.shapes import make_shapes, shapes_paths
from kd_det.evaluation.coco_eval import evaluate_coco


def _detections(json_file, seed=0):
    """Jittered copies of the GT boxes plus random false positives, with random scores."""
    import json

    rng = np.random.default_rng(seed)
    gt = json.load(open(json_file))
    dets = []
    for a in gt["annotations"]:
        if rng.random() < 0.8:
            x, y, w, h = a["bbox"]
            j = rng.normal(0, 0.08, 4) * [w, h, w, h]
            dets.append({"image_id": a["image_id"], "category_id": int(rng.choice([a["category_id"], 1, 2, 3],
                         p=[.85, .05, .05, .05])), "bbox": [x + j[0], y + j[1], max(1, w + j[2]), max(1, h + j[3])],
                         "score": float(rng.random())})
    for img in gt["images"]:
        for _ in range(3):
            x, y = rng.uniform(0, 120, 2)
            dets.append({"image_id": img["id"], "category_id": int(rng.integers(1, 4)),
                         "bbox": [x, y, rng.uniform(4, 40), rng.uniform(4, 40)], "score": float(rng.random() * .5)})
    return dets


def test_backends_agree(tmp_path):
    make_shapes(str(tmp_path), {"val": (60, 3)})
    json_file, _ = shapes_paths(str(tmp_path), "val")
    dets = _detections(json_file)
    assert len(dets) > 200
    fast, fast_stats = evaluate_coco(json_file, dets, "faster_coco_eval")
    ref, ref_stats = evaluate_coco(json_file, dets, "pycocotools")
    np.testing.assert_allclose(fast_stats, ref_stats, atol=1e-6)
    assert 20 < ref["AP"] < 95  # a meaningful, non-trivial score
    for k, v in ref.items():
        assert fast[k] == pytest.approx(v, abs=1e-4, nan_ok=True), k


def test_unknown_backend_is_one_sentence(tmp_path):
    with pytest.raises(ValueError, match="TEST.EVAL_BACKEND is 'fast'"):
        evaluate_coco("x.json", [], "fast")
