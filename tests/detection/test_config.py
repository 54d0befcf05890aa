import glob
import os

import pytest

import kd_det  # noqa: F401
from kd_det.config.detection import get_cfg
from kd_det.config.detection import load_config
from kd_det.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DET_CONFIGS = sorted(
    p for p in glob.glob(os.path.join(REPO, "configs", "**", "*.yaml"), recursive=True)
    if "classification" not in p and not os.path.basename(p).startswith("Base-"))


def test_project_keys_have_defaults():
    cfg = get_cfg()
    assert cfg.TEST.EVAL_BACKEND == "faster_coco_eval"
    assert cfg.DATASETS.COCO_FORMAT == []


@pytest.mark.parametrize("path", DET_CONFIGS, ids=lambda p: os.path.relpath(p, REPO))
def test_every_detection_config_loads(path):
    cfg = load_config(path)
    assert cfg.MODEL.BACKBONE.NAME.endswith("fpn_backbone")
    if "RetinaNet" in cfg.MODEL.META_ARCHITECTURE:  # RetinaNet / DistillRetinaNet: Base-RetinaNet.yaml
        assert list(cfg.MODEL.RETINANET.IN_FEATURES) == ["p3", "p4", "p5", "p6", "p7"]
    else:
        assert list(cfg.MODEL.RPN.IN_FEATURES) == ["p2", "p3", "p4", "p5", "p6"]  # from Base-RCNN-FPN.yaml


def test_base_inheritance_and_overrides():
    cfg = load_config(os.path.join(REPO, "configs/shapes/faster_rcnn_R_18_FPN_shapes.yaml"),
                      ["SOLVER.MAX_ITER", "7"])
    assert cfg.MODEL.RESNETS.DEPTH == 18 and cfg.MODEL.RESNETS.RES2_OUT_CHANNELS == 64  # the file itself
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 3  # Base-Shapes.yaml
    assert cfg.MODEL.ROI_BOX_HEAD.NUM_FC == 2  # Base-RCNN-FPN.yaml
    assert cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE == 64  # Base-Shapes.yaml overrides Base-RCNN-FPN (512)
    assert cfg.SOLVER.MAX_ITER == 7  # command-line override wins


def test_coco_configs_schedules():
    r101 = load_config(os.path.join(REPO, "configs/COCO-Detection/faster_rcnn_R_101_FPN_3x.yaml"))
    r18 = load_config(os.path.join(REPO, "configs/COCO-Detection/faster_rcnn_R_18_FPN_1x.yaml"))
    assert r101.MODEL.RESNETS.DEPTH == 101 and r101.SOLVER.MAX_ITER == 270000
    assert r18.MODEL.RESNETS.DEPTH == 18 and r18.SOLVER.MAX_ITER == 90000
    assert r18.DATASETS.TRAIN == ("coco_2017_train",)


def test_missing_config_file_is_one_sentence(tmp_path):
    with pytest.raises(ConfigError, match=r"Config file .*nope\.yaml does not exist\."):
        load_config(str(tmp_path / "nope.yaml"))


def test_unknown_key_names_file_and_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("MODEL:\n  NOT_A_KEY: 1\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*MODEL\.NOT_A_KEY"):
        load_config(str(bad))
    with pytest.raises(ConfigError, match=r"SOLVER\.NOPE"):
        load_config("", ["SOLVER.NOPE", "1"])


@pytest.mark.slow  # a fresh interpreter
def test_config_and_modeling_import_without_the_engine():
    """No import cycle: the config (and its loader) and the models import nothing from kd_det.detection.engine."""
    import subprocess
    import sys

    code = ("import sys, kd_det.config.detection, kd_det.detection.modeling.teacher as t; "
            "cfg = kd_det.config.detection.load_config(sys.argv[1]); t._teacher_cfg(cfg); "  # the teacher's own config loaded
            "print(sorted(m for m in sys.modules if m.startswith('kd_det.detection.engine')))")
    config = os.path.join(REPO, "configs/shapes/distill/dkd.yaml")
    out = subprocess.run([sys.executable, "-c", code, config], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
