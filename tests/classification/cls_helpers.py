"""Helpers of the classification tests (tiny data, overrides, metrics)."""
import json
import os

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = os.path.join(REPO, "configs", "classification")
NUM_CLASSES = 5
SMOKE_TEACHER = "wrn_16_2"   # stage channels (32, 64, 128): differ from the student's
SMOKE_STUDENT = "resnet8"    # stage channels (16, 32, 64)


def synthetic_split(n: int, seed: int):
    """(images (n, 32, 32, 3) uint8, labels (n,)): noise plus a class-specific bright stripe."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, NUM_CLASSES, n)
    images = rng.integers(0, 80, (n, 32, 32, 3)).astype(np.uint8)
    for i, c in enumerate(labels):
        images[i, :, 6 * c:6 * c + 6, c % 3] = 250
    return images, labels


def paper_csv():
    """Path of the papers' numbers shipped with the package (classification rows have task "classification")."""
    return os.path.join(REPO, "kd_det", "data", "paper_results.csv")


def tiny_overrides(data_root: str, out_dir: str, epochs: int = 1):
    """Overrides turning any CIFAR row config into a seconds-long CPU run."""
    return ["DATA.ROOT", data_root, "DATA.NUM_CLASSES", str(NUM_CLASSES), "DATA.NUM_WORKERS", "0",
            "SOLVER.EPOCHS", str(epochs), "SOLVER.BATCH_SIZE", "32", "TEST.BATCH_SIZE", "32",
            "OUTPUT_DIR", out_dir]


def read_metrics(out_dir: str):
    """The records of ``out_dir/metrics.json`` (one JSON object per line)."""
    with open(os.path.join(out_dir, "metrics.json")) as f:
        return [json.loads(line) for line in f if line.strip()]


def subprocess_env():
    """Environment for child processes: one thread each, the repo importable."""
    return dict(os.environ, OMP_NUM_THREADS="1",
                PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
