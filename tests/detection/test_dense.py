"""DistillRetinaNet / DistillFCOS: structure of a training step (each head once, the teacher only where a loss reads
it), the tensors handed over against the stock classes, cross-family teachers, export to stock Detectron2, and every
refusal sentence of the dense wrappers."""
import os

import pytest
import torch

import kd_det  # noqa: F401  (applies kd_det.compat before Detectron2 is imported)
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from kd_det.config.detection import load_config
from kd_det.errors import ConfigError
from test_distill import batch, count_calls, distill_cfg, export_and_run_in_stock, step_seeing  # tests/detection is on sys.path

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DISTILL = {"retinanet": "configs/shapes/distill/dense/retinanet_sigmoid_kd.yaml",
           "fcos": "configs/shapes/distill/dense/fcos_sigmoid_kd.yaml"}
STUDENT_ARCH = {"retinanet": "RetinaNet", "fcos": "FCOS"}
OWN_LOSSES = {"retinanet": {"loss_cls", "loss_box_reg"}, "fcos": {"loss_fcos_cls", "loss_fcos_loc", "loss_fcos_ctr"}}
SMALL = {"retinanet": ["MODEL.FPN.OUT_CHANNELS", "32", "MODEL.RETINANET.NUM_CONVS", "1"],
         "fcos": ["MODEL.FPN.OUT_CHANNELS", "32", "MODEL.FCOS.NUM_CONVS", "1"]}
LEVELS = ["p3", "p4", "p5", "p6", "p7"]


@pytest.fixture(scope="module")
def dense_teachers(tmp_path_factory, teacher_writer):
    """Small RetinaNet / FCOS R-18 teachers (wider FPN than the students, random init): family -> (config, weights)."""
    return {
        "retinanet": teacher_writer(tmp_path_factory.mktemp("rt_teacher"),
                                    f"{REPO}/configs/shapes/retinanet_R_18_FPN_shapes.yaml",
                                    "  FPN: {OUT_CHANNELS: 64}\n  RETINANET: {NUM_CONVS: 1}\n"),
        "fcos": teacher_writer(tmp_path_factory.mktemp("fcos_teacher"), f"{REPO}/configs/shapes/fcos_R_18_FPN_shapes.yaml",
                               "  FPN: {OUT_CHANNELS: 64}\n  FCOS: {NUM_CONVS: 1}\n")}


def dense_cfg(family, teacher, losses, extra=()):
    """The family's shapes distill config, small, with ``teacher`` (config, weights) and KD.LOSSES ``losses``."""
    specs = [s if isinstance(s, dict) else {"name": s} for s in losses]
    return load_config(os.path.join(REPO, DISTILL[family]), [
        "KD.TEACHER.CONFIG_FILE", teacher[0], "KD.TEACHER.WEIGHTS", teacher[1], "KD.LOSSES", str(specs),
        *SMALL[family], *extra])


def _error(match, *args, **kwargs):
    with pytest.raises(ConfigError, match=match):
        build_model(dense_cfg(*args, **kwargs))


@pytest.mark.parametrize("family, losses", [
    ("retinanet", ["sigmoid_kd", "reviewkd"]),     # the anchor logits: teacher backbone + class branch
    ("retinanet", ["fitnet", "fgfi"]),             # features (+ anchors, GT boxes): teacher backbone only
    ("retinanet", []),                             # no loss reads the teacher: it never runs
    ("fcos", ["sigmoid_kd", "fitnet"]),
    ("fcos", ["reviewkd"]),
])
def test_one_step_structure(dense_teachers, family, losses):
    """Student backbone + head once; teacher backbone once when a loss reads a teacher input, its class branch once
    per level only when one reads anchor_logits_t, its box branch and full head never; no teacher gradient."""
    model = build_model(dense_cfg(family, dense_teachers[family], losses)).train()
    assert type(model).__name__ == f"Distill{STUDENT_ARCH[family]}" and not model.teacher.training
    t = model.teacher
    calls = {"student backbone": count_calls(model.backbone), "student head": count_calls(model.head),
             "teacher backbone": count_calls(t.backbone), "teacher head": count_calls(t.head),
             "teacher cls_score": count_calls(t.head.cls_score), "teacher bbox_pred": count_calls(t.head.bbox_pred)}
    with EventStorage(0):
        out = model(batch())
    logit, reads_t = "sigmoid_kd" in losses, bool(losses)
    assert {k: len(v) for k, v in calls.items()} == {
        "student backbone": 1, "student head": 1, "teacher backbone": int(reads_t), "teacher head": 0,
        "teacher cls_score": len(LEVELS) * logit, "teacher bbox_pred": 0}
    assert set(out) == OWN_LOSSES[family] | {f"loss_{n}" for n in losses}
    assert all(torch.isfinite(v) for v in out.values())
    sum(out.values()).backward()
    assert all(p.grad is None and not p.requires_grad for p in t.parameters())
    assert all(p.grad is not None for p in model.head.parameters())
    assert not any(k.startswith("teacher") for k in model.state_dict())
    if list(model.distill.parameters()):
        assert any(p.grad is not None for p in model.distill.parameters())


