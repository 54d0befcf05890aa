"""Row configs: one per row of kd_det/data/paper_results.csv, each loads, names its row,
follows the recipe of its dataset and builds its losses."""
import csv
import functools
import glob
import os

import pytest
import torch

from kd_det.config.classification import load_cls_config
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
    return (cfg.KD.LABEL.DATASET, cfg.KD.LABEL.TEACHER, cfg.KD.LABEL.STUDENT, cfg.KD.LABEL.METHOD)


def test_every_csv_row_has_exactly_one_config():
    path = paper_csv()
    with open(path) as f:
        rows = [r for r in csv.DictReader(f) if r["task"] == "classification"]
    by_key = {}
    for p in ROWS:
        cfg = _load(p)
        if cfg.KD.LABEL.STUDENT:  # helpers (e.g. imagenet/teacher_resnet50.yaml) leave it empty
            by_key.setdefault(_key(cfg), []).append((p, cfg))
    for r in rows:
        key = (r["dataset"], r["teacher"], r["student"], r["method"])
        assert len(by_key.get(key, [])) == 1, f"row {key}: configs {by_key.get(key)}"
        p, cfg = by_key[key][0]
        assert cfg.KD.LABEL.PAPER_TOP1 == pytest.approx(float(r["value"]))
        with open(p) as f:
            assert "kd_det/data/paper_results.csv row" in f.readline()
    assert len(by_key) == len(rows)


@pytest.mark.parametrize("path", ROWS, ids=lambda p: os.path.relpath(p, CONFIGS))
def test_row_config_follows_the_recipe(path):
    cfg = _load(path)
    ds, method = cfg.KD.LABEL.DATASET, cfg.KD.LABEL.METHOD
    s = cfg.SOLVER
    if ds == "cifar100":
        light = cfg.MODEL.ARCH in ("mobilenetv2_cifar", "shufflenetv1", "shufflenetv2")
        assert (s.EPOCHS, tuple(s.STEPS), s.WEIGHT_DECAY) == (240, (150, 180, 210), 5e-4)
        if method == "CKD":  # CKD paper, Sec. IV-A.3: cosine; 64 / 0.05 same-, 32 / 0.01 mixed-architecture
            mixed = _family(cfg.KD.TEACHER.ARCH) != _family(cfg.MODEL.ARCH)
            assert (s.SCHEDULER, s.BATCH_SIZE, s.BASE_LR) == (("cosine", 32, 0.01) if mixed else ("cosine", 64, 0.05))
        else:
            assert (s.SCHEDULER, s.BATCH_SIZE, s.BASE_LR) == ("step", 64, 0.01 if light else 0.05)
    else:
        assert (s.EPOCHS, tuple(s.STEPS)) == (100, (30, 60, 90))
        expected = {"DKD": ("step", 512, 0.2),       # mdistiller configs/imagenet/r34_r18/dkd.yaml
                    "KD": ("step", 512, 0.2),        # mdistiller configs/imagenet/r34_r18/kd.yaml
                    "CKD": ("cosine", 512, 0.2)}     # CKD paper, Sec. IV-A.3
        assert (s.SCHEDULER, s.BATCH_SIZE, s.BASE_LR) == expected.get(method, ("step", 256, 0.1))
    arch_of = {"teacher": cfg.KD.LABEL.TEACHER}.get(method, cfg.KD.LABEL.STUDENT)
    assert cfg.MODEL.ARCH == CSV_ARCH[(ds, arch_of)]
    specs = {spec["name"]: spec for spec in cfg.KD.LOSSES}
    if method in ("teacher", "student"):
        assert not cfg.KD.LOSSES and not cfg.KD.TEACHER.ARCH
        return
    assert cfg.KD.TEACHER.ARCH == CSV_ARCH[(ds, cfg.KD.LABEL.TEACHER)]
    expected = {"KD": {"kd"}, "DKD": {"dkd"}, "CKD": {"ckd"}, "DCD": {"dcd"}, "DCD+KD": {"dcd", "kd"},
                "CRD": {"crd"}, "CRD+KD": {"crd", "kd"}, "ReviewKD": {"reviewkd"}, "MSD": {"msd"}}
    assert set(specs) == expected[method]
    if method == "CKD":  # CKD paper, Sec. IV-A.3: alpha 100 on CIFAR-100 (every pair), 10 on ImageNet
        assert specs["ckd"]["weight"] == (10.0 if ds == "imagenet" else 100.0)
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


