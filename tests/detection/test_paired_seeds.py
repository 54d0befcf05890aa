"""Paired design of seed sweeps: for one SEED, a plain student run and a distilled run start from the
same student weights, see the same images in the same order with the same augmentation, and leave
the global random generators in the same state (building the teacher and the distillation losses
draws nothing from them)."""
import os
import random

import numpy as np
import pytest
import torch

import kd_det  # noqa: F401
from detectron2.engine import default_argument_parser

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BASELINE = os.path.join(REPO, "configs/shapes/faster_rcnn_R_18_FPN_shapes.yaml")
DISTILLED = {name: os.path.join(REPO, f"configs/shapes/distill/{name}.yaml") for name in ("dcd", "ckd_reviewkd")}
N_BATCHES = 4  # 8 images at 2 per batch (16 train images in tiny_shapes)


@pytest.fixture(scope="module")
def shapes_root(tiny_shapes):
    from kd_det.detection.data.datasets import register_shapes

    register_shapes(tiny_shapes)
    yield tiny_shapes
    register_shapes()  # back to the default root for the rest of the session


def start(config, out, tiny_opts, teacher_files, seed):
    """What ``train_net.py`` does up to the first step: setup (seeds the RNGs), Trainer (model, loader)."""
    from kd_det.detection.engine import Trainer, setup

    opts = [*tiny_opts, "DATALOADER.NUM_WORKERS", "1", "SEED", str(seed), "OUTPUT_DIR", out]
    if config != BASELINE:
        opts += ["KD.TEACHER.CONFIG_FILE", teacher_files[0], "KD.TEACHER.WEIGHTS", teacher_files[1]]
    args = default_argument_parser().parse_args(["--config-file", config, *opts])
    trainer = Trainer(setup(args))
    rng_after_build = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    weights = {k: v.clone() for k, v in trainer.model.state_dict().items() if not k.startswith("distill.")}
    stream = iter(trainer.data_loader)
    batches = [next(stream) for _ in range(N_BATCHES)]
    images = [(d["image_id"], d["image"]) for b in batches for d in b]
    return {"weights": weights, "images": images, "rng": rng_after_build}


@pytest.fixture(scope="module")
def baseline(shapes_root, tmp_path_factory, tiny_opts, teacher_files):
    return start(BASELINE, str(tmp_path_factory.mktemp("baseline")), tiny_opts, teacher_files, seed=3)


@pytest.mark.parametrize("method", sorted(DISTILLED))
def test_distilled_run_pairs_with_baseline(baseline, method, tmp_path, tiny_opts, teacher_files):
    run = start(DISTILLED[method], str(tmp_path), tiny_opts, teacher_files, seed=3)
    assert [i for i, _ in run["images"]] == [i for i, _ in baseline["images"]]  # same data order
    for (i, a), (_, b) in zip(run["images"], baseline["images"]):
        assert torch.equal(a, b), f"image {i} augmented differently"  # same flips / resizes
    assert run["weights"].keys() == baseline["weights"].keys()
    for k, v in baseline["weights"].items():
        assert torch.equal(run["weights"][k], v), f"initial student weight {k} differs"
    torch_state, np_state, py_state = run["rng"]
    assert torch.equal(torch_state, baseline["rng"][0]), "torch's global generator was shifted"
    assert np.array_equal(np_state, baseline["rng"][1]) and py_state == baseline["rng"][2]


def test_another_seed_changes_order_and_weights(baseline, tmp_path, tiny_opts, teacher_files):
    """The comparison above can tell seeds apart: seed 4 gives other weights and another data stream."""
    run = start(BASELINE, str(tmp_path), tiny_opts, teacher_files, seed=4)
    assert any(not torch.equal(run["weights"][k], v) for k, v in baseline["weights"].items()
               if v.is_floating_point() and v.numel() > 1)
    assert [i for i, _ in run["images"]] != [i for i, _ in baseline["images"]] or any(
        not torch.equal(a, b) for (_, a), (_, b) in zip(run["images"], baseline["images"]))
