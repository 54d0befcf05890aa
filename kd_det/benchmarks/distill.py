"""``python tools/benchmark.py distill``: a distillation step against its parts, on one batch.

Measured side by side in one process, same weights, same batch (medians of ``--steps``):

* (a) a plain student training step (GeneralizedRCNN forward + backward; no optimizer update);
* (b) a teacher inference forward (eval mode, ``torch.no_grad``);
* (c) a DistillRCNN training step for each method;
* with ``--amp``, also (c) under autocast (``--amp-dtype``, bfloat16 by default: with random weights
  a float16 R-101 teacher overflows to Inf, which trained weights do not), as a row "<method> amp"
  with its speed-up over float32.

Prints c / (a + b) per method (the target is <= 1.05 for logit losses and <= 1.10 with feature
losses) and peak memory (CUDA: max allocated per phase; CPU: process peak RSS after each phase,
which only grows, so on CPU it is an upper bound). Functions are timed in turns after warm-up.
Weights are random: speed does not depend on them.
"""
import argparse
import json
import os
import resource
import statistics
import tempfile
import time

import torch

import kd_det
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from ..engine.setup import load_config

REPO = kd_det.REPO_ROOT
PAIR_DIR = "configs/COCO-Detection/distill/R101-R18"


def _batch(n, h, w, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        inst = Instances((h, w))
        xy = torch.rand(8, 2, generator=g) * torch.tensor([w * 0.7, h * 0.7])
        wh = 20 + torch.rand(8, 2, generator=g) * torch.tensor([w * 0.3, h * 0.3])
        inst.gt_boxes = Boxes(torch.cat([xy, xy + wh], 1))
        inst.gt_classes = torch.randint(0, 80, (8,), generator=g)
        out.append({"image": torch.randint(0, 255, (3, h, w), generator=g).float(), "instances": inst.to(device)})
    return out


def _sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _peak_mb(device):
    if device.startswith("cuda"):
        mb = torch.cuda.max_memory_allocated() / 2**20
        torch.cuda.reset_peak_memory_stats()
        return mb
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _round_robin(fns, steps, device):
    """Median seconds per function, timed in turns (a, b, c1, c2, ... repeated) after two warm-ups each,
    so slow drifts of the machine hit every figure alike; peak memory per function (see module doc)."""
    for _ in range(2):
        for fn in fns.values():
            fn()
    times = {k: [] for k in fns}
    peaks = {}
    _peak_mb(device)
    for _ in range(steps):
        for k, fn in fns.items():
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[k].append(time.perf_counter() - t0)
            peaks[k] = max(peaks.get(k, 0.0), _peak_mb(device))
    return {k: statistics.median(v) for k, v in times.items()}, peaks


def _train_step(model, batch, amp_device=None, dtype=torch.bfloat16):
    """Forward + backward of a training step (no optimizer update, so random weights never diverge)."""
    def step():
        with EventStorage(), torch.autocast(amp_device or "cpu", dtype=dtype, enabled=amp_device is not None):
            loss = sum(model(batch).values())
        model.zero_grad(set_to_none=True)
        loss.backward()
    return step


def main(argv):
    p = argparse.ArgumentParser(prog="benchmark.py distill", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default="dkd,ckd,dcd,reviewkd,ckd_reviewkd,dkd_reviewkd",
                   help=f"config names under {PAIR_DIR}")
    p.add_argument("--images", type=int, default=2)
    p.add_argument("--size", default="512x640", help="HxW of the batch images")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--amp", action="store_true", help="also time each method under autocast")
    p.add_argument("--amp-dtype", default="bfloat16", choices=["bfloat16", "float16"])
    p.add_argument("--json", help="also save the figures here")
    a = p.parse_args(argv)
    h, w = (int(v) for v in a.size.split("x"))
    dev = a.device
    batch = _batch(a.images, h, w, dev)
    base = ["MODEL.DEVICE", dev, "MODEL.WEIGHTS", ""]
    with tempfile.TemporaryDirectory() as tmp:
        teacher_cfg = load_config(os.path.join(REPO, "configs/COCO-Detection/faster_rcnn_R_101_FPN_3x.yaml"), base)
        DetectionCheckpointer(build_model(teacher_cfg), save_dir=tmp).save("teacher")
        teacher_w = os.path.join(tmp, "teacher.pth")
        student = build_model(load_config(os.path.join(REPO, PAIR_DIR, "student.yaml"), base)).train()
        models = {m: build_model(load_config(os.path.join(REPO, PAIR_DIR, f"{m}.yaml"),
                                             base + ["KD.TEACHER.WEIGHTS", teacher_w])).train()
                  for m in a.methods.split(",")}
        teacher = next(iter(models.values())).teacher
        inputs = [{"image": x["image"]} for x in batch]

        def teacher_forward():
            with torch.no_grad():
                teacher(inputs)
        fns = {"a": _train_step(student, batch), "b": teacher_forward}
        for name, model in models.items():
            model.load_state_dict(student.state_dict(), strict=False)
            fns[name] = _train_step(model, batch)
            if a.amp:
                fns[f"{name} amp"] = _train_step(model, batch, dev.split(":")[0], getattr(torch, a.amp_dtype))
        times, peaks = _round_robin(fns, a.steps, dev)
    t_a, t_b, mem_a, mem_b = times["a"], times["b"], peaks["a"], peaks["b"]
    names = [n for m in models for n in ([m, f"{m} amp"] if a.amp else [m])]
    rows = [{"method": m, "c_s": times[m], "ratio": times[m] / (t_a + t_b), "peak_mb": peaks[m],
             "amp_speedup": times[m.split(" ")[0]] / times[m] if m.endswith(" amp") else None} for m in names]
    print(f"device: {dev} ({torch.get_num_threads()} threads), {a.images} images {h}x{w}, R-101-FPN teacher -> "
          f"R-18-FPN student, median of {a.steps} steps" + (f", amp = {a.amp_dtype} autocast" if a.amp else ""))
    cuda = dev.startswith("cuda")
    mb = (lambda v: f"{v:8.0f}") if cuda else (lambda v: "       -")
    print(f"(a) student train step      {t_a:8.3f} s   peak {mb(mem_a)} MB")
    print(f"(b) teacher inference fwd   {t_b:8.3f} s   peak {mb(mem_b)} MB")
    print(f"{'method':<20}{'(c) s':>9}{'c/(a+b)':>10}{'peak MB':>10}{'amp speed-up':>14}")
    for r in rows:
        up = f"{r['amp_speedup']:14.2f}" if r["amp_speedup"] else ""
        print(f"{r['method']:<20}{r['c_s']:9.3f}{r['ratio']:10.3f}{mb(r['peak_mb']):>10}{up}")
    if not cuda:
        print(f"CPU: per-phase peaks are not separable (RSS only grows); process peak RSS {_peak_mb(dev):.0f} MB "
              "with every model of this run loaded at once.")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"device": dev, "a_s": t_a, "b_s": t_b, "peak_a_mb": mem_a, "peak_b_mb": mem_b,
                       "methods": rows}, f, indent=2)
    return 0