def _family(arch):
    """Architecture family, for the CKD paper's same- / mixed-architecture split."""
    for prefix in ("resnet", "wrn", "vgg", "mobilenet", "shufflenet"):
        if arch.startswith(prefix):
            return prefix
    raise AssertionError(arch)


def _row(dataset, pair, method):
    return _load(os.path.join(CONFIGS, dataset, pair, f"{method}.yaml"))


# mdistiller configs/cifar100/dkd/<pair>.yaml: DKD.BETA (engine/cfg.py's 8.0 where unset)
DKD_BETA = {"resnet56-resnet20": 2.0, "resnet110-resnet32": 2.0, "vgg13-vgg8": 6.0,
            "vgg13-mobilenetv2_cifar": 6.0, "wrn_40_2-wrn_16_2": 6.0, "wrn_40_2-wrn_40_1": 6.0,
            "resnet32x4-resnet8x4": 8.0, "resnet32x4-shufflenetv1": 8.0, "resnet32x4-shufflenetv2": 8.0,
            "resnet50_cifar-mobilenetv2_cifar": 8.0, "wrn_40_2-shufflenetv1": 8.0}


def test_dkd_rows_use_mdistillers_per_pair_settings():
    found = {os.path.basename(os.path.dirname(p)) for p in ROWS
             if _load(p).KD.LABEL.METHOD == "DKD" and _load(p).KD.LABEL.DATASET == "cifar100"}
    assert found == set(DKD_BETA)
    for pair, beta in DKD_BETA.items():
        cfg = _row("cifar100", pair, "dkd")
        (spec,) = cfg.KD.LOSSES
        assert spec["params"] == {"alpha": 1.0, "beta": beta, "temperature": 4.0}, pair
        assert cfg.KD.WARMUP_EPOCHS == 20
    cfg = _row("imagenet", "resnet34-resnet18", "dkd")  # mdistiller configs/imagenet/r34_r18/dkd.yaml
    (spec,) = cfg.KD.LOSSES
    assert spec["params"] == {"alpha": 1.0, "beta": 0.5, "temperature": 1.0}
    assert (cfg.KD.WARMUP_EPOCHS, cfg.SOLVER.BATCH_SIZE, cfg.SOLVER.BASE_LR) == (1, 512, 0.2)


# ReviewKD CIFAR-100/script/reviewKD.sh --kd-loss-weight; None: no run there (5.0 as a stated choice)
REVIEWKD_WEIGHT = {"wrn_40_2-wrn_16_2": 5.0, "wrn_40_2-wrn_40_1": 5.0, "wrn_40_2-shufflenetv1": 5.0,
                   "resnet32x4-resnet8x4": 5.0, "resnet32x4-shufflenetv1": 5.0, "resnet32x4-shufflenetv2": 8.0,
                   "resnet56-resnet20": 0.6, "resnet110-resnet32": 1.0, "vgg13-vgg8": None,
                   "vgg13-mobilenetv2_cifar": None, "resnet50_cifar-mobilenetv2_cifar": None}


def test_reviewkd_rows_use_the_reference_weights_and_levels():
    found = {os.path.basename(os.path.dirname(p)) for p in ROWS
             if _load(p).KD.LABEL.METHOD == "ReviewKD" and _load(p).KD.LABEL.DATASET == "cifar100"}
    assert found == set(REVIEWKD_WEIGHT)
    for pair, weight in REVIEWKD_WEIGHT.items():
        (spec,) = _row("cifar100", pair, "reviewkd").KD.LOSSES
        assert spec["weight"] == (5.0 if weight is None else weight), pair
        assert spec["params"] == {"pooled_level": True}
        # teacher maps before their last activation; student maps after it (CIFAR)
        assert spec["inputs"] == {"feats_s": "stage_feats_s", "feats_t": "preact_feats_t"}
    # mdistiller configs/imagenet/r34_r18/reviewkd.yaml: weight 1, STU_PREACT True
    (spec,) = _row("imagenet", "resnet34-resnet18", "reviewkd").KD.LOSSES
    assert (spec["weight"], spec["params"]) == (1.0, {"pooled_level": True})
    assert spec["inputs"] == {"feats_s": "preact_feats_s", "feats_t": "preact_feats_t"}