@pytest.mark.parametrize("family", ["retinanet", "fcos"])
def test_handed_tensors_and_own_losses_are_the_stock_ones(dense_teachers, family):
    """The student's own losses equal the stock RetinaNet / FCOS's on the same weights and batch; anchor_logits_s/t
    and anchor_labels are the stock head outputs / matching in Detectron2's order (image-major, levels
    concatenated); the teacher's class branch gives exactly its full head's class logits."""
    from detectron2.modeling.meta_arch.dense_detector import permute_to_N_HWA_K
    from kd_det.detection.modeling import student_config

    cfg = dense_cfg(family, dense_teachers[family], [{"name": "sigmoid_kd", "params": {"anchor_set": "non_ignored"}}])
    model = build_model(cfg).train()
    data = batch()
    out, seen = step_seeing(model, "sigmoid_kd", data)
    plain = build_model(student_config(cfg)).train()
    assert type(plain).__name__ == STUDENT_ARCH[family]
    plain.load_state_dict(model.state_dict(), strict=False)
    with EventStorage(0):
        ref = plain(data)
    assert set(ref) == OWN_LOSSES[family]
    for k in ref:
        torch.testing.assert_close(out[k], ref[k], rtol=1e-5, atol=1e-6)

    with torch.no_grad():
        images = plain.preprocess_image(data)
        feats = plain.backbone(images.tensor)
        head_in = [feats[f] for f in plain.head_in_features]
        logits = [permute_to_N_HWA_K(x, plain.num_classes) for x in plain.head(head_in)[0]]
        labels, _ = plain.label_anchors(plain.anchor_generator(head_in), [x["instances"] for x in data])
        t = model.teacher
        t_feats = t.backbone(t.preprocess_image(data).tensor)
        t_logits = [permute_to_N_HWA_K(x, t.num_classes) for x in t.head([t_feats[f] for f in t.head_in_features])[0]]
    k = plain.num_classes
    for i in range(len(data)):  # image i's rows are i * R ... (i + 1) * R - 1, levels concatenated
        r = sum(x.shape[1] for x in logits)
        torch.testing.assert_close(seen["anchor_logits_s"][i * r:(i + 1) * r], torch.cat([x[i] for x in logits]))
        torch.testing.assert_close(seen["anchor_logits_t"][i * r:(i + 1) * r], torch.cat([x[i] for x in t_logits]))
        assert torch.equal(seen["anchor_labels"][i * r:(i + 1) * r], labels[i])
    assert seen["anchor_logits_s"].shape == (len(data) * r, k) and seen["anchor_labels"].dtype == torch.int64
    assert ((seen["anchor_labels"] >= 0) & (seen["anchor_labels"] < k)).any()  # positives exist
    assert torch.isfinite(out["loss_sigmoid_kd"]) and out["loss_sigmoid_kd"] > 0


