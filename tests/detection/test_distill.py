"""DistillRCNN: structure of a training step, frozen teacher, student-only inference, bad input."""
import os

import pytest
import torch

import kd_det  # noqa: F401
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from kd_det.config.detection import load_config
from kd_det.errors import ConfigError, UserError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMALL = ["MODEL.FPN.OUT_CHANNELS", "32", "MODEL.ROI_BOX_HEAD.FC_DIM", "64", "MODEL.RPN.POST_NMS_TOPK_TRAIN", "64",
         "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "16"]


def distill_cfg(teacher_files, losses, weights=None, extra=(), base="configs/shapes/faster_rcnn_R_18_FPN_shapes.yaml"):
    """``base`` with KD.LOSSES ``losses`` (names) and ``weights``; a loss ``base`` configures keeps its params."""
    cfg_file, weights_file = teacher_files
    kept = {spec["tag"]: spec for spec in load_config(os.path.join(REPO, base)).KD.LOSSES}
    specs = [dict(kept.get(n, {"name": n}), weight=w) for n, w in zip(losses, weights or [1.0] * len(losses))]
    opts = ["MODEL.META_ARCHITECTURE", "DistillRCNN", "KD.TEACHER.CONFIG_FILE", cfg_file,
            "KD.TEACHER.WEIGHTS", weights_file, "KD.LOSSES", str(specs), *SMALL, *extra]
    return load_config(os.path.join(REPO, base), opts)


def batch(n=2):
    g = torch.Generator().manual_seed(1)
    out = []
    for i in range(n):
        inst = Instances((128, 160))
        inst.gt_boxes = Boxes(torch.tensor([[10.0, 12.0, 60.0, 70.0], [80.0, 20.0, 120.0, 50.0]]))
        inst.gt_classes = torch.tensor([0, 2])
        out.append({"image": torch.randint(0, 255, (3, 128, 160), generator=g).float(), "height": 128,
                    "width": 160, "image_id": i, "instances": inst})
    return out


def step_seeing(model, loss, data=None):
    """One training step of ``model`` on ``data`` (default :func:`batch`); returns (loss dict, the keyword inputs
    the distillation loss tagged ``loss`` was called with)."""
    seen = {}
    hook = model.distill.losses[loss].register_forward_pre_hook(lambda m, a, kw: seen.update(kw) and None,
                                                                with_kwargs=True)
    with EventStorage(0):
        out = model(batch() if data is None else data)
    hook.remove()
    return out, seen


def count_calls(module):
    calls = []
    module.register_forward_hook(lambda *a: calls.append(1))
    return calls


@pytest.mark.parametrize("losses", [["dcd", "kd"], ["ckd", "reviewkd"], ["dkd"], ["kd", "fitnet"], ["fgfi"], ["msd"]])
def test_one_step_structure(teacher_files, losses):
    base = {"dcd": "configs/shapes/distill/dcd.yaml", "msd": "configs/shapes/distill/msd.yaml"}.get(
        losses[0], "configs/shapes/faster_rcnn_R_18_FPN_shapes.yaml")
    model = build_model(distill_cfg(teacher_files, losses, base=base))
    model.train()
    assert not model.teacher.training  # eval() whatever train() is called on the wrapper
    s_calls, t_calls = count_calls(model.roi_heads.box_head), count_calls(model.teacher.roi_heads.box_head)
    t_rpn = count_calls(model.teacher.proposal_generator)
    with EventStorage():
        out = model(batch())
    box_head_t = int(bool({"dcd", "kd", "ckd", "dkd"} & set(losses)))  # only a logit / embedding loss needs it
    assert (len(s_calls), len(t_calls), len(t_rpn)) == (1, box_head_t, 0)
    for name in losses:
        assert torch.isfinite(out[f"loss_{name}"]), name
    assert {"loss_cls", "loss_box_reg", "loss_rpn_cls", "loss_rpn_loc"} <= set(out)
    sum(out.values()).backward()
    assert all(p.grad is None and not p.requires_grad for p in model.teacher.parameters())
    assert any(p.grad is not None for p in model.backbone.parameters())
    assert not any(k.startswith("teacher") for k in model.state_dict())  # teacher reloads from its own file
    if list(model.distill.parameters()):
        assert any(p.grad is not None for p in model.distill.parameters())


@pytest.mark.parametrize("losses, backbone_t, box_head_t, predictor_t", [
    (["dkd"], 1, 1, 1),                # logits_t: the whole teacher path
    (["dcd"], 1, 1, 0),                # DCD on the box-head features (emb_t): no teacher predictor
    (["reviewkd"], 1, 0, 0),           # FPN levels only: no teacher box head
    (["dkd", "reviewkd"], 1, 1, 1),
    ([], 0, 0, 0),                     # no loss takes a teacher tensor: the teacher never runs
])
def test_teacher_runs_only_what_the_losses_consume(teacher_files, losses, backbone_t, box_head_t, predictor_t):
    """Decided once at build from the losses' inputs; the student's box head runs once per step regardless."""
    model = build_model(distill_cfg(teacher_files, losses)).train()
    t = model.teacher
    calls = {"student box head": count_calls(model.roi_heads.box_head), "teacher backbone": count_calls(t.backbone),
             "teacher box pooler": count_calls(t.roi_heads.box_pooler),
             "teacher box head": count_calls(t.roi_heads.box_head),
             "teacher box predictor": count_calls(t.roi_heads.box_predictor)}
    for _ in range(2):
        with EventStorage():
            out = model(batch())
    assert {k: len(v) for k, v in calls.items()} == {
        "student box head": 2, "teacher backbone": 2 * backbone_t, "teacher box pooler": 2 * box_head_t,
        "teacher box head": 2 * box_head_t, "teacher box predictor": 2 * predictor_t}
    assert all(torch.isfinite(out[f"loss_{name}"]) for name in losses)


def test_built_from_explicit_arguments(teacher_files):
    """@configurable: DistillRCNN(cfg), or DistillRCNN(teacher=..., distill=..., ...) for code building its parts."""
    from kd_det.losses import DistillLoss
    from kd_det.detection.modeling.distill_rcnn import DistillRCNN

    args = DistillRCNN.from_config(distill_cfg(teacher_files, ["dkd"]))
    distill = DistillLoss([{"name": "kd", "weight": 0.5}])            # replaces the config's dkd
    model = DistillRCNN(**dict(args, distill=distill, feature_levels=["p3"])).train()
    assert model.distill is distill and model.teacher is args["teacher"] and model.feature_levels == ["p3"]
    assert model.teacher_parts == ("backbone", "box_head", "box_predictor")
    with EventStorage():
        out = model(batch())
    assert set(out) >= {"loss_kd", "loss_cls"} and torch.isfinite(out["loss_kd"])


def test_a_loss_needing_what_detection_does_not_provide_is_refused_at_build(teacher_files):
    """One sentence at build time, not a ValueError at the first step: from the loss class (CRD's index) before
    any parameter error, and from the built loss (MSD's cell labels need the teacher classifier)."""
    from kd_det.detection.modeling.distill_rcnn import DistillRCNN

    provides = ", ".join(k for k in ("logits_s", "logits_t", "target", "emb_s", "emb_t", "feats_s", "feats_t",
                                     "anchors", "gt_boxes", "object_id"))
    assert set(DistillRCNN.PROVIDED_INPUTS) == set(provides.split(", "))
    _error(teacher_files, rf"^KD\.LOSSES: crd needs index, which detection does not provide \(it provides "
                          rf"{provides}\)\.$", losses=["crd"])
    _error(teacher_files, r"^KD\.LOSSES: msd needs teacher_classifier, which detection does not provide \(it "
                          r"provides logits_s, .*, object_id\)\.$", losses=["msd"])
    _error(teacher_files, r"^KD\.LOSSES: kd needs stage_feats_s \(as its logits_s\), which detection does not "
                          r"provide", extra=["KD.LOSSES.kd.inputs.logits_s", "stage_feats_s"])


@pytest.mark.parametrize("losses", [["dcd", "kd"], ["ckd", "reviewkd"], ["dkd"]])
def test_bf16_autocast_on_cpu(teacher_files, losses):
    """SOLVER.AMP.ENABLED on CPU = bfloat16 autocast: the networks run in bf16, every loss in float32."""
    base = "configs/shapes/distill/dcd.yaml" if losses[0] == "dcd" else "configs/shapes/faster_rcnn_R_18_FPN_shapes.yaml"
    model = build_model(distill_cfg(teacher_files, losses, base=base)).train()
    dtypes = {}
    model.roi_heads.box_predictor.register_forward_hook(lambda m, i, o: dtypes.update(s=o[0].dtype) and None)
    model.teacher.roi_heads.box_predictor.register_forward_hook(lambda m, i, o: dtypes.update(t=o[0].dtype) and None)
    with EventStorage(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(batch())
    assert dtypes == {"s": torch.bfloat16, "t": torch.bfloat16}  # autocast really was on
    for name in losses:
        assert out[f"loss_{name}"].dtype == torch.float32 and torch.isfinite(out[f"loss_{name}"]), name
    sum(out.values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("precision, channels_last, student_amp, teacher_dtype", [
    ("bfloat16", True, False, torch.bfloat16),   # the teacher alone in bf16, NHWC; the student float32
    ("float32", False, True, torch.float32),     # the teacher kept in float32 under the student's bf16 autocast
    ("", False, True, torch.bfloat16),           # default: the teacher follows the student's autocast
])
def test_teacher_precision_and_memory_format(teacher_files, precision, channels_last, student_amp, teacher_dtype):
    """KD.TEACHER.PRECISION / CHANNELS_LAST change how the teacher runs, not what the losses receive (float32)."""
    extra = ["KD.TEACHER.PRECISION", precision, "KD.TEACHER.CHANNELS_LAST", str(channels_last)]
    model = build_model(distill_cfg(teacher_files, ["dkd", "reviewkd"], extra=extra)).train()
    conv = model.teacher.backbone.bottom_up.stem.conv1.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) == channels_last
    seen = {}
    model.teacher.roi_heads.box_predictor.register_forward_hook(lambda m, i, o: seen.update(t=o[0].dtype) and None)
    model.distill.losses["dkd"].register_forward_pre_hook(
        lambda m, a, kw: seen.update(loss_in=kw["logits_t"].dtype) and None, with_kwargs=True)
    with EventStorage(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=student_amp):
        out = model(batch())
    assert seen["t"] == teacher_dtype
    assert seen["loss_in"] == (torch.bfloat16 if teacher_dtype == torch.bfloat16 and not precision else torch.float32)
    assert all(torch.isfinite(out[f"loss_{n}"]) for n in ("dkd", "reviewkd"))
    sum(out.values()).backward()
    assert all(p.grad is None for p in model.teacher.parameters())


def test_teacher_precision_float32_changes_nothing_without_amp(teacher_files):
    """Without SOLVER.AMP, "float32" and the default "" are the same computation, bit for bit."""
    losses = []
    for precision in ("", "float32"):
        torch.manual_seed(0)
        model = build_model(distill_cfg(teacher_files, ["dkd"], extra=["KD.TEACHER.PRECISION", precision])).train()
        with EventStorage():
            losses.append({k: v.item() for k, v in model(batch()).items()})
    assert losses[0] == losses[1]


def test_teacher_precision_errors_name_the_key(teacher_files):
    _error(teacher_files, r"^KD\.TEACHER\.PRECISION is 'half'; use \"float32\", \"bfloat16\", \"float16\" or \"\" ",
           extra=["KD.TEACHER.PRECISION", "half"])
    _error(teacher_files, r"^KD\.TEACHER\.PRECISION is 'float16' but the teacher runs on the CPU",
           extra=["KD.TEACHER.PRECISION", "float16"])


def test_teacher_sees_student_rois(teacher_files):
    """The teacher's box head pools exactly the student's sampled proposals."""
    model = build_model(distill_cfg(teacher_files, ["kd"])).train()
    seen = {}
    model.roi_heads.box_pooler.register_forward_hook(lambda m, i, o: seen.update(s=i[1]) and None)
    model.teacher.roi_heads.box_pooler.register_forward_hook(lambda m, i, o: seen.update(t=i[1]) and None)
    with EventStorage():
        model(batch())
    assert len(seen["s"]) == 2
    for bs, bt in zip(seen["s"], seen["t"]):
        assert torch.equal(bs.tensor, bt.tensor)


def test_inference_is_the_students(teacher_files, tmp_path):
    cfg = distill_cfg(teacher_files, ["ckd", "reviewkd"])
    model = build_model(cfg).eval()
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save("distilled")
    plain_cfg = cfg.clone()
    plain_cfg.defrost()
    plain_cfg.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
    plain = build_model(plain_cfg).eval()
    DetectionCheckpointer(plain).load(str(tmp_path / "distilled.pth"))
    inputs = [{k: v for k, v in x.items() if k != "instances"} for x in batch(1)]
    with torch.no_grad():
        a, b = model(inputs)[0]["instances"], plain(inputs)[0]["instances"]
    assert torch.equal(a.pred_boxes.tensor, b.pred_boxes.tensor) and torch.equal(a.scores, b.scores)


def _error(teacher_files, match, losses=("kd",), extra=()):
    with pytest.raises(UserError, match=match):
        build_model(distill_cfg(teacher_files, list(losses), extra=list(extra)))


def test_bad_teacher_inputs(teacher_files, tmp_path):
    cfg_file, weights = teacher_files
    _error(teacher_files, r"KD\.TEACHER\.CONFIG_FILE .*nope\.yaml does not exist",
           extra=["KD.TEACHER.CONFIG_FILE", str(tmp_path / "nope.yaml")])
    _error(teacher_files, r"KD\.TEACHER\.WEIGHTS .*nope\.pth does not exist",
           extra=["KD.TEACHER.WEIGHTS", str(tmp_path / "nope.pth")])
    broken = tmp_path / "broken.pth"
    broken.write_bytes(open(weights, "rb").read()[:1000])
    _error(teacher_files, r"KD\.TEACHER\.WEIGHTS .*broken\.pth is truncated or not a torch checkpoint",
           extra=["KD.TEACHER.WEIGHTS", str(broken)])
    other = tmp_path / "other.yaml"
    other.write_text(f'_BASE_: "{cfg_file}"\nMODEL:\n  ROI_HEADS: {{NUM_CLASSES: 5}}\n')
    _error(teacher_files, r"NUM_CLASSES 5 but the student has 3", extra=["KD.TEACHER.CONFIG_FILE", str(other)])
    wider = tmp_path / "wider.yaml"
    wider.write_text(f'_BASE_: "{cfg_file}"\nMODEL:\n  FPN: {{OUT_CHANNELS: 64}}\n')
    _error(teacher_files, r"matches only \d+% of the teacher's", extra=["KD.TEACHER.CONFIG_FILE", str(wider)])


def test_bad_loss_inputs(teacher_files):
    _error(teacher_files, r"Unknown loss 'nope'; known losses: (\w+, )*dcd, ", losses=["nope"])
    _error(teacher_files, r"KD\.FEATURE_LEVELS names \['p7'\]", losses=["reviewkd"],
           extra=["KD.FEATURE_LEVELS", "['p5', 'p7']"])
    _error(teacher_files, r"KD\.LOSS_WEIGHTS belongs to the old detection form of KD\.LOSSES, removed in kd_det 0\.2",
           losses=["kd", "dkd"], extra=["KD.LOSS_WEIGHTS", "[1.0]"])  # the old form: refused, with the migration tool


STOCK_LOAD = r"""
import sys, json, torch
import kd_det.compat; kd_det.compat.apply()  # Python-only Detectron2 shims; no kd_det model code below
assert "kd_det.detection.modeling" not in sys.modules
from detectron2.config import get_cfg
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model
cfg = get_cfg(); cfg.merge_from_file(sys.argv[1])
model = build_model(cfg).eval(); DetectionCheckpointer(model).load(sys.argv[2])
x = torch.load(sys.argv[3])
with torch.no_grad():
    inst = model([{"image": x, "height": 128, "width": 160}])[0]["instances"]
torch.save({"boxes": inst.pred_boxes.tensor, "scores": inst.scores,
            **({"masks": inst.pred_masks} if inst.has("pred_masks") else {})}, sys.argv[4])
"""


def export_and_run_in_stock(cfg, tmp_path, script=STOCK_LOAD):
    """Build ``cfg`` (seeded), save it, export the student, and run the export on one image in a fresh process with
    stock Detectron2 (``script``: argv config, weights, image, output). Returns (the model, the dropped tensor count, the exported config path, the stock process's
    {"boxes", "scores"[, "masks"]}, the model's own Instances on that image)."""
    import subprocess
    import sys

    from kd_det.detection.modeling.export import export_student

    torch.manual_seed(3)  # the subprocess builds its own random init: only a correct load reproduces ours
    model = build_model(cfg)
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save("distilled")
    cfg_file = tmp_path / "distill.yaml"
    cfg_file.write_text(cfg.dump())
    out = export_student(str(cfg_file), str(tmp_path / "distilled.pth"), str(tmp_path / "out"))
    ckpt, exported_cfg, dropped = out["checkpoint"], out["config"], out["dropped"]
    image = batch(1)[0]["image"]
    torch.save(image, tmp_path / "x.pt")
    r = subprocess.run([sys.executable, "-c", script, exported_cfg, ckpt, str(tmp_path / "x.pt"),
                        str(tmp_path / "y.pt")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    model.eval()
    with torch.no_grad():
        ref = model([{"image": image, "height": 128, "width": 160}])[0]["instances"]
    return model, dropped, exported_cfg, torch.load(tmp_path / "y.pt"), ref


def test_export_student_loads_in_stock_detectron2(teacher_files, tmp_path):
    cfg = distill_cfg(teacher_files, ["dcd", "kd", "reviewkd"], base="configs/shapes/distill/dcd.yaml",
                      extra=["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"])
    model, dropped, _, got, ref = export_and_run_in_stock(cfg, tmp_path)
    assert dropped == len([k for k in model.state_dict() if k.startswith("distill.")]) > 0
    assert len(ref) > 0
    # same detections up to float rounding (the two processes may split BLAS work differently)
    torch.testing.assert_close(got["boxes"], ref.pred_boxes.tensor, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(got["scores"], ref.scores, rtol=1e-4, atol=1e-5)


def test_checkpoint_records_teacher_and_refuses_another(teacher_files, tmp_path):
    from kd_det.detection.engine.checkpoint import KDCheckpointer

    cfg_file, weights = teacher_files
    model = build_model(distill_cfg(teacher_files, ["kd"]))
    KDCheckpointer(model, save_dir=str(tmp_path)).save("model_0000009")
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000009.pth"
    assert not list(tmp_path.glob("*.tmp"))  # written to a temporary name, then renamed
    saved = torch.load(tmp_path / "model_0000009.pth", weights_only=True)
    assert saved["teacher"]["sha256"] == model.teacher_identity["sha256"]
    KDCheckpointer(model, save_dir=str(tmp_path)).resume_or_load("", resume=True)  # same teacher: fine

    other = tmp_path / "other_teacher.pth"
    data = torch.load(weights, weights_only=True)
    data["model"] = {k: v + 1e-3 if v.is_floating_point() else v for k, v in data["model"].items()}
    torch.save(data, other)
    model2 = build_model(distill_cfg(teacher_files, ["kd"], extra=["KD.TEACHER.WEIGHTS", str(other)]))
    with pytest.raises(ConfigError, match=r"was trained with teacher weights .* resume with the same teacher"):
        KDCheckpointer(model2, save_dir=str(tmp_path)).resume_or_load("", resume=True)
    (tmp_path / "model_0000009.pth").write_bytes(b"truncated")
    with pytest.raises(UserError, match=r"Checkpoint .*model_0000009\.pth is truncated or not a torch checkpoint"):
        KDCheckpointer(model, save_dir=str(tmp_path)).resume_or_load("", resume=True)


def test_object_id_is_the_matched_gt_box(teacher_files):
    """DCD / CKD get object_id: the GT box each sampled RoI was matched to (unique over the batch), -1 = background."""
    from detectron2.structures import pairwise_iou

    cfg = distill_cfg(teacher_files, ["ckd"], extra=["KD.LOSSES.ckd.params.same_object", "exclude"])
    model = build_model(cfg).train()
    seen = {}
    model.distill.losses["ckd"].register_forward_pre_hook(lambda m, a, kw: seen.update(kw) and None, with_kwargs=True)
    model.roi_heads.box_pooler.register_forward_hook(lambda m, i, o: seen.update(boxes=i[1]) and None)
    data = batch()
    with EventStorage():
        model(data)
    ids, offset = seen["object_id"], 0
    assert ids.shape == (sum(len(b) for b in seen["boxes"]),) and ids.dtype == torch.int64
    for boxes, x in zip(seen["boxes"], data):
        part, ids = ids[:len(boxes)], ids[len(boxes):]
        gt = x["instances"].gt_boxes
        iou = pairwise_iou(boxes, gt)                                          # (R_i, G_i)
        fg = iou.max(dim=1).values >= 0.5                                      # ROI_HEADS.IOU_THRESHOLDS [0.5]
        assert torch.equal(part >= 0, fg)
        assert torch.equal(part[fg], iou[fg].argmax(dim=1) + offset)
        offset += len(gt)
    assert offset == 4 and (seen["object_id"] >= 0).any()


def test_loss_start_iters_delay_a_term_until_its_iteration(teacher_files):
    """A KD.LOSSES entry's start_iter: the term is 0 before its iteration (EventStorage.iter), weighted from it on."""
    cfg = distill_cfg(teacher_files, ["fitnet", "kd"], [0.5, 1.0], extra=["KD.LOSSES.fitnet.start_iter", "3"])
    model = build_model(cfg).train()
    assert model.distill.start_iters == {"fitnet": 3, "kd": 0}
    values = {}
    for it in (0, 2, 3):
        torch.manual_seed(0)
        with EventStorage(it):
            out = model(batch())
        values[it] = (out["loss_fitnet"].item(), out["loss_kd"].item())
        if it == 0:
            out["loss_fitnet"].backward()
            assert all(p.grad is not None and p.grad.abs().sum() == 0 for p in model.distill.losses["fitnet"].parameters())
            model.zero_grad()
    assert values[0][0] == 0.0 and values[2][0] == 0.0 and values[3][0] > 0
    assert values[0][1] > 0 and values[0][1] == pytest.approx(values[3][1])  # kd is not delayed
    torch.manual_seed(0)
    with EventStorage(3):  # from its start the term equals the undelayed weighted term
        plain = build_model(distill_cfg(teacher_files, ["fitnet", "kd"], [0.5, 1.0]))
        plain.load_state_dict(model.state_dict())
        assert plain.train()(batch())["loss_fitnet"].item() == pytest.approx(values[3][0], rel=1e-5)


def test_bad_loss_start_iters(teacher_files):
    _error(teacher_files, r"KD\.LOSS_START_ITERS belongs to the old detection form of KD\.LOSSES", losses=["kd", "dkd"],
           extra=["KD.LOSS_START_ITERS", "[5]"])  # the old form: refused
    _error(teacher_files, r"^KD\.LOSSES: kd: spec key 'start_iter' must be an int >= 0 \(the first training iteration "
                          r"the term counts\), got -1\.$", extra=["KD.LOSSES.kd.start_iter", "-1"])
    _error(teacher_files, r"^KD\.LOSSES: kd: spec key 'start_iter' must be an int >= 0 \(the first training iteration "
                          r"the term counts\), got 2\.5\.$", extra=["KD.LOSSES.kd.start_iter", "2.5"])


# -- the contract: a wrapper says what it wraps; nothing trains undistilled ----------------------------------------

PLAIN_REFUSAL = (r"^KD\.LOSSES configures kd but MODEL\.META_ARCHITECTURE 'GeneralizedRCNN' is not a distillation "
                 r"meta-architecture, so nothing would be distilled; set it to one of DistillRCNN \(student "
                 r"GeneralizedRCNN\), DistillRetinaNet \(student RetinaNet\), DistillFCOS \(student FCOS\), or remove "
                 r"KD\.LOSSES for a plain run\.$")


def test_losses_on_a_plain_meta_architecture_are_refused(teacher_files):
    """The wrong row that looks right: KD.LOSSES on a plain detector would train undistilled and be reported by its
    losses ("KD"). Refused at setup (train_net.py, sweep.py) and by the Trainer itself."""
    from kd_det.detection.engine import Trainer
    from kd_det.detection.modeling import check_distill_arch

    cfg = distill_cfg(teacher_files, ["kd"], extra=["MODEL.META_ARCHITECTURE", "GeneralizedRCNN"])
    assert cfg.KD.LABEL.METHOD == "KD"
    with pytest.raises(ConfigError, match=PLAIN_REFUSAL):
        check_distill_arch(cfg)
    with pytest.raises(ConfigError, match=PLAIN_REFUSAL):
        Trainer(cfg)
    check_distill_arch(distill_cfg(teacher_files, ["kd"]))  # the wrapper: fine
    plain = load_config(os.path.join(REPO, "configs/shapes/faster_rcnn_R_18_FPN_shapes.yaml"))
    check_distill_arch(plain)  # no losses: a plain run


def test_student_config_swaps_to_the_wrappers_student_arch(teacher_files):
    from kd_det.detection.modeling import DISTILL_ARCHS, DistillRCNN, student_config

    assert DISTILL_ARCHS["DistillRCNN"] is DistillRCNN and DistillRCNN.STUDENT_ARCH == "GeneralizedRCNN"
    cfg = distill_cfg(teacher_files, ["kd"])
    cfg.freeze()
    student = student_config(cfg)
    assert student.MODEL.META_ARCHITECTURE == "GeneralizedRCNN" and student.is_frozen()
    assert cfg.MODEL.META_ARCHITECTURE == "DistillRCNN"


def _cascade_teacher(teacher_files, tmp_path):
    cfg_file, _ = teacher_files
    path = tmp_path / "cascade_teacher.yaml"
    path.write_text(f'_BASE_: "{cfg_file}"\nMODEL:\n  ROI_HEADS: {{NAME: CascadeROIHeads}}\n'
                    '  ROI_BOX_HEAD: {CLS_AGNOSTIC_BBOX_REG: True}\n')
    return ["KD.TEACHER.CONFIG_FILE", str(path), "KD.TEACHER.MIN_MATCHED_FRACTION", "0.0"]


def test_cascade_and_c4_heads_are_refused_where_a_loss_reads_them(teacher_files, tmp_path):
    """Cascade R-CNN holds one box head per stage, C4 none: one sentence (no AttributeError), on either side; a
    Cascade teacher still serves feature losses, which read only its backbone."""
    _error(teacher_files, r"^The student \(MODEL\.ROI_HEADS\.NAME CascadeROIHeads\) has ROI heads CascadeROIHeads; "
                          r"DistillRCNN reads a StandardROIHeads-style head with one box head",
           extra=["MODEL.ROI_HEADS.NAME", "CascadeROIHeads", "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG", "True"])
    _error(teacher_files, r"^The teacher has ROI heads CascadeROIHeads; DistillRCNN reads a StandardROIHeads-style",
           extra=_cascade_teacher(teacher_files, tmp_path))
    model = build_model(distill_cfg(teacher_files, ["fitnet"], extra=_cascade_teacher(teacher_files, tmp_path)))
    assert model.teacher_parts == ("backbone",)
    with EventStorage(0):
        assert model.train()(batch())["loss_fitnet"].item() > 0
