"""``python tools/benchmark.py data``: detection data loading throughput, images/s per worker count.

Detectron2's train loader (``build_detection_train_loader``: json -> dataset dicts ->
``DatasetMapper`` with the config's resize / flip -> aspect-ratio grouped batches) is built
from a detection config (default: the shapes config) once per ``--workers`` value. After
``--warmup`` batches (worker start-up excluded), ``--batches`` batches are timed; the
figure is images/s, and the ratio of the largest worker count to ``0`` (loading in the
training process). On a machine with CUDA, each batch's images are also copied to the GPU
inside the timed loop, as training does; the device column says so.
"""
from __future__ import annotations

import argparse
import os
import time

import kd_det  # noqa: F401  (applies kd_det.compat before Detectron2 is imported)
from kd_det.errors import UserError

ROOT = kd_det.REPO_ROOT
DEFAULT_CONFIG = os.path.join(ROOT, "configs", "shapes", "faster_rcnn_R_18_FPN_shapes.yaml")


def _parse(argv):
    p = argparse.ArgumentParser(prog="benchmark.py data", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=DEFAULT_CONFIG, help="detection config whose DATASETS.TRAIN is loaded")
    p.add_argument("--workers", default="0,2", help="DATALOADER.NUM_WORKERS values to compare (comma list)")
    p.add_argument("--batches", type=int, default=100, help="timed batches per worker count")
    p.add_argument("--warmup", type=int, default=5, help="batches before timing starts")
    p.add_argument("--batch-size", type=int, default=None, help="SOLVER.IMS_PER_BATCH (default: the config's)")
    p.add_argument("--root", default=None, help="dataset root (default: $DETECTRON2_DATASETS or datasets/)")
    p.add_argument("--device", default="auto", help="copy batches to this device: cpu, cuda or auto")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    return p.parse_args(argv)


def _cfg(args, workers):
    from kd_det.detection.data.datasets import setup_datasets
    from kd_det.config.detection import load_config

    cfg = load_config(args.config, ["DATALOADER.NUM_WORKERS", str(workers)])
    if args.batch_size:
        cfg.SOLVER.IMS_PER_BATCH = args.batch_size
    setup_datasets(cfg)  # builds the shapes set on first use, fails in one sentence on a missing path
    return cfg


def measure(cfg, batches, warmup, device):
    """Images/s of ``cfg``'s train loader over ``batches`` batches after ``warmup`` ones.

    Args:
        cfg: a detection config (``DATASETS.TRAIN``, ``DATALOADER.NUM_WORKERS``, ``SOLVER.IMS_PER_BATCH``).
        batches: timed batches.
        warmup: batches drawn before timing (worker start-up, first file reads).
        device: a torch device; for "cuda" each image tensor is copied there in the timed loop.

    Returns:
        (float, int): images per second and the number of images timed.
    """
    import torch
    from detectron2.data import build_detection_train_loader

    from ..detection.data import CheckedDatasetMapper

    loader = build_detection_train_loader(cfg, mapper=CheckedDatasetMapper(cfg, True))  # what training maps with
    it = iter(loader)
    try:
        for _ in range(warmup):
            next(it)
        images = 0
        start = time.perf_counter()
        for _ in range(batches):
            batch = next(it)
            if device.type == "cuda":
                for d in batch:
                    d["image"].to(device, non_blocking=True)
            images += len(batch)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return images / (time.perf_counter() - start), images
    finally:
        del it  # shuts the worker processes down


def main(argv: list[str]) -> int:
    import logging

    import torch

    args = _parse(argv)
    if args.root:
        from kd_det.detection.data.datasets import register_shapes

        register_shapes(os.path.abspath(args.root))
    workers = [int(w) for w in args.workers.split(",") if w.strip()]
    want = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(want)
    where = (f"cpu loading + copy to {torch.cuda.get_device_name(device)}" if device.type == "cuda"
             else "cpu")
    logging.getLogger("detectron2").setLevel(logging.WARNING)  # no dataset histogram per loader
    print(f"device: {where}; {os.cpu_count()} cores; torch {torch.__version__}; config {os.path.relpath(args.config)}")
    header = f"{'figure':<34} {'value':>9} {'unit':<9} device"
    print(header + "\n" + "-" * len(header))
    rows = []
    for w in workers:
        try:
            cfg = _cfg(args, w)
        except UserError as e:
            print(f"benchmark.py data: error: {e}")
            return 2
        ips, n = measure(cfg, args.batches, args.warmup, device)
        rows.append({"figure": f"train loader, NUM_WORKERS {w}", "value": round(ips, 1), "unit": "images/s",
                     "images": n, "batch": cfg.SOLVER.IMS_PER_BATCH, "dataset": cfg.DATASETS.TRAIN[0], "device": where})
        print(f"{rows[-1]['figure']:<34} {ips:>9.1f} {'images/s':<9} {where}", flush=True)
    ratio = None
    if 0 in workers and max(workers) > 0:
        ratio = rows[workers.index(max(workers))]["value"] / rows[workers.index(0)]["value"]
        rows.append({"figure": f"ratio {max(workers)} workers / 0", "value": round(ratio, 2), "unit": "x",
                     "device": where})
        print(f"{rows[-1]['figure']:<34} {ratio:>9.2f} {'x':<9} {where}")
    if args.json:
        import json

        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"benchmark": "data", "device": where, "torch": torch.__version__, "cores": os.cpu_count(),
                       "rows": rows, "ratio": ratio}, f, indent=2)
        print(f"wrote {args.json}")
    return 0
