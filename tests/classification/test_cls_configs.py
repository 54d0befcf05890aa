"""Row configs: one per row of paper_results_classification.csv, each loads, names its row,
follows the recipe of its dataset and builds its losses."""
import csv
import functools
import glob
import os

import pytest
import torch

from kd_det.classification.config import load_cls_config
from kd_det.classification.distiller import build_distill_loss
from kd_det.classification.models import CSV_ARCH, IMAGENET_ARCHS, build_model
from kd_det.errors import ConfigError

from cls_helpers import CONFIGS, paper_csv

ALL = sorted(p for p in glob.glob(os.path.join(CONFIGS, "**", "*.yaml"), recursive=True)
             if not os.path.basename(p).startswith("Base-"))
ROWS = [p for p in ALL if "/digits/" not in p]


@functools.lru_cache(maxsize=None)
def _load(path):
    return load_cls_config(path)


def _key(cfg):
    return (cfg.ROW.DATASET, cfg.ROW.TEACHER, cfg.ROW.STUDENT, cfg.ROW.METHOD)


def test_every_csv_row_has_exactly_one_config():
    path = paper_csv()
    with open(path) as f:
        rows = [r for r in csv.DictReader(f) if r["task"] == "classification"]
    by_key = {}
    for p in ROWS:
        cfg = _load(p)
        if cfg.ROW.STUDENT:  # helpers (e.g. imagenet/teacher_resnet50.yaml) leave it empty
            by_key.setdefault(_key(cfg), []).append((p, cfg))
    for r in rows:
        key = (r["dataset"], r["teacher"], r["student"], r["method"])
        assert len(by_key.get(key, [])) == 1, f"row {key}: configs {by_key.get(key)}"
        p, cfg = by_key[key][0]
        assert cfg.ROW.PAPER_TOP1 == pytest.approx(float(r["value"]))
        with open(p) as f:
            assert "paper_results_classification.csv row" in f.readline()
    assert len(by_key) == len(rows)


@pytest.mark.parametrize("path", ROWS, ids=lambda p: os.path.relpath(p, CONFIGS))
def test_row_config_follows_the_recipe(path):
    cfg = _load(path)
    ds, method = cfg.ROW.DATASET, cfg.ROW.METHOD
    s = cfg.SOLVER
    if ds == "cifar100":
        light = cfg.MODEL.ARCH in ("mobilenetv2_cifar", "shufflenetv1", "shufflenetv2")
        assert (s.EPOCHS, s.BATCH_SIZE, tuple(s.STEPS), s.WEIGHT_DECAY) == (240, 64, (150, 180, 210), 5e-4)
        assert s.BASE_LR == (0.01 if light else 0.05)
    else:
        assert (s.EPOCHS, s.BATCH_SIZE, tuple(s.STEPS), s.BASE_LR) == (100, 256, (30, 60, 90), 0.1)
    arch_of = {"teacher": cfg.ROW.TEACHER}.get(method, cfg.ROW.STUDENT)
    assert cfg.MODEL.ARCH == CSV_ARCH[(ds, arch_of)]
    specs = {spec["name"]: spec for spec in cfg.KD.LOSSES}
    if method in ("teacher", "student"):
        assert not cfg.KD.LOSSES and not cfg.TEACHER.ARCH
        return
    assert cfg.TEACHER.ARCH == CSV_ARCH[(ds, cfg.ROW.TEACHER)]
    expected = {"KD": {"kd"}, "DKD": {"dkd"}, "CKD": {"ckd"}, "DCD": {"dcd"}, "DCD+KD": {"dcd", "kd"},
                "CRD": {"crd"}, "CRD+KD": {"crd", "kd"}, "ReviewKD": {"reviewkd"}, "MSD": {"msd"}}
    assert set(specs) == expected[method]
    if method == "CKD":
        small = ds == "imagenet" or cfg.TEACHER.ARCH in ("resnet56", "resnet110")
        assert specs["ckd"]["weight"] == (10.0 if small else 100.0)
    if method == "MSD":
        assert specs["msd"]["weight"] == 0.8
    if "dcd" in specs:
        assert specs["dcd"]["params"]["alpha"] == 0.5 and specs["dcd"].get("weight", 1.0) == 1.0
    if method == "DCD+KD":
        assert specs["kd"]["weight"] == 1.0
    if "crd" in specs:  # the loader draws as many negatives as the loss scores
        assert cfg.DATA.CONTRAST_K == (specs["crd"].get("params") or {}).get("nce_k", 16384)
    else:
        assert cfg.DATA.CONTRAST_K == 0


def test_student_configs_point_at_their_teacher_config_output():
    outputs = {}
    for p in ALL:
        cfg = _load(p)
        if cfg.ROW.METHOD == "teacher":
            outputs[os.path.join(cfg.OUTPUT_DIR, "model_final.pth")] = cfg.MODEL.ARCH
    for p in ROWS:
        cfg = _load(p)
        if cfg.TEACHER.ARCH:
            assert outputs.get(cfg.TEACHER.WEIGHTS) == cfg.TEACHER.ARCH, p


def test_losses_build_for_every_pair_and_method():
    """Every (teacher, student, losses) combination of the configs builds its DistillLoss."""
    models, seen = {}, set()
    for p in ROWS:
        cfg = _load(p)
        key = (cfg.TEACHER.ARCH, cfg.MODEL.ARCH, str(cfg.KD.LOSSES))
        if not cfg.KD.LOSSES or key in seen:
            continue
        seen.add(key)
        for arch in (cfg.TEACHER.ARCH, cfg.MODEL.ARCH):
            if arch not in models:  # only the dimensions are needed: no real weights
                with torch.device("meta"):
                    models[arch] = build_model(arch, 1000 if arch in IMAGENET_ARCHS else 100)
        loss = build_distill_loss(cfg.KD.LOSSES, models[cfg.MODEL.ARCH], models[cfg.TEACHER.ARCH],
                                  num_samples=256, num_classes=cfg.DATA.NUM_CLASSES)
        assert {f"loss_{s['name']}" for s in cfg.KD.LOSSES} == {f"loss_{k}" for k in loss.losses}


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_cls_config(str(tmp_path / "nope.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("SOLVER:\n  EPOCHZ: 3\n")
    with pytest.raises(ConfigError, match="EPOCHZ"):
        load_cls_config(str(bad))
    with pytest.raises(ConfigError, match="TEACHER.WEIGHTS is empty"):
        load_cls_config("", ["TEACHER.ARCH", "resnet8"])
    with torch.device("meta"):
        model = build_model("resnet8", 10)
    with pytest.raises(ConfigError, match="KD.LOSSES: Unknown loss 'dcdx'"):
        build_distill_loss([{"name": "dcdx"}], model, model, num_samples=8, num_classes=10)