def test_teacher_precision_and_channels_last(dense_teachers):
    """KD.TEACHER.PRECISION bfloat16 + CHANNELS_LAST: the teacher's class branch runs in bf16 on NHWC weights; the
    loss receives float32."""
    model = build_model(dense_cfg("retinanet", dense_teachers["retinanet"], ["sigmoid_kd"],
                                  ["KD.TEACHER.PRECISION", "bfloat16", "KD.TEACHER.CHANNELS_LAST", "True"])).train()
    assert model.teacher.backbone.bottom_up.stem.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    seen = {}
    model.teacher.head.cls_score.register_forward_hook(lambda m, i, o: seen.update(t=o.dtype) and None)
    model.distill.losses["sigmoid_kd"].register_forward_pre_hook(
        lambda m, a, kw: seen.update(loss_in=kw["anchor_logits_t"].dtype) and None, with_kwargs=True)
    with EventStorage(0):
        out = model(batch())
    assert seen == {"t": torch.bfloat16, "loss_in": torch.float32} and torch.isfinite(out["loss_sigmoid_kd"])


def test_cross_family_teachers_serve_feature_losses(dense_teachers, teacher_files):
    """A Faster R-CNN teacher for a RetinaNet student and a RetinaNet teacher for a Faster R-CNN student, on the levels
    both have: the teacher runs its backbone only (no RPN, ROI heads or dense head)."""
    p3_p6 = ["KD.FEATURE_LEVELS", "['p3', 'p4', 'p5', 'p6']"]
    model = build_model(dense_cfg("retinanet", teacher_files, ["reviewkd"], p3_p6)).train()
    assert type(model.teacher).__name__ == "GeneralizedRCNN" and model.teacher_parts == ("backbone",)
    rpn, roi = count_calls(model.teacher.proposal_generator), count_calls(model.teacher.roi_heads)
    with EventStorage(0):
        out = model(batch())
    assert (len(rpn), len(roi)) == (0, 0) and torch.isfinite(out["loss_reviewkd"])

    model = build_model(distill_cfg(teacher_files, ["fitnet"], extra=["KD.TEACHER.CONFIG_FILE",
                                                                      dense_teachers["retinanet"][0],
                                                                      "KD.TEACHER.WEIGHTS",
                                                                      dense_teachers["retinanet"][1], *p3_p6])).train()
    assert type(model.teacher).__name__ == "RetinaNet"
    head = count_calls(model.teacher.head)
    with EventStorage(0):
        out = model(batch())
    assert len(head) == 0 and torch.isfinite(out["loss_fitnet"]) and "loss_cls" in out


def test_logit_losses_across_families_are_refused(dense_teachers, teacher_files):
    _error(r"^KD\.LOSSES sigmoid_kd read the teacher's anchor_logits_t, which DistillRetinaNet takes only from a "
           r"RetinaNet teacher, but KD\.TEACHER\.CONFIG_FILE .*teacher\.yaml is a GeneralizedRCNN; across detector "
           r"families only feature losses \(feats_t\) can be distilled\.$",
           "retinanet", teacher_files, ["sigmoid_kd"], ["KD.FEATURE_LEVELS", "['p3', 'p4', 'p5', 'p6']"])
    _error(r"^KD\.LOSSES sigmoid_kd read the teacher's anchor_logits_t, which DistillFCOS takes only from a FCOS "
           r"teacher, but KD\.TEACHER\.CONFIG_FILE .* is a RetinaNet;", "fcos", dense_teachers["retinanet"],
           ["sigmoid_kd"])
    with pytest.raises(ConfigError, match=r"^KD\.LOSSES kd, dkd read the teacher's logits_t, which DistillRCNN takes "
                                          r"only from a GeneralizedRCNN teacher, but KD\.TEACHER\.CONFIG_FILE .* is a "
                                          r"RetinaNet;"):
        build_model(distill_cfg(teacher_files, ["kd", "dkd", "fitnet"], extra=[
            "KD.TEACHER.CONFIG_FILE", dense_teachers["retinanet"][0], "KD.TEACHER.WEIGHTS",
            dense_teachers["retinanet"][1], "KD.FEATURE_LEVELS", "['p3', 'p4', 'p5', 'p6']"]))


def _variant(tmp_path, teacher, yaml, name="variant"):
    path = tmp_path / f"{name}.yaml"
    path.write_text(f'_BASE_: "{teacher[0]}"\nMODEL:\n{yaml}')
    return (str(path), teacher[1])


