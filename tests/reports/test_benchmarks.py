"""The eval and data benchmarks run end to end at tiny sizes and write their JSON (no timing asserted)."""
import json

import numpy as np

from kd_det.benchmarks import data as data_bench
from kd_det.benchmarks import eval as eval_bench


def test_synthetic_set_is_coco_shaped():
    gt, dets = eval_bench.synthetic_set(20, 30, 5, seed=1)
    assert len(gt["images"]) == 20 and len(gt["categories"]) == 5
    assert len(dets) >= 20 * 25  # about 30 per image
    ids = {a["image_id"] for a in gt["annotations"]} | {d["image_id"] for d in dets}
    assert ids <= {im["id"] for im in gt["images"]}
    assert all(d["bbox"][2] > 0 and d["bbox"][3] > 0 and 0 <= d["score"] <= 1 for d in dets)
    gt2, dets2 = eval_bench.synthetic_set(20, 30, 5, seed=1)
    assert gt2 == gt and dets2 == dets  # seeded


def test_eval_benchmark_backends_agree(tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert eval_bench.main(["--images", "60", "--dets", "20", "--classes", "6", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["stats_identical"] and res["max_abs_stat_diff"] <= 1e-6
    np.testing.assert_allclose(res["stats_faster_coco_eval"], res["stats_pycocotools"], atol=1e-6)
    assert 5 < 100 * res["stats_pycocotools"][0] < 95  # a non-trivial AP
    assert [r["figure"] for r in res["rows"]][:2] == ["faster-coco-eval", "pycocotools (reference)"]
    assert res["ratio"] > 0 and all(r["device"] == "cpu" for r in res["rows"])
    assert "speed-up" in capsys.readouterr().out


def test_data_benchmark_counts_images(tiny_shapes, tmp_path):
    from kd_det.data.datasets import register_shapes

    out = tmp_path / "data.json"
    try:
        rc = data_bench.main(["--root", tiny_shapes, "--workers", "0", "--batches", "2", "--warmup", "1",
                              "--batch-size", "2", "--device", "cpu", "--json", str(out)])
    finally:
        register_shapes()  # back to the default root for the rest of the session
    assert rc == 0
    res = json.loads(out.read_text())
    (row,) = res["rows"]
    assert row["images"] == 4 and row["value"] > 0 and row["dataset"] == "shapes_train" and row["device"] == "cpu"


def test_data_benchmark_bad_config_is_one_line(tmp_path, capsys):
    assert data_bench.main(["--config", str(tmp_path / "nope.yaml"), "--workers", "0"]) == 2
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("benchmark.py data: error:") and "nope.yaml" in out[-1]
