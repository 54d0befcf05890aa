"""Resume gives the same run as no interruption; checkpoints are written atomically;
learning-rate recipes."""
import os

import pytest
import torch

from kd_det.config.classification import load_cls_config
from kd_det.classification.engine import lr_at_epoch
from kd_det.core import atomic_save

from cls_helpers import CONFIGS, SMOKE_STUDENT, SMOKE_TEACHER, read_metrics, tiny_overrides

DCD_KD = os.path.join(CONFIGS, "cifar100", "resnet32x4-resnet8x4", "dcd_kd.yaml")


def _argv(out, data, teacher, epochs):
    return ["--config", DCD_KD, *tiny_overrides(data, out, epochs), "MODEL.ARCH", SMOKE_STUDENT,
            "KD.TEACHER.ARCH", SMOKE_TEACHER, "KD.TEACHER.WEIGHTS", teacher]


def test_resume_repeats_the_uninterrupted_run(tmp_path, tiny_cifar, smoke_teacher, train_cls):
    straight, split = str(tmp_path / "straight"), str(tmp_path / "split")
    train_cls.main(_argv(straight, tiny_cifar, smoke_teacher, 2))
    train_cls.main(_argv(split, tiny_cifar, smoke_teacher, 1))
    train_cls.main(_argv(split, tiny_cifar, smoke_teacher, 2) + ["--resume"])
    a = torch.load(os.path.join(straight, "last_checkpoint.pth"), weights_only=False)
    b = torch.load(os.path.join(split, "last_checkpoint.pth"), weights_only=False)
    assert b["epoch"] == 2
    for part in ("model", "distill"):  # student and learnable DCD parts, bit for bit
        assert a[part].keys() == b[part].keys()
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    ra, rb = read_metrics(straight), read_metrics(split)
    assert [r["epoch"] for r in rb] == [1, 2]
    assert ra[-1]["val/top1"] == rb[-1]["val/top1"]
    assert ra[-1]["train/loss_total"] == pytest.approx(rb[-1]["train/loss_total"], rel=1e-6)


class _Unpicklable:
    def __reduce__(self):
        raise RuntimeError("cannot pickle")


def test_atomic_save_keeps_the_old_file_on_failure(tmp_path):
    path = str(tmp_path / "last_checkpoint.pth")
    atomic_save({"epoch": 1}, path)
    with pytest.raises(RuntimeError):
        atomic_save({"epoch": 2, "bad": _Unpicklable()}, path)
    assert torch.load(path)["epoch"] == 1
    assert os.listdir(tmp_path) == ["last_checkpoint.pth"]


def test_learning_rate_recipes():
    cifar = load_cls_config(os.path.join(CONFIGS, "cifar100", "resnet32x4-resnet8x4", "kd.yaml"))
    assert [round(lr_at_epoch(cifar, e), 8) for e in (0, 149, 150, 179, 180, 210, 239)] == [
        0.05, 0.05, 0.005, 0.005, 0.0005, 0.00005, 0.00005]
    # CRD row: Base-ImageNet.yaml's recipe (the KD / DKD / CKD rows use their references' lr 0.2)
    imagenet = load_cls_config(os.path.join(CONFIGS, "imagenet", "resnet34-resnet18", "crd.yaml"))
    assert [round(lr_at_epoch(imagenet, e), 8) for e in (0, 29, 30, 60, 99)] == [
        0.1, 0.1, 0.01, 0.001, 0.0001]
