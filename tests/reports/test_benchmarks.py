"""The eval, data and distill benchmarks run end to end at tiny sizes and write their JSON (no timing asserted)."""
import json

import numpy as np
import pytest

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
    from kd_det.detection.data.datasets import register_shapes

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


def test_phase_clock_counts_nested_modules_once():
    import torch

    from kd_det.benchmarks.distill import PhaseClock, breakdown

    inner = torch.nn.Linear(3, 3)
    outer = torch.nn.Sequential(inner, torch.nn.ReLU())
    clock = PhaseClock("cpu")
    clock.attach("teacher", [outer, inner])
    with clock.phase("forward"):
        outer(torch.randn(2, 3))
    assert len(clock.spans["teacher"]) == 1 and len(clock.spans["forward"]) == 1
    wall, cpu = clock.take()
    assert set(wall) == set(cpu) == {"teacher", "forward"} and not clock.spans
    assert 0 <= wall["teacher"] <= wall["forward"]
    ph = breakdown(wall)
    assert set(ph) == {"student_fwd_s", "teacher_fwd_s", "losses_fwd_s", "backward_s"}
    assert ph["student_fwd_s"] == pytest.approx(wall["forward"] - wall["teacher"]) and ph["losses_fwd_s"] == 0
    clock.remove()
    outer(torch.randn(2, 3))
    assert not clock.spans  # hooks gone


def test_distill_benchmark_phases_and_load(tmp_path, capsys):
    """Tiny run of the real pair (R-101 teacher, R-18 student): phase breakdown, CPU times, machine load,
    input normalisation and the operator profile land in the JSON; no speed is asserted."""
    from kd_det.benchmarks import distill as distill_bench

    out = tmp_path / "distill.json"
    small = ["MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32", "MODEL.RPN.POST_NMS_TOPK_TRAIN", "64"]
    assert distill_bench.main(["--methods", "reviewkd", "--images", "1", "--size", "96x128", "--steps", "1",
                               "--threads", "1", "--profile", "3", "--json", str(out)] + small) == 0
    res = json.loads(out.read_text())
    assert res["size"] == [96, 128] and res["images"] == 1 and res["steps"] == 1  # the batch asked for, as run
    m = res["machine"]
    assert m["cores"] >= 1 and m["usable_cores"] >= 1 and m["torch_threads"] == 1 and m["torch"]
    assert len(m["loadavg_before"]) == 3 and len(m["loadavg_after"]) == 3 and isinstance(m["overloaded"], bool)
    assert res["inputs"]["methods_match_student"]
    assert res["inputs"]["student"]["format"] == "RGB" and res["inputs"]["student"]["pixel_std"][0] == 58.395
    assert res["inputs"]["teacher"]["format"] == "BGR"
    # frozen-BN calibration: the random teacher keeps proposals, so (b) runs its box head as a trained one does
    assert res["weights"]["init"] == "frozen_bn_calibrated" and res["weights"]["proposals"][0] > 0
    phases = {"student_fwd_s", "teacher_fwd_s", "losses_fwd_s", "backward_s"}
    assert set(res["a_phases"]) == {"student_fwd_s", "backward_s"} and set(res["b_phases"]) == {"teacher_fwd_s"}
    (row,) = res["methods"]
    assert row["method"] == "reviewkd" and set(row["phases"]) == phases and set(row["phases_cpu"]) == phases
    assert all(v >= 0 for v in list(row["phases"].values()) + list(row["phases_cpu"].values()))
    assert row["phases"]["teacher_fwd_s"] > 0 and row["phases"]["losses_fwd_s"] > 0
    assert sum(row["phases"].values()) <= row["c_s"] * 1.01 + 1e-3  # phases are parts of the step
    assert row["ratio"] > 0 and row["ratio_cpu"] > 0 and res["cpu"]["a_s"] > 0
    prof = res["profile"]
    assert set(prof) == {"a", "reviewkd"} and len(prof["reviewkd"]["rows"]) == 3
    text = capsys.readouterr().out
    assert "student fwd" in text and "load average" in text and "profile: reviewkd step" in text