# The ABF levels of ReviewKD CIFAR-100/model/reviewkd.py build_review_kd (in_channels) and of its
# teachers (out_channels); mdistiller configs/imagenet/r34_r18/reviewkd.yaml for ImageNet.
REVIEWKD_LEVELS = {
    ("cifar100", "resnet32x4-resnet8x4"): ([64, 128, 256, 256], [64, 128, 256, 256]),
    ("cifar100", "resnet56-resnet20"): ([16, 32, 64, 64], [16, 32, 64, 64]),
    ("cifar100", "wrn_40_2-wrn_16_2"): ([32, 64, 128, 128], [32, 64, 128, 128]),
    ("cifar100", "wrn_40_2-shufflenetv1"): ([240, 480, 960, 960], [32, 64, 128, 128]),
    ("cifar100", "resnet32x4-shufflenetv2"): ([116, 232, 464, 1024], [64, 128, 256, 256]),
    ("cifar100", "vgg13-vgg8"): ([128, 256, 512, 512, 512], [128, 256, 512, 512, 512]),
    ("cifar100", "vgg13-mobilenetv2_cifar"): ([12, 16, 48, 160, 1280], [128, 256, 512, 512, 512]),
    ("cifar100", "resnet50_cifar-mobilenetv2_cifar"): ([12, 16, 48, 160, 1280], [256, 512, 1024, 2048, 2048]),
    ("imagenet", "resnet34-resnet18"): ([64, 128, 256, 512, 512], [64, 128, 256, 512, 512]),
}


@pytest.mark.parametrize("key", sorted(REVIEWKD_LEVELS), ids=lambda k: k[1])
def test_reviewkd_rows_build_the_reference_levels(key):
    cfg = _row(*key, "reviewkd")
    with torch.device("meta"):
        student = build_model(cfg.MODEL.ARCH, cfg.DATA.NUM_CLASSES)
        teacher = build_model(cfg.KD.TEACHER.ARCH, cfg.DATA.NUM_CLASSES)
    loss = build_distill_loss(cfg.KD.LOSSES, student, teacher, num_samples=8,
                              num_classes=cfg.DATA.NUM_CLASSES).losses["reviewkd"]
    assert (loss.in_channels, loss.out_channels) == REVIEWKD_LEVELS[key]
    assert loss.mid_channels == min(512, REVIEWKD_LEVELS[key][0][-1])


def test_ckd_rows_follow_the_ckd_paper():
    """CKD paper, Sec. IV-A.3: alpha 100 on every CIFAR-100 pair, cosine, 64 / 0.05 for the
    same-architecture pairs (its Table I), 32 / 0.01 for the mixed ones (Table II); ImageNet:
    alpha 10, cosine, lr 0.2, batch 512."""
    mixed = {"resnet32x4-shufflenetv1", "wrn_40_2-shufflenetv1", "vgg13-mobilenetv2_cifar",
             "resnet50_cifar-mobilenetv2_cifar", "resnet32x4-shufflenetv2"}
    same = {"resnet56-resnet20", "resnet110-resnet32", "resnet32x4-resnet8x4", "wrn_40_2-wrn_16_2",
            "wrn_40_2-wrn_40_1", "vgg13-vgg8"}
    found = {os.path.basename(os.path.dirname(p)) for p in ROWS
             if _load(p).KD.LABEL.METHOD == "CKD" and _load(p).KD.LABEL.DATASET == "cifar100"}
    assert found == mixed | same
    for pair in found:
        cfg = _row("cifar100", pair, "ckd")
        (spec,) = cfg.KD.LOSSES
        assert spec["weight"] == 100.0, pair
        want = ("cosine", 32, 0.01) if pair in mixed else ("cosine", 64, 0.05)
        assert (cfg.SOLVER.SCHEDULER, cfg.SOLVER.BATCH_SIZE, cfg.SOLVER.BASE_LR) == want, pair
    cfg = _row("imagenet", "resnet34-resnet18", "ckd")
    assert cfg.KD.LOSSES[0]["weight"] == 10.0
    assert (cfg.SOLVER.SCHEDULER, cfg.SOLVER.BATCH_SIZE, cfg.SOLVER.BASE_LR) == ("cosine", 512, 0.2)


