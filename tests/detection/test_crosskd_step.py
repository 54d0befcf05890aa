"""CrossKD in the dense wrappers (issue 21): the cross-head pass runs the teacher's head layers from
KD.CROSS_HEAD_LAYER on, on the student's features, with gradients; the teacher computes only what the loss reads;
a student equal to its teacher gives cross-head predictions equal to the teacher's (loss 0); the student's own
losses are the stock ones; the refusals (head widths / depths, the layer key, Faster R-CNN) name their key."""
import json
import math
import os

import pytest
import torch

import kd_det  # noqa: F401  (applies kd_det.compat before Detectron2 is imported)
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from kd_det.config.detection import load_config
from kd_det.errors import ConfigError
from test_dense import DISTILL, LEVELS, OWN_LOSSES, STUDENT_ARCH  # tests/detection is on sys.path
from test_distill import batch, count_calls, distill_cfg, step_seeing

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BASES = {"retinanet": "configs/shapes/retinanet_R_18_FPN_shapes.yaml", "fcos": "configs/shapes/fcos_R_18_FPN_shapes.yaml"}
CONVS = {"retinanet": "RETINANET", "fcos": "FCOS"}


@pytest.fixture(scope="module")
def twin_teachers(tmp_path_factory, teacher_writer):
    """Per family, a small R-18 teacher with the small student's head (FPN 32, 2 convs per branch): (config, weights)."""
    return {f: teacher_writer(tmp_path_factory.mktemp(f"{f}_twin"), f"{REPO}/{BASES[f]}",
                              f"  FPN: {{OUT_CHANNELS: 32}}\n  {CONVS[f]}: {{NUM_CONVS: 2}}\n") for f in BASES}


def crosskd_cfg(family, teacher, layer=1, extra=()):
    return load_config(os.path.join(REPO, DISTILL[family]), [
        "KD.TEACHER.CONFIG_FILE", teacher[0], "KD.TEACHER.WEIGHTS", teacher[1], "KD.LOSSES", "[{'name': 'crosskd'}]",
        "KD.CROSS_HEAD_LAYER", str(layer), "MODEL.FPN.OUT_CHANNELS", "32", f"MODEL.{CONVS[family]}.NUM_CONVS", "2",
        *extra])


@pytest.mark.parametrize("family, layer", [("retinanet", 0), ("retinanet", 2), ("fcos", 1)])
def test_cross_head_step_structure(twin_teachers, family, layer):
    """Student backbone once and each head predictor once per level; teacher backbone once; each teacher predictor
    twice per level (its own prediction + the cross-head one); gradients reach the student's whole head through the
    teacher's frozen layers, never the teacher."""
    model = build_model(crosskd_cfg(family, twin_teachers[family], layer)).train()
    assert model.teacher_parts == ("backbone", "cls_head", "box_head", "cross_head")
    t = model.teacher
    calls = {"student backbone": count_calls(model.backbone), "student cls_score": count_calls(model.head.cls_score),
             "teacher backbone": count_calls(t.backbone), "teacher cls_score": count_calls(t.head.cls_score),
             "teacher bbox_pred": count_calls(t.head.bbox_pred), "teacher head": count_calls(t.head)}
    with EventStorage(0):
        out = model(batch())
    assert {k: len(v) for k, v in calls.items()} == {
        "student backbone": 1, "student cls_score": len(LEVELS), "teacher backbone": 1,
        "teacher cls_score": 2 * len(LEVELS), "teacher bbox_pred": 2 * len(LEVELS), "teacher head": 0}
    assert set(out) == OWN_LOSSES[family] | {"loss_crosskd"} and torch.isfinite(out["loss_crosskd"])
    out["loss_crosskd"].backward()
    assert all(p.grad is None and not p.requires_grad for p in t.parameters())
    first_conv = [m for m in model.head.cls_subnet if isinstance(m, torch.nn.Conv2d)][0]
    assert (first_conv.weight.grad is not None and first_conv.weight.grad.abs().sum() > 0) == (layer > 0)
    assert model.head.cls_score.weight.grad is None           # the student's own predictor is not on the cross path
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.parameters())


