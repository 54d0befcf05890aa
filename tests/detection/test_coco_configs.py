"""Every COCO distillation config (one per paper-table row; Mask R-CNN pairs too) builds and runs one step on a tiny
input."""
import glob
import os

import pytest
import torch

import kd_det  # noqa: F401
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances, PolygonMasks
from detectron2.utils.events import EventStorage

from kd_det.config.detection import load_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = sorted(p for p in glob.glob(os.path.join(REPO, "configs/COCO-*/distill/*/*.yaml"))
                 if not os.path.basename(p).startswith("Base-"))
CPU = ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""]


@pytest.fixture(scope="module")
def teacher_weights(tmp_path_factory):
    """Random-init weights files for every teacher config the rows name (Faster / Mask R-CNN R-50 / R-101)."""
    d, out = tmp_path_factory.mktemp("teachers"), {}
    for i, cfg_file in enumerate(sorted({os.path.join(REPO, load_config(p).KD.TEACHER.CONFIG_FILE) for p in CONFIGS})):
        DetectionCheckpointer(build_model(load_config(cfg_file, CPU)), save_dir=str(d)).save(f"t{i}")
        out[cfg_file] = str(d / f"t{i}.pth")
    return out


def test_every_paper_row_has_a_config():
    import csv

    with open(os.path.join(REPO, "kd_det/data/paper_results.csv")) as f:
        rows = {(r["teacher"], r["student"], r["method"]) for r in csv.DictReader(f) if r["task"] == "detection"}
    have = set()
    for path in CONFIGS:
        cfg = load_config(path)
        have.add((cfg.KD.LABEL.TEACHER, cfg.KD.LABEL.STUDENT, cfg.KD.LABEL.METHOD))
    missing = sorted(r for r in rows if r[2] != "teacher" and r not in have)
    assert not missing, missing


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: os.path.relpath(p, os.path.join(REPO, "configs")))
def test_config_builds_and_steps(path, teacher_weights):
    probe = load_config(path)
    teacher = os.path.join(REPO, probe.KD.TEACHER.CONFIG_FILE)
    cfg = load_config(path, CPU + ["KD.TEACHER.WEIGHTS", teacher_weights[teacher],
                                   "MODEL.RPN.POST_NMS_TOPK_TRAIN", "32", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "16"])
    assert cfg.SOLVER.MAX_ITER == 180000 and cfg.SOLVER.IMS_PER_BATCH == 8
    model = build_model(cfg).train()
    inst = Instances((128, 128))
    inst.gt_boxes, inst.gt_classes = Boxes(torch.tensor([[4.0, 6.0, 70.0, 90.0]])), torch.tensor([3])
    inst.gt_masks = PolygonMasks([[[4.0, 90.0, 37.0, 6.0, 70.0, 90.0]]])  # read by the Mask R-CNN rows only
    with EventStorage():  # 2 images: the ABF BatchNorms of ReviewKD need more than one value on p6
        losses = model([{"image": torch.rand(3, 128, 128) * 255, "instances": inst}] * 2)
    for name in [spec["tag"] for spec in cfg.KD.LOSSES] + (["mask"] if cfg.MODEL.MASK_ON else []):
        assert torch.isfinite(losses[f"loss_{name}"]), name


@pytest.mark.parametrize("pair", ["R101-R18", "R101-R50", "R50-MV2"])
def test_fgfi_rows_follow_the_authors_code(pair):
    """twangnh/Distilling-Object-Detectors trainval_net_sup.py: imitation weight 0.01, no imitation for the first
    400 iterations at batch 1 (= 400 images = 50 iterations at batch 8), adapter init std 1e-4."""
    cfg = load_config(os.path.join(REPO, f"configs/COCO-Detection/distill/{pair}/fgfi.yaml"))
    (spec,) = cfg.KD.LOSSES
    assert [spec["name"]] == ["fgfi"] and [spec["weight"]] == [0.01]
    assert [spec["start_iter"]] == [50] and 50 * cfg.SOLVER.IMS_PER_BATCH == 400 * 1
    assert spec["params"]["adapter_std"] == 1e-4 and spec["params"]["psi"] == 0.5


def test_mv2_fpn_trains_every_backbone_stage():
    """FREEZE_AT 0 as mdistiller detection/configs/DKD/DKD-MV2-R50.yaml and ReviewKD
    Detection/configs/ReviewKD-MV2-R50.yaml: no MobileNetV2 weight is frozen (BN stays FrozenBN)."""
    cfg = load_config(os.path.join(REPO, "configs/COCO-Detection/faster_rcnn_MV2_FPN_1x.yaml"), CPU)
    assert cfg.MODEL.BACKBONE.FREEZE_AT == 0
    bottom_up = build_model(cfg).backbone.bottom_up
    frozen = [n for n, p in bottom_up.named_parameters() if not p.requires_grad]
    assert not frozen and any(True for _ in bottom_up.parameters())


def test_retinanet_pair_follows_reviewkd():
    """RT101 -> RT50 as dvlab-research/ReviewKD Detection/configs/ReviewKD-RT50-RT101.yaml: R-50 RetinaNet student,
    R-101 RetinaNet teacher, Detectron2's Base-RetinaNet anchors, IoU thresholds [0.4, 0.5], lr 0.005, levels p3-p7."""
    cfg = load_config(os.path.join(REPO, "configs/COCO-Detection/distill/RT101-RT50/reviewkd.yaml"))
    teacher = load_config(os.path.join(REPO, cfg.KD.TEACHER.CONFIG_FILE))
    sizes = [[x, x * 2 ** (1.0 / 3), x * 2 ** (2.0 / 3)] for x in [32, 64, 128, 256, 512]]  # Base-RetinaNet.yaml's eval
    for c, depth in ((cfg, 50), (teacher, 101)):
        assert c.MODEL.RESNETS.DEPTH == depth and [list(s) for s in c.MODEL.ANCHOR_GENERATOR.SIZES] == sizes
        assert list(c.MODEL.RETINANET.IOU_THRESHOLDS) == [0.4, 0.5] and list(c.MODEL.RETINANET.IOU_LABELS) == [0, -1, 1]
    assert cfg.MODEL.META_ARCHITECTURE == "DistillRetinaNet" and teacher.MODEL.META_ARCHITECTURE == "RetinaNet"
    assert cfg.SOLVER.BASE_LR == 0.005 and tuple(cfg.SOLVER.STEPS) == (120000, 160000)
    assert list(cfg.KD.FEATURE_LEVELS) == ["p3", "p4", "p5", "p6", "p7"]
    assert [(s["name"], s["weight"]) for s in cfg.KD.LOSSES] == [("reviewkd", 1.0)]
