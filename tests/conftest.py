"""Shared fixtures. Tests run on CPU; anything needing CUDA is skipped without it.

Two tiers: ``make test`` runs everything; ``make test-fast`` runs the inner-loop folders with
``--fast``, which leaves out tests marked ``slow`` (a fresh interpreter, a training run) and fails a
test there that starts a subprocess anyway. Every test runs on one intra-op torch thread (OpenMP
hand-offs cost tens of ms per op when the 2 cores are shared), restored afterwards.
"""
import contextlib
import os
import subprocess
import sys

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pytest_addoption(parser):
    parser.addoption("--fast", action="store_true",
                     help="the inner-loop tier: leave out tests marked slow; fail a test that starts a subprocess")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: a fresh interpreter or a training run; --fast leaves it out")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--fast"):
        slow = [item for item in items if item.get_closest_marker("slow")]
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if not item.get_closest_marker("slow")]


@pytest.fixture(autouse=True)
def _no_subprocess_when_fast(request, monkeypatch):
    if request.config.getoption("--fast"):
        def refuse(self, *args, **kwargs):
            raise AssertionError(f"{request.node.nodeid} starts a subprocess: mark it @pytest.mark.slow")
        monkeypatch.setattr(subprocess.Popen, "_execute_child", refuse)


@contextlib.contextmanager
def _threads(n):
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def torch_threads():
    """``with torch_threads(n):`` runs a block on n intra-op threads and restores the previous count
    (for session fixtures, which run before the per-test setting below)."""
    return _threads


@pytest.fixture(autouse=True)
def _one_thread():
    with _threads(1):
        yield


@pytest.fixture(scope="session")
def tiny_shapes(tmp_path_factory):
    """A tiny shapes dataset root (16 train / 8 val images) for fast end-to-end runs."""
    from kd_det.detection.data.shapes import make_shapes

    root = str(tmp_path_factory.mktemp("datasets"))
    make_shapes(root, {"train": (16, 1), "val": (8, 2)})
    return root


_TINY_OPTS = [
    "SOLVER.IMS_PER_BATCH", "2", "SOLVER.WARMUP_ITERS", "2", "SOLVER.STEPS", "()",
    "MODEL.FPN.OUT_CHANNELS", "32", "MODEL.ROI_BOX_HEAD.FC_DIM", "128",
    "MODEL.RPN.POST_NMS_TOPK_TRAIN", "64", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32",
    "MODEL.RPN.POST_NMS_TOPK_TEST", "50", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
    "DATALOADER.NUM_WORKERS", "0",
]


@pytest.fixture(scope="session")
def tiny_opts():
    """Config overrides that make a shapes config train in about a second per iteration on CPU."""
    return list(_TINY_OPTS)


def _run_tool(script, args, datasets_root, timeout=600):
    env = dict(os.environ, DETECTRON2_DATASETS=datasets_root, OMP_NUM_THREADS="2")
    return subprocess.run([sys.executable, os.path.join(REPO, "tools", script), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def run_tool():
    """``run_tool(script, args, datasets_root)``: run ``tools/<script>`` in a fresh interpreter."""
    return _run_tool


def write_teacher(folder, base, model_yaml):
    """A small teacher for tests: ``folder/teacher.yaml`` (``_BASE_`` ``base`` + the ``MODEL:`` lines ``model_yaml``)
    and ``folder/model_final.pth`` saved from it (seed 0, random init). Returns (config, weights)."""
    import torch
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    from kd_det.config.detection import load_config

    cfg_file = folder / "teacher.yaml"
    cfg_file.write_text(f'_BASE_: "{base}"\nMODEL:\n{model_yaml}')
    torch.manual_seed(0)
    DetectionCheckpointer(build_model(load_config(str(cfg_file))), save_dir=str(folder)).save("model_final")
    return str(cfg_file), str(folder / "model_final.pth")


@pytest.fixture(scope="session")
def teacher_writer():
    """:func:`write_teacher`, for fixtures of other test folders."""
    return write_teacher


@pytest.fixture(scope="session")
def teacher_files(tmp_path_factory):
    """A small R-18 teacher config and a weights file saved from it (random init): (config, weights)."""
    return write_teacher(tmp_path_factory.mktemp("teacher"), f"{REPO}/configs/shapes/faster_rcnn_R_18_FPN_shapes.yaml",
                         "  FPN: {OUT_CHANNELS: 48}\n  ROI_BOX_HEAD: {FC_DIM: 96}\n")