@pytest.mark.parametrize("family", ["retinanet", "fcos"])
def test_student_equal_to_its_teacher_mimics_exactly(twin_teachers, family):
    """With the teacher's weights in the student, the cross-head predictions are the teacher's own (align_scale is the
    identity up to its 1e-6), so CrossKD's class term is 0 (RetinaNet: the whole loss); the student's own losses equal the stock class's."""
    from kd_det.detection.modeling import student_config

    cfg = crosskd_cfg(family, twin_teachers[family], layer=1)
    model = build_model(cfg).train()
    state = torch.load(twin_teachers[family][1], weights_only=False)["model"]
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all(k.startswith("distill.") for k in missing)
    model.backbone.eval()                                      # BatchNorm on running statistics, as the teacher's
    data = batch()
    out, seen = step_seeing(model, "crosskd", data)
    torch.testing.assert_close(seen["cross_logits_s"], seen["anchor_logits_t"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(seen["cross_boxes_s"], seen["anchor_boxes_t"], rtol=1e-4, atol=1e-3)
    assert seen["cross_logits_s"].shape[0] == seen["anchor_labels"].shape[0]
    from kd_det.losses import build_loss
    assert abs(build_loss("crosskd", reg_weight=0.0)(**seen).item()) < 1e-4
    if family == "retinanet":  # a random FCOS predicts zero-size boxes (ReLU'd distances): IoU 0 even when equal
        assert abs(out["loss_crosskd"].item()) < 1e-4
    plain = build_model(student_config(cfg)).train()
    assert type(plain).__name__ == STUDENT_ARCH[family]
    plain.load_state_dict(state)
    plain.backbone.eval()
    with EventStorage(0):
        ref = plain(data)
    for k in ref:
        torch.testing.assert_close(out[k], ref[k], rtol=1e-5, atol=1e-6)


def test_crosskd_refusals_name_the_key(twin_teachers, tmp_path, teacher_writer, teacher_files):
    rt = twin_teachers["retinanet"]
    with pytest.raises(ConfigError, match=r"KD.CROSS_HEAD_LAYER is 3 and KD.LOSSES crosskd run the student's head "
                                          r"features after 3 convs .* the student's cls_subnet has 2 convs"):
        build_model(crosskd_cfg("retinanet", rt, layer=3))
    wide = teacher_writer(tmp_path, f"{REPO}/{BASES['retinanet']}", "  FPN: {OUT_CHANNELS: 64}\n  RETINANET: {NUM_CONVS: 2}\n")
    with pytest.raises(ConfigError, match=r"widths \[32, 32\] \(input 32\) and the teacher's .* of \[64, 64\] "
                                          r"\(input 64\); CrossKD needs heads of the same width"):
        build_model(crosskd_cfg("retinanet", wide, layer=1))
    with pytest.raises(ConfigError, match=r"KD.CROSS_HEAD_LAYER is -1; it must be an int >= 0"):
        build_model(crosskd_cfg("retinanet", rt, layer=-1))
    with pytest.raises(ConfigError, match=r"KD.LOSSES: crosskd needs cross_logits_s, anchor_logits_t, cross_boxes_s, "
                                          r"anchor_boxes_t, anchor_labels, which detection does not provide"):
        build_model(distill_cfg(teacher_files, ["crosskd"]))


@pytest.mark.parametrize("family", ["retinanet", "fcos"])
def test_shapes_crosskd_configs_step(twin_teachers, family):
    """The shapes CrossKD configs (the authors' values per family) build and train one step, small (FPN 32, 2 convs
    per branch, so the config's layer is capped at 2 here); the term is finite and reaches the student."""
    path = os.path.join(REPO, f"configs/shapes/distill/dense/{family}_crosskd.yaml")
    own = load_config(path)
    assert [s["name"] for s in own.KD.LOSSES] == ["crosskd"] and own.KD.CROSS_HEAD_LAYER == {"retinanet": 3, "fcos": 2}[family]
    cfg = load_config(path, ["KD.TEACHER.CONFIG_FILE", twin_teachers[family][0], "KD.TEACHER.WEIGHTS",
                             twin_teachers[family][1], "MODEL.FPN.OUT_CHANNELS", "32", f"MODEL.{CONVS[family]}.NUM_CONVS",
                             "2", "KD.CROSS_HEAD_LAYER", str(min(own.KD.CROSS_HEAD_LAYER, 2))])
    assert cfg.KD.LOSSES == own.KD.LOSSES
    model = build_model(cfg).train()
    with EventStorage(0):
        out = model(batch())
    assert torch.isfinite(out["loss_crosskd"]) and out["loss_crosskd"] > 0
    out["loss_crosskd"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.head.parameters())


@pytest.mark.slow
def test_retinanet_crosskd_trains_through_train_net_and_is_reported(tiny_shapes, tmp_path, run_tool, twin_teachers):
    """tools/train_net.py on the shapes RetinaNet CrossKD config (small head, 2 iterations) logs loss_crosskd and box AP;
    the report (tools/report.py's build_report) shows the run as a CrossKD row of the R34 -> R18 RetinaNet pair."""
    out, report = str(tmp_path / "run"), str(tmp_path / "report")
    teacher = twin_teachers["retinanet"]
    r = run_tool("train_net.py", [
        "--config-file", "configs/shapes/distill/dense/retinanet_crosskd.yaml", "SOLVER.MAX_ITER", "2",
        "SOLVER.IMS_PER_BATCH", "2", "SOLVER.WARMUP_ITERS", "2", "SOLVER.STEPS", "()", "OUTPUT_DIR", out,
        "KD.TEACHER.CONFIG_FILE", teacher[0], "KD.TEACHER.WEIGHTS", teacher[1], "KD.CROSS_HEAD_LAYER", "2",
        "MODEL.FPN.OUT_CHANNELS", "32", "MODEL.RETINANET.NUM_CONVS", "2"], tiny_shapes)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    with open(os.path.join(out, "metrics.json")) as f:
        rows = [json.loads(line) for line in f]
    assert all(math.isfinite(x["loss_crosskd"]) for x in rows if "total_loss" in x)
    from kd_det.evaluation.report import build_report  # tools/report.py's function, in this interpreter
    build_report([out], report, plots=False)
    with open(os.path.join(report, "report.csv")) as f:
        text = f.read()
    assert "CrossKD" in text and "R18-RetinaNet" in text


def test_cross_logits_alone_run_no_teacher_box_branch(twin_teachers):
    """A loss reading only the cross-head class logits (sigmoid KD remapped onto them) runs the teacher's class branch
    and cross pass, never its box branch."""
    cfg = crosskd_cfg("retinanet", twin_teachers["retinanet"], layer=1)
    cfg.defrost()
    cfg.KD.LOSSES = [{"name": "sigmoid_kd", "weight": 1.0, "params": {}, "inputs": {"anchor_logits_s": "cross_logits_s"},
                      "tag": "cross_sigmoid_kd", "start_iter": 0}]
    model = build_model(cfg).train()
    assert model.teacher_parts == ("backbone", "cls_head", "cross_head")
    box_calls = count_calls(model.teacher.head.bbox_pred)
    with EventStorage(0):
        out = model(batch())
    assert not box_calls and torch.isfinite(out["loss_cross_sigmoid_kd"])
