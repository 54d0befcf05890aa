"""A quick check on real data: scikit-learn's ``load_digits`` (1,797 8x8 images, 10 classes).

    python -m kd_det.classification.digits [--out output/classification/digits] [KEY VALUE ...]

writes the images as CIFAR-format pickles (``write_digits``), then trains, with the configs of
``configs/classification/digits/``: the resnet20 teacher, the resnet8 student alone, and the
student distilled with KD, DCD and CKD. It prints one line per run and writes
``results.json``; the accuracies are whatever the runs give (no threshold is involved).
"""
import argparse
import json
import logging
import os
from typing import Dict, List, Sequence

import numpy as np

from ..config.classification import load_cls_config
from .data import write_cifar_pickles

__all__ = ["write_digits", "run_digits", "RUNS"]

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "classification", "digits")
RUNS = ("teacher", "student", "kd", "dcd", "ckd")


def write_digits(folder: str, seed: int = 0, test_fraction: float = 0.25) -> str:
    """Write ``load_digits`` as ``folder/cifar-100-python/{train,test}`` (32x32 RGB uint8).

    Each 8x8 image (values 0..16) is scaled to 0..255, upsampled 4x (nearest) and copied to
    the three channels; the split is stratified with ``seed``. Returns the folder.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)        # (N, 8, 8)
    images = np.kron(images, np.ones((1, 4, 4), np.uint8))                     # (N, 32, 32)
    images = np.repeat(images[..., None], 3, axis=3)                           # (N, 32, 32, 3)
    x_tr, x_te, y_tr, y_te = train_test_split(images, digits.target, test_size=test_fraction,
                                              random_state=seed, stratify=digits.target)
    write_cifar_pickles(folder, (x_tr, y_tr), (x_te, y_te), num_classes=10)
    return folder


def run_digits(out: str, runs: Sequence[str] = RUNS, opts: Sequence[str] = ()) -> Dict[str, Dict]:
    """Write the data under ``out/data`` and train ``runs`` in order; returns run -> metrics.

    Args:
        out: output folder (each run in ``out/<run>``).
        runs: names of configs in ``configs/classification/digits`` (the teacher first).
        opts: extra ``KEY VALUE`` overrides applied to every run (e.g. SOLVER.EPOCHS 2).
    """
    from .engine import train

    data = write_digits(os.path.join(out, "data"))
    teacher = os.path.join(out, "teacher", "model_final.pth")
    results: Dict[str, Dict] = {}
    for name in runs:
        overrides: List[str] = ["DATA.ROOT", data, "OUTPUT_DIR", os.path.join(out, name),
                                "KD.TEACHER.WEIGHTS", teacher, *opts]
        cfg = load_cls_config(os.path.join(CONFIG_DIR, f"{name}.yaml"), overrides)
        cfg.freeze()
        results[name] = train(cfg)
        results[name]["arch"] = cfg.MODEL.ARCH
        print(f"digits {name:8s} {cfg.MODEL.ARCH:9s} top-1 {results[name]['top1']:6.2f} %  "
              f"(best {results[name]['best_top1']:6.2f} %)", flush=True)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    return results


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="Distillation on scikit-learn's digits (real data).")
    p.add_argument("--out", default="output/classification/digits")
    p.add_argument("--runs", nargs="+", default=list(RUNS), choices=RUNS)
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides for every run")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s", datefmt="%H:%M:%S")
    run_digits(args.out, args.runs, args.opts)


if __name__ == "__main__":
    main()