def test_dcd_imagenet_resnet50_rows_use_mobilenet_v2():
    """DCD paper v2, Table 3 and its code's ImageNet zoo: ResNet-50 -> MobileNet-v2."""
    with open(paper_csv()) as f:
        rows = [r for r in csv.DictReader(f) if r["task"] == "classification"
                and r["dataset"] == "imagenet" and r["teacher"] == "ResNet-50" and "Mobile" in r["student"]]
    assert {(r["student"], r["method"]) for r in rows} == {("MobileNetV2", "DCD"), ("MobileNetV2", "DCD+KD")}
    assert ("imagenet", "MobileNet") not in CSV_ARCH
    for method in ("dcd", "dcd_kd"):
        cfg = _row("imagenet", "resnet50-mobilenet_v2", method)
        assert (cfg.KD.LABEL.STUDENT, cfg.MODEL.ARCH) == ("MobileNetV2", "mobilenet_v2")
        assert cfg.OUTPUT_DIR.endswith(f"resnet50-mobilenet_v2/{method}")
    assert not os.path.exists(os.path.join(CONFIGS, "imagenet", "resnet50-mobilenet_v1"))


def test_msd_shufflenetv2_row_projects_layer3():
    """MSD paper, Table 7: the ResNet32x4 -> ShuffleNetV2 projector maps 464 -> 256 channels
    (1,286,049 parameters), so the student's last distilled map is layer3, not conv2."""
    cfg = _row("cifar100", "resnet32x4-shufflenetv2", "msd")
    with torch.device("meta"):
        student, teacher = build_model(cfg.MODEL.ARCH, 100), build_model(cfg.KD.TEACHER.ARCH, 100)
    loss = build_distill_loss(cfg.KD.LOSSES, student, teacher, num_samples=8, num_classes=100).losses["msd"]
    assert (loss.in_channels, loss.out_channels) == ([116, 232, 464], [64, 128, 256])
    assert sum(p.numel() for p in loss.projectors[-1].parameters()) == 1286049


def test_student_configs_point_at_their_teacher_config_output():
    outputs = {}
    for p in ALL:
        cfg = _load(p)
        if cfg.KD.LABEL.METHOD == "teacher":
            outputs[os.path.join(cfg.OUTPUT_DIR, "model_final.pth")] = cfg.MODEL.ARCH
    for p in ROWS:
        cfg = _load(p)
        if cfg.KD.TEACHER.ARCH:
            assert outputs.get(cfg.KD.TEACHER.WEIGHTS) == cfg.KD.TEACHER.ARCH, p


def test_losses_build_for_every_pair_and_method():
    """Every (teacher, student, losses) combination of the configs builds its DistillLoss."""
    models, seen = {}, set()
    for p in ROWS:
        cfg = _load(p)
        key = (cfg.KD.TEACHER.ARCH, cfg.MODEL.ARCH, str(cfg.KD.LOSSES))
        if not cfg.KD.LOSSES or key in seen:
            continue
        seen.add(key)
        for arch in (cfg.KD.TEACHER.ARCH, cfg.MODEL.ARCH):
            if arch not in models:  # only the dimensions are needed: no real weights
                with torch.device("meta"):
                    models[arch] = build_model(arch, 1000 if arch in IMAGENET_ARCHS else 100)
        loss = build_distill_loss(cfg.KD.LOSSES, models[cfg.MODEL.ARCH], models[cfg.KD.TEACHER.ARCH],
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
        load_cls_config("", ["KD.TEACHER.ARCH", "resnet8"])
    with torch.device("meta"):
        model = build_model("resnet8", 10)
    with pytest.raises(ConfigError, match="KD.LOSSES: Unknown loss 'dcdx'"):
        build_distill_loss([{"name": "dcdx"}], model, model, num_samples=8, num_classes=10)


def test_start_iter_is_refused_not_ignored():
    """The epoch loop does not pass the iteration to the losses, so a delayed term is refused, never dropped."""
    with torch.device("meta"):
        model = build_model("resnet8", 10)
    with pytest.raises(ConfigError, match=r"^KD\.LOSSES entry 1 \('kd'\) sets start_iter 400, which classification "
                                          r"training does not support; remove it or use KD\.WARMUP_EPOCHS\.$"):
        build_distill_loss([{"name": "dkd"}, {"name": "kd", "start_iter": 400}], model, model, num_samples=8,
                           num_classes=10)
    assert build_distill_loss([{"name": "kd", "start_iter": 0}], model, model, num_samples=8,
                              num_classes=10).start_iters == {"kd": 0}
