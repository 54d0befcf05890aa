"""Fixtures of the classification tests: tiny CIFAR-format data written by the tests, the
command-line tools loaded as modules (tests/conftest.py runs each test on one torch thread)."""
import importlib.util
import os

import pytest

from kd_det.classification.data import write_cifar_pickles

from cls_helpers import CONFIGS, NUM_CLASSES, REPO, SMOKE_TEACHER, synthetic_split, tiny_overrides


@pytest.fixture(scope="session")
def tiny_cifar(tmp_path_factory) -> str:
    """DATA.ROOT of a 64-image train / 32-image test CIFAR-100-format set with 5 classes."""
    root = str(tmp_path_factory.mktemp("cifar"))
    write_cifar_pickles(root, synthetic_split(64, 0), synthetic_split(32, 1), NUM_CLASSES)
    return root


def _load_tool(name: str):
    spec = importlib.util.spec_from_file_location(f"tool_{name}", os.path.join(REPO, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def train_cls():
    """``tools/train_cls.py`` as a module: ``main(argv)`` is what the command line runs."""
    return _load_tool("train_cls")


@pytest.fixture(scope="session")
def convert_tool():
    """``tools/convert_backbone.py`` as a module."""
    return _load_tool("convert_backbone")


@pytest.fixture(scope="session")
def smoke_teacher(tmp_path_factory, tiny_cifar, train_cls, torch_threads) -> str:
    """A 1-epoch teacher trained by the real teacher row config (one thread); returns its checkpoint."""
    out = str(tmp_path_factory.mktemp("teacher"))
    with torch_threads(1):
        train_cls.main(["--config", os.path.join(CONFIGS, "cifar100", "resnet32x4-resnet8x4", "teacher.yaml"),
                       *tiny_overrides(tiny_cifar, out), "MODEL.ARCH", SMOKE_TEACHER])
    return os.path.join(out, "model_final.pth")
