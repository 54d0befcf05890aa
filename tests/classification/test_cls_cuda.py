"""GPU path (skipped without CUDA): float16 AMP + GradScaler, losses in float32."""
import math
import os

import pytest
import torch

from cls_helpers import CONFIGS, SMOKE_STUDENT, SMOKE_TEACHER, read_metrics, tiny_overrides

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_amp_on_cuda(tmp_path, tiny_cifar, smoke_teacher, train_cls):
    path = os.path.join(CONFIGS, "cifar100", "resnet32x4-resnet8x4", "dcd_kd.yaml")
    result = train_cls.main(["--config", path, *tiny_overrides(tiny_cifar, str(tmp_path)),
                             "MODEL.ARCH", SMOKE_STUDENT, "KD.TEACHER.ARCH", SMOKE_TEACHER,
                             "KD.TEACHER.WEIGHTS", smoke_teacher, "DEVICE", "cuda", "SOLVER.AMP.ENABLED", "True"])
    (record,) = read_metrics(str(tmp_path))
    assert math.isfinite(record["train/loss_dcd"]) and math.isfinite(record["train/loss_kd"])
    assert result["num_images"] == 32
    ckpt = torch.load(tmp_path / "last_checkpoint.pth", weights_only=False)
    assert ckpt["scaler"]  # the GradScaler state is checkpointed for resume
    assert all(v.dtype != torch.float16 for v in ckpt["model"].values())