def test_dense_logit_losses_need_the_students_classes_anchors_and_levels(dense_teachers, tmp_path):
    """Checked only when a loss reads anchor_logits_t: feature losses still take such a teacher."""
    loose = ["KD.TEACHER.MIN_MATCHED_FRACTION", "0.0"]  # the head's shapes differ: let the weights load partly
    five = _variant(tmp_path, dense_teachers["retinanet"], "  RETINANET: {NUM_CLASSES: 5}\n")
    _error(r"^The teacher \(.*variant\.yaml\) has MODEL\.RETINANET\.NUM_CLASSES 5 but the student has 3, and "
           r"KD\.LOSSES sigmoid_kd read the teacher's head outputs \(anchor_logits_t\), which pair teacher and "
           r"student anchors one to one; use a teacher with the student's classes, anchors and levels, or distill "
           r"features only\.$", "retinanet", five, ["sigmoid_kd"], loose)
    build_model(dense_cfg("retinanet", five, ["fitnet"], loose))  # features only: fine
    three = _variant(tmp_path, dense_teachers["retinanet"], "  ANCHOR_GENERATOR: {ASPECT_RATIOS: [[1.0]]}\n")
    _error(r"^The teacher \(.*\) has anchors per location \(MODEL\.ANCHOR_GENERATOR\) \[3, 3, 3, 3, 3\] but the "
           r"student has \[9, 9, 9, 9, 9\], and KD\.LOSSES sigmoid_kd read", "retinanet", three, ["sigmoid_kd"], loose)
    four = _variant(tmp_path, dense_teachers["fcos"], "  FCOS: {IN_FEATURES: ['p3', 'p4', 'p5', 'p6']}\n", "four")
    _error(r"^The teacher \(.*\) has MODEL\.FCOS\.IN_FEATURES \['p3', 'p4', 'p5', 'p6'\] but the student has "
           r"\['p3', 'p4', 'p5', 'p6', 'p7'\]", "fcos", four, ["sigmoid_kd"], loose)


def test_dense_refusals_name_the_key(dense_teachers, teacher_files):
    rt = dense_teachers["retinanet"]
    _error(r"^MODEL\.MASK_ON True: DistillRetinaNet trains RetinaNet students, which have no mask head \(set "
           r"MODEL\.MASK_ON False, or distill a Mask R-CNN with DistillRCNN\)\.$", "retinanet", rt, ["fitnet"],
           ["MODEL.MASK_ON", "True"])
    _error(r"^MODEL\.KEYPOINT_ON True: DistillFCOS trains FCOS students, which have no keypoint head",
           "fcos", dense_teachers["fcos"], ["fitnet"], ["MODEL.KEYPOINT_ON", "True"])
    _error(r"^KD\.FEATURE_LEVELS names \['p2'\], which the backbone of the student config lacks \(it has p3, p4, p5, "
           r"p6, p7\)\.$", "retinanet", rt, ["reviewkd"], ["KD.FEATURE_LEVELS", "['p2', 'p3']"])
    _error(r"^KD\.TEACHER\.CLASS_MAP is \[0, 1, 2\] but DistillRetinaNet maps no teacher classes; dense logit losses "
           r"need a teacher of the student's classes \(remove the map\)\.$", "retinanet", rt, ["sigmoid_kd"],
           ["KD.TEACHER.CLASS_MAP", "[0, 1, 2]"])
    with pytest.raises(ConfigError, match=r"^KD\.LOSSES: sigmoid_kd needs anchor_logits_s, anchor_logits_t, "
                                          r"anchor_labels, which detection does not provide \(it provides logits_s, "):
        # an R-CNN student has no anchor logits
        build_model(distill_cfg(teacher_files, ["sigmoid_kd"]))


PLAIN_DENSE = (r"^KD\.LOSSES configures sigmoid_kd but MODEL\.META_ARCHITECTURE '{}' is not a distillation "
               r"meta-architecture, so nothing would be distilled; set it to one of DistillRCNN \(student "
               r"GeneralizedRCNN\), DistillRetinaNet \(student RetinaNet\), DistillFCOS \(student FCOS\), or remove "
               r"KD\.LOSSES for a plain run\.$")


