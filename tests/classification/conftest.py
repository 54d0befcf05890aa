"""Shared fixtures: tiny CIFAR-format data written by the tests, and an in-process runner of
``tools/train_cls.py``. Everything runs on one CPU thread (the machine is shared)."""
import importlib.util
import json
import os
import sys

import numpy as np
import pytest
import torch

from kd_det.classification.data import write_cifar_pickles

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = os.path.join(REPO, "configs", "classification")
NUM_CLASSES = 5

torch.set_num_threads(1)


def synthetic_split(n: int, seed: int):
    """(images (n, 32, 32, 3) uint8, labels (n,)): noise plus a class-specific bright stripe."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, NUM_CLASSES, n)
    images = rng.integers(0, 80, (n, 32, 32, 3)).astype(np.uint8)
    for i, c in enumerate(labels):
        images[i, :, 6 * c:6 * c + 6, c % 3] = 250
    return images, labels


@pytest.fixture(scope="session")
def tiny_cifar(tmp_path_factory) -> str:
    """DATA.ROOT of a 64-image train / 32-image test CIFAR-100-format set with 5 classes."""
    root = str(tmp_path_factory.mktemp("cifar"))
    write_cifar_pickles(root, synthetic_split(64, 0), synthetic_split(32, 1), NUM_CLASSES)
    return root


def _load_tool(name: str):
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def train_cls():
    """``tools/train_cls.py`` as a module (its ``main(argv)`` is what the command line runs)."""
    return _load_tool("train_cls")


@pytest.fixture(scope="session")
def convert_tool():
    return _load_tool("convert_backbone")


def tiny_overrides(data_root: str, out_dir: str, epochs: int = 1):
    """Overrides turning any CIFAR row config into a seconds-long CPU run."""
    return ["DATA.ROOT", data_root, "DATA.NUM_CLASSES", str(NUM_CLASSES), "DATA.NUM_WORKERS", "0",
            "SOLVER.EPOCHS", str(epochs), "SOLVER.BATCH_SIZE", "32", "TEST.BATCH_SIZE", "32",
            "OUTPUT_DIR", out_dir]


def read_metrics(out_dir: str):
    with open(os.path.join(out_dir, "metrics.json")) as f:
        return [json.loads(line) for line in f if line.strip()]


def subprocess_env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return env


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
