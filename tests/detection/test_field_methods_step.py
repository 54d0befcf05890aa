"""PKD, CWD, MGD, FGD in DistillRCNN: each shapes config builds and trains one step (issue 21)."""
import os

import pytest
import torch

import kd_det  # noqa: F401
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from kd_det.config.detection import load_config
from test_distill import REPO, batch, distill_cfg


@pytest.mark.parametrize("method", ["pkd", "cwd", "mgd", "fgd"])
def test_shapes_config_builds_and_trains_one_step(teacher_files, method):
    # the test teacher has 48 FPN channels: PKD / CWD (no adapter) need the student's to match; MGD / FGD align 32 -> 48
    extra = ["MODEL.FPN.OUT_CHANNELS", "48"] if method in ("pkd", "cwd") else []
    base = f"configs/shapes/distill/{method}.yaml"
    weight = load_config(os.path.join(REPO, base)).KD.LOSSES[0]["weight"]      # the config's own weight
    cfg = distill_cfg(teacher_files, [method], [weight], extra=extra, base=base)
    assert os.path.exists(os.path.join(REPO, base))
    torch.manual_seed(0)
    model = build_model(cfg)
    model.train()
    spec = {s["tag"]: s for s in cfg.KD.LOSSES}[method]
    assert model.feature_levels == list(cfg.KD.FEATURE_LEVELS)
    with EventStorage():
        out = model(batch())
    value = out[f"loss_{method}"]
    assert torch.isfinite(value) and value.item() > 0, (method, value)
    sum(out.values()).backward()
    assert all(p.grad is None for p in model.teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.bottom_up.parameters())
    learnable = [p for p in model.distill.parameters()]
    assert bool(learnable) == (method in ("mgd", "fgd"))
    if learnable:                                                       # align / generation / attention convs learn
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in learnable)
    if method == "mgd":
        assert int(model.distill.losses[method].draws) == 1           # the mask stream moved once
    assert spec["weight"] == weight