@pytest.mark.parametrize("family", ["retinanet", "fcos"])
def test_losses_on_a_plain_dense_detector_are_refused(dense_teachers, family):
    """The silent-undistilled case for a one-stage config: KD.LOSSES with META_ARCHITECTURE RetinaNet / FCOS."""
    from kd_det.detection.engine import Trainer
    from kd_det.detection.modeling import check_distill_arch

    cfg = dense_cfg(family, dense_teachers[family], ["sigmoid_kd"], ["MODEL.META_ARCHITECTURE", STUDENT_ARCH[family]])
    with pytest.raises(ConfigError, match=PLAIN_DENSE.format(STUDENT_ARCH[family])):
        check_distill_arch(cfg)
    with pytest.raises(ConfigError, match=PLAIN_DENSE.format(STUDENT_ARCH[family])):
        Trainer(cfg)


def test_class_count_is_read_from_the_familys_key(tmp_path):
    """One helper says where a config's class count lives; the dataset check names that key."""
    from detectron2.data import MetadataCatalog
    from kd_det.config.detection import num_classes
    from kd_det.detection.data import DatasetError, check_num_classes

    configs = {"faster_rcnn_R_18_FPN_shapes.yaml": "MODEL.ROI_HEADS.NUM_CLASSES",
               "retinanet_R_18_FPN_shapes.yaml": "MODEL.RETINANET.NUM_CLASSES",
               "fcos_R_18_FPN_shapes.yaml": "MODEL.FCOS.NUM_CLASSES",
               "distill/dense/retinanet_sigmoid_kd.yaml": "MODEL.RETINANET.NUM_CLASSES",
               "distill/dense/fcos_sigmoid_kd.yaml": "MODEL.FCOS.NUM_CLASSES"}
    for name, key in configs.items():
        cfg = load_config(os.path.join(REPO, "configs/shapes", name), [key, "7"])
        assert num_classes(cfg) == (key, 7), name
    MetadataCatalog.get("dense_classes_test").set(thing_classes=["a", "b", "c"], json_file="x.json")
    cfg = load_config(os.path.join(REPO, "configs/shapes/retinanet_R_18_FPN_shapes.yaml"),
                      ["MODEL.ROI_HEADS.NUM_CLASSES", "3", "MODEL.RETINANET.NUM_CLASSES", "4"])
    with pytest.raises(DatasetError, match=r"^Dataset 'dense_classes_test' \(x\.json\) has 3 categories but "
                                           r"MODEL\.RETINANET\.NUM_CLASSES is 4; set it to 3"):
        check_num_classes(cfg, ["dense_classes_test"])


STOCK_FCOS = r"""
import sys, torch, yaml
import kd_det.compat; kd_det.compat.apply()  # Python-only Detectron2 shims; no kd_det model code below
assert "kd_det.detection.modeling" not in sys.modules
from detectron2.config import get_cfg
from detectron2.modeling import build_backbone
from detectron2.modeling.meta_arch.fcos import FCOS, FCOSHead
cfg = get_cfg(); cfg.set_new_allowed(True); cfg.merge_from_file(sys.argv[1]); f = cfg.MODEL.FCOS
backbone = build_backbone(cfg)
shapes = [backbone.output_shape()[k] for k in f.IN_FEATURES]
# "GN" as Detectron2's GroupNorm(32, C); its head's probe get_norm(norm, 1) needs GroupNorm(1, 1) on current torch
norm = (lambda c: torch.nn.GroupNorm(32 if c % 32 == 0 else 1, c)) if f.HEAD_NORM == "GN" else f.HEAD_NORM
head = FCOSHead(input_shape=shapes, conv_dims=[shapes[0].channels] * f.NUM_CONVS, num_classes=f.NUM_CLASSES,
                prior_prob=f.PRIOR_PROB, norm=norm)
model = FCOS(backbone=backbone, head=head, head_in_features=f.IN_FEATURES, num_classes=f.NUM_CLASSES,
             test_score_thresh=f.SCORE_THRESH_TEST, test_nms_thresh=f.NMS_THRESH_TEST,
             max_detections_per_image=cfg.TEST.DETECTIONS_PER_IMAGE, pixel_mean=cfg.MODEL.PIXEL_MEAN,
             pixel_std=cfg.MODEL.PIXEL_STD).eval()
model.load_state_dict(torch.load(sys.argv[2])["model"], strict=True)
x = torch.load(sys.argv[3])
with torch.no_grad():
    inst = model([{"image": x, "height": 128, "width": 160}])[0]["instances"]
torch.save({"boxes": inst.pred_boxes.tensor, "scores": inst.scores}, sys.argv[4])
"""