def test_distill_benchmark_times_a_teacher_mode_beside_float32(tmp_path, capsys):
    """--teacher-precision / --teacher-channels-last add "(b) <mode>" and "<method> <mode>" rows to the same run."""
    from kd_det.benchmarks import distill as distill_bench

    out = tmp_path / "distill.json"
    small = ["MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32", "MODEL.RPN.POST_NMS_TOPK_TRAIN", "64"]
    assert distill_bench.main(["--methods", "dkd", "--images", "1", "--size", "96x128", "--steps", "1", "--threads",
                               "1", "--teacher-precision", "bfloat16", "--teacher-channels-last", "--json", str(out)]
                              + small) == 0
    res = json.loads(out.read_text())
    mode = "teacher bfloat16 channels_last"
    assert [r["method"] for r in res["methods"]] == ["dkd", f"dkd {mode}"]
    assert res["b_mode"]["mode"] == mode and res["b_mode"]["s"] > 0 and res["b_mode"]["speedup"] > 0
    assert all(r["phases"]["teacher_fwd_s"] > 0 for r in res["methods"])
    assert f"(b) {mode}" in capsys.readouterr().out


def test_benchmark_modules_register_what_they_build():
    """In a clean process (as `tools/benchmark.py distill` runs), the distill benchmark's module
    registers DistillRCNN itself: loading configs no longer imports the models as a side effect."""
    import subprocess
    import sys

    code = ("import kd_det.benchmarks.distill; from detectron2.modeling import META_ARCH_REGISTRY as R; "
            "print('DistillRCNN' in R)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "True"


def test_distill_benchmark_times_a_retinanet_pair(tmp_path):
    """--pair with the RetinaNet R-101 -> R-50 folder: the dense teacher (no proposals) and a feature loss."""
    from kd_det.benchmarks import distill as distill_bench

    out = tmp_path / "distill.json"
    assert distill_bench.main(["--pair", "configs/COCO-Detection/distill/RT101-RT50", "--methods", "pkd", "--images",
                               "1", "--size", "96x128", "--steps", "1", "--threads", "1", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    (row,) = res["methods"]
    assert row["method"] == "pkd" and row["phases"]["losses_fwd_s"] > 0 and row["phases"]["teacher_fwd_s"] > 0
    assert res["weights"]["proposals"] is None and row["ratio"] > 0


def test_phase_clock_counts_teacher_modules_inside_the_cross_pass_as_cross():
    import torch

    from kd_det.benchmarks.distill import PhaseClock, breakdown

    head = torch.nn.Linear(3, 3)
    clock = PhaseClock("cpu")
    clock.attach("teacher", [head])
    cross = clock.timed("cross", lambda x: head(x))
    with clock.phase("forward"):
        head(torch.randn(2, 3))                      # the teacher's own forward
        cross(torch.randn(2, 3))                     # CrossKD: the teacher's layer on the student's features
    assert len(clock.spans["teacher"]) == 1 and len(clock.spans["cross"]) == 1
    wall, _ = clock.take()
    ph = breakdown(wall)
    assert ph["cross_fwd_s"] == wall["cross"]
    assert ph["student_fwd_s"] == pytest.approx(max(wall["forward"] - wall["teacher"] - wall["cross"], 0.0))
    clock.remove()


def test_distill_benchmark_student_option_and_crosskd_phase(tmp_path):
    """--pair of the shapes dense folder with --student: FCOS + CrossKD, its cross-head pass a phase of its own; the
    batch's classes follow the student's class count (3)."""
    from kd_det.benchmarks import distill as distill_bench

    out = tmp_path / "distill.json"
    assert distill_bench.main(["--pair", "configs/shapes/distill/dense", "--student", "configs/shapes/fcos_R_18_FPN_shapes.yaml",
                               "--methods", "fcos_crosskd", "--images", "1", "--size", "96x128", "--steps", "1",
                               "--threads", "1", "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())["methods"]
    assert row["method"] == "fcos_crosskd" and row["phases"]["cross_fwd_s"] > 0 and row["phases"]["teacher_fwd_s"] > 0


def test_distill_benchmark_times_a_mask_rcnn_pair(tmp_path):
    """A Mask R-CNN student: the batch carries instance masks (each box filled), so loss_mask runs in (a) and (c)."""
    from kd_det.benchmarks import distill as distill_bench

    out = tmp_path / "distill.json"
    assert distill_bench.main(["--pair", "configs/shapes/distill/mask", "--student", "configs/shapes/mask_rcnn_R_18_FPN_shapes.yaml",
                               "--methods", "reviewkd", "--images", "1", "--size", "96x128", "--steps", "1",
                               "--threads", "1", "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())["methods"]
    assert row["method"] == "reviewkd" and row["phases"]["losses_fwd_s"] > 0


def test_teacher_parts_reach_a_dense_heads_layers():
    """The dense wrappers run the teacher head's branch layers one by one: the teacher phase must hook them."""
    import kd_det  # noqa: F401
    from detectron2.modeling import build_model

    from kd_det.benchmarks.distill import teacher_parts
    from kd_det.config.detection import load_config

    model = build_model(load_config("configs/shapes/fcos_R_18_FPN_shapes.yaml", ["MODEL.FCOS.NUM_CONVS", "1"]))
    hooked = {id(m) for m in teacher_parts(model)}
    assert {id(model.head.cls_subnet[0]), id(model.head.bbox_subnet[0]), id(model.backbone)} <= hooked


def test_distill_benchmark_loads_a_trained_teacher(tmp_path, monkeypatch, capsys):
    """--teacher-weights loads the checkpoint into the teacher (no calibration over it); a missing file is one
    sentence before anything is built."""
    import torch
    from detectron2.checkpoint import DetectionCheckpointer

    from kd_det.benchmarks import distill as distill_bench

    teacher_cfg = distill_bench.load_config("configs/shapes/faster_rcnn_R_34_FPN_shapes_teacher.yaml",
                                            ["MODEL.DEVICE", "cpu"])
    teacher = distill_bench.build_model(teacher_cfg)
    with torch.no_grad():
        teacher.roi_heads.box_predictor.cls_score.bias.fill_(7.0)
    DetectionCheckpointer(teacher, save_dir=str(tmp_path)).save("trained")
    pth = str(tmp_path / "trained.pth")
    loaded = []
    real_load = DetectionCheckpointer.load

    def spy(self, path, *args, **kwargs):
        out = real_load(self, path, *args, **kwargs)
        if path == pth:
            loaded.append(self.model.roi_heads.box_predictor.cls_score.bias.detach().clone())
        return out
    monkeypatch.setattr(DetectionCheckpointer, "load", spy)
    out = tmp_path / "distill.json"
    assert distill_bench.main(["--pair", "configs/shapes/distill", "--student",
                               "configs/shapes/faster_rcnn_R_18_FPN_shapes.yaml", "--methods", "kd", "--images", "1",
                               "--size", "64x80", "--steps", "1", "--threads", "1", "--teacher-weights", pth,
                               "--json", str(out)]) == 0
    (bias,) = loaded
    assert torch.all(bias == 7.0)
    res = json.loads(out.read_text())
    assert res["weights"]["teacher"] == pth and res["methods"][0]["ratio"] > 0
    assert f"weights: teacher {pth}, student random" in capsys.readouterr().out
    with pytest.raises(SystemExit, match=r"--teacher-weights .*missing\.pth: no such file\.$"):
        distill_bench.main(["--teacher-weights", str(tmp_path / "missing.pth")])
