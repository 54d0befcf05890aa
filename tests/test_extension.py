"""Extending kd_det from outside (docs/extending.md): a loss in the user's own package
(tests/fixtures/kd_ext_pkg), named only in a config's KD.CUSTOM_IMPORTS and KD.LOSSES, trains one
detection step and one classification step through the real config loaders and trainers."""
import json
import math
import os
import sys

import numpy as np
import pytest
import torch

import kd_det  # noqa: F401  (applies kd_det.compat before Detectron2 is imported)
from kd_det.losses import LOSS_REGISTRY

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXT_ROOT = os.path.join(REPO, "tests", "fixtures", "kd_ext_pkg")
LOSS = "  LOSSES:\n    - {name: l2logits, weight: 1.0, params: {scale: 0.5}}\n"


@pytest.fixture
def ext_on_path(monkeypatch):
    """The user's package importable (its folder on sys.path), not yet imported; afterwards the registry and
    sys.modules are as before, so no other test sees the extra loss."""
    monkeypatch.syspath_prepend(EXT_ROOT)
    registry = dict(LOSS_REGISTRY)
    assert "l2logits" not in LOSS_REGISTRY and "kd_ext_pkg.losses" not in sys.modules
    yield
    LOSS_REGISTRY.clear()
    LOSS_REGISTRY.update(registry)
    for name in [m for m in sys.modules if m == "kd_ext_pkg" or m.startswith("kd_ext_pkg.")]:
        del sys.modules[name]


def test_detection_step_with_a_loss_named_only_in_the_config(ext_on_path, tmp_path, teacher_files, tiny_shapes,
                                                             tiny_opts):
    from detectron2.engine import default_argument_parser
    from detectron2.utils.events import EventStorage

    from kd_det.detection.data.datasets import register_shapes
    from kd_det.detection.engine import Trainer, setup

    cfg_file = tmp_path / "l2logits.yaml"
    cfg_file.write_text(f'_BASE_: "{REPO}/configs/shapes/faster_rcnn_R_18_FPN_shapes.yaml"\n'
                        'MODEL:\n  META_ARCHITECTURE: "DistillRCNN"\n'
                        "KD:\n  CUSTOM_IMPORTS: [kd_ext_pkg.losses]\n"
                        f'  TEACHER: {{CONFIG_FILE: "{teacher_files[0]}", WEIGHTS: "{teacher_files[1]}"}}\n' + LOSS)
    args = default_argument_parser().parse_args(["--config-file", str(cfg_file), *tiny_opts,
                                                 "OUTPUT_DIR", str(tmp_path / "out")])
    register_shapes(tiny_shapes)
    try:
        trainer = Trainer(setup(args))  # what train_net.py does: the loader imports kd_ext_pkg.losses first
        assert "l2logits" in LOSS_REGISTRY
        model = trainer.model
        before = {k: v.detach().clone() for k, v in model.named_parameters() if not k.startswith("distill.")}
        with EventStorage(0) as storage:
            trainer.iter = 0
            trainer.run_step()
            latest = storage.latest()
    finally:
        register_shapes()  # back to the default root for the rest of the session
    assert math.isfinite(latest["loss_l2logits"][0]) and latest["loss_l2logits"][0] > 0
    assert any(not torch.equal(v, dict(model.named_parameters())[k]) for k, v in before.items())


def test_classification_step_with_a_loss_named_only_in_the_config(ext_on_path, tmp_path):
    from kd_det.config.classification import load_cls_config
    from kd_det.classification.data import write_cifar_pickles
    from kd_det.classification.engine import train
    from kd_det.classification.models import build_model

    rng = np.random.default_rng(0)
    split = lambda n: (rng.integers(0, 255, (n, 32, 32, 3)).astype(np.uint8), rng.integers(0, 5, n))  # noqa: E731
    write_cifar_pickles(str(tmp_path / "data"), split(16), split(8), 5)
    torch.manual_seed(0)
    init, teacher = tmp_path / "student_init.pth", tmp_path / "teacher.pth"
    torch.save({"model": build_model("resnet8", 5).state_dict()}, init)
    torch.save({"model": build_model("resnet8", 5).state_dict()}, teacher)
    cfg_file = tmp_path / "l2logits.yaml"
    cfg_file.write_text("MODEL: {ARCH: resnet8}\nDATA: {NUM_CLASSES: 5, NUM_WORKERS: 0}\n"
                        "SOLVER: {EPOCHS: 1, BATCH_SIZE: 16}\nTEST: {BATCH_SIZE: 8}\n"
                        "KD:\n  CUSTOM_IMPORTS: [kd_ext_pkg.losses]\n"
                        f'  TEACHER: {{ARCH: resnet8, WEIGHTS: "{teacher}"}}\n' + LOSS)
    cfg = load_cls_config(str(cfg_file), ["DATA.ROOT", str(tmp_path / "data"), "MODEL.WEIGHTS", str(init),
                                          "OUTPUT_DIR", str(tmp_path / "out")])
    assert "l2logits" in LOSS_REGISTRY  # the loader imported kd_ext_pkg.losses before the merge
    cfg.freeze()
    train(cfg)  # 16 images at batch 16: one step, as train_cls.py runs it
    with open(tmp_path / "out" / "metrics.json") as f:
        record = [json.loads(line) for line in f if line.strip()][-1]
    assert math.isfinite(record["train/loss_l2logits"]) and record["train/loss_l2logits"] > 0
    start = torch.load(init, weights_only=True)["model"]
    final = torch.load(tmp_path / "out" / "model_final.pth", weights_only=False)["model"]
    assert any(not torch.equal(v, final[k]) for k, v in start.items() if v.is_floating_point())