@pytest.mark.slow
@pytest.mark.parametrize("family", ["retinanet", "fcos"])
def test_export_student_loads_in_stock_detectron2(dense_teachers, family, tmp_path):
    """student_config gives the plain RetinaNet / FCOS config; the exported student runs in a fresh process with no
    kd_det model code (RetinaNet: stock build_model; FCOS, which Detectron2 0.6 builds from LazyConfig only: the stock
    FCOS / FCOSHead classes, strict load) and gives the distilled model's own detections."""
    from kd_det.detection.modeling import student_config

    extra = [f"MODEL.{STUDENT_ARCH[family].upper()}.SCORE_THRESH_TEST", "0.0"]
    cfg = dense_cfg(family, dense_teachers[family], ["sigmoid_kd", "reviewkd"], extra)
    assert student_config(cfg).MODEL.META_ARCHITECTURE == STUDENT_ARCH[family]
    model, dropped, exported_cfg, got, ref = export_and_run_in_stock(
        cfg, tmp_path, **({"script": STOCK_FCOS} if family == "fcos" else {}))
    assert dropped == len([k for k in model.state_dict() if k.startswith("distill.")]) > 0
    assert load_config(exported_cfg).MODEL.META_ARCHITECTURE == STUDENT_ARCH[family]
    assert len(ref) > 0
    torch.testing.assert_close(got["boxes"], ref.pred_boxes.tensor, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(got["scores"], ref.scores, rtol=1e-4, atol=1e-5)


SHAPES_DENSE_METHODS = [f"{family}_{m}" for family in ("retinanet", "fcos")
                        for m in ("reviewkd", "pkd", "cwd", "mgd", "fgd")] + [
                           f"retinanet_{m}" for m in ("fitnet", "fgfi", "msd")]


@pytest.fixture(scope="module")
def teachers_same_width(tmp_path_factory, teacher_writer):
    """Small RetinaNet / FCOS R-18 teachers with the small student's FPN width (PKD and CWD have no adapter)."""
    return {f: teacher_writer(tmp_path_factory.mktemp(f"{f}_teacher_32"), f"{REPO}/configs/shapes/{f}_R_18_FPN_shapes.yaml",
                              f"  FPN: {{OUT_CHANNELS: 32}}\n  {'RETINANET' if f == 'retinanet' else 'FCOS'}: {{NUM_CONVS: 1}}\n")
            for f in ("retinanet", "fcos")}


@pytest.mark.parametrize("name", SHAPES_DENSE_METHODS)
def test_shapes_dense_method_configs_step(teachers_same_width, name):
    """Each shapes RetinaNet / FCOS feature-distillation config, its own KD.LOSSES and levels, builds its wrapper and
    trains one step (small widths, random teacher): its loss is finite and reaches the student."""
    family = name.split("_", 1)[0]
    path = os.path.join(REPO, f"configs/shapes/distill/dense/{name}.yaml")
    own = load_config(path)
    cfg = load_config(path, ["KD.TEACHER.CONFIG_FILE", teachers_same_width[family][0],
                             "KD.TEACHER.WEIGHTS", teachers_same_width[family][1], *SMALL[family]])
    assert [s["name"] for s in cfg.KD.LOSSES] == [name.split("_", 1)[1]] and cfg.KD.LOSSES == own.KD.LOSSES
    assert set(cfg.KD.FEATURE_LEVELS) <= set(LEVELS)
    model = build_model(cfg).train()
    assert type(model).__name__ == f"Distill{STUDENT_ARCH[family]}"
    with EventStorage(cfg.KD.LOSSES[0].get("start_iter", 0)):  # FGFI imitates from its start_iter on
        out = model(batch())
    tag = cfg.KD.LOSSES[0]["tag"]
    assert set(out) == OWN_LOSSES[family] | {f"loss_{tag}"}
    assert all(torch.isfinite(v) for v in out.values()) and out[f"loss_{tag}"] > 0
    out[f"loss_{tag}"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.parameters())
