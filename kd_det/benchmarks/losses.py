"""``python tools/benchmark.py losses``: forward + backward time and peak memory of every loss
at detection sizes.

* Logit losses (KD, DKD, CKD, DCD): 81-class R-CNN logits for ``--rois`` (512) RoIs per image
  and ``--sizes`` (2, 8, 16) images per step, i.e. N = 1,024 / 4,096 / 8,192 rows. CKD and
  DCD build N x N matrices (8,192 rows: 268 MB per fp32 matrix); above ``--chunk-size``
  (4,096, the losses' default) rows they run blocked, and the whole-matrix variant is timed
  beside it.
* Feature losses (HCL, ReviewKD, FitNet, FGFI, MSD): FPN p2..p6, 256 channels, for
  ``--fpn-images`` (2) images of ``--image-size`` (800x1333, padded to a multiple of 32).
* CRD at CIFAR-100 size (batch 64, 50,000-sample memory bank, K = 16,384) for reference.

Time: median of ``--repeats`` runs after one warm-up run. Peak memory: extra bytes allocated
during one forward + backward over what existed before it (CUDA: ``max_memory_allocated``;
CPU: the torch profiler's allocation trace). Student tensors require grad, teacher tensors do
not; learnable loss parts (projections, ABF, adapters) get gradients too.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import tempfile
import time

import torch

from kd_det.losses import LOSS_REGISTRY, build_loss, hcl_loss


def _needing_only(inputs):
    """Registered losses whose always-required inputs are all among ``inputs``, in registry order."""
    return tuple(n for n, c in LOSS_REGISTRY.items() if set(c.INPUTS) - set(c.OPTIONAL_INPUTS) <= set(inputs))


# Every registered loss fed by (N, K) rows (logits; DCD-style embeddings get the logits) or by FPN
# maps is timed; CRD (it needs dataset indices) has its own CIFAR-size case.
LOGIT_LOSSES = _needing_only(("logits_s", "logits_t", "target", "emb_s", "emb_t"))
FEATURE_LOSSES = ("hcl",) + _needing_only(("feats_s", "feats_t", "anchors", "gt_boxes"))
ALL = LOGIT_LOSSES + FEATURE_LOSSES + ("crd",)
# Detection settings where they differ from the defaults (CIFAR ones).
_PARAMS = {"kd": {"temperature": 1.0}, "dkd": {"alpha": 1.0, "beta": 0.25, "temperature": 1.0},
           "msd": {"sample_classification": False}}


def _parse(argv):
    p = argparse.ArgumentParser(prog="benchmark.py losses", description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="2,8,16", help="images per step for the logit losses (comma list)")
    p.add_argument("--rois", type=int, default=512, help="sampled RoIs per image")
    p.add_argument("--classes", type=int, default=81, help="logit columns (K + 1, background last)")
    p.add_argument("--fpn-images", type=int, default=2, help="images for the feature losses")
    p.add_argument("--image-size", default="800x1333", help="HxW input size for the FPN maps")
    p.add_argument("--channels", type=int, default=256, help="FPN channels (student and teacher)")
    p.add_argument("--chunk-size", type=int, default=4096,
                   help="CKD / DCD block rows; above it both blocked and whole-matrix runs are timed")
    p.add_argument("--losses", default=",".join(ALL), help=f"subset of {','.join(ALL)}")
    p.add_argument("--repeats", type=int, default=None, help="timed runs (default 1 on CPU, 5 on CUDA)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    return p.parse_args(argv)


@contextlib.contextmanager
def _quiet_stderr():
    """Silence the profiler's C++ log lines (they go straight to fd 2)."""
    saved = os.dup(2)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _peak_bytes(step, device):
    if device.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    from torch.profiler import ProfilerActivity, profile

    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "trace.json")
        with _quiet_stderr():
            prof.export_chrome_trace(path)
        with open(path) as f:
            events = json.load(f)["traceEvents"]
    totals = [e["args"]["Total Allocated"] for e in events
              if e.get("name") == "[memory]" and e.get("args", {}).get("Device Type") == 0]
    return max([0] + totals)


def _measure(make_step, device, repeats):
    """make_step() -> a closure doing one forward + backward; returns (median ms, peak MB)."""
    step = make_step()
    peak = _peak_bytes(step, device)                    # also the warm-up run
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), peak / 2 ** 20


def _step(loss_fn, student, params=()):
    """Forward + backward; gradients are dropped after each run."""
    def step():
        value = loss_fn()
        value.backward()
        for t in list(student) + list(params):
            t.grad = None
    return step


def _logit_cases(args, device):
    k = args.classes
    for images in [int(s) for s in args.sizes.split(",") if s]:
        n = images * args.rois
        g = torch.Generator(device="cpu").manual_seed(0)
        s = torch.randn(n, k, generator=g).to(device).requires_grad_(True)
        t = torch.randn(n, k, generator=g).to(device)
        y = torch.randint(0, k, (n,), generator=g).to(device)
        setting = f"{images} img x {args.rois} RoIs = {n} x {k}"
        tensors = {"logits_s": s, "logits_t": t, "target": y, "emb_s": s, "emb_t": t}
        shapes = {key: k for key in tensors if key != "target"}
        for name in LOGIT_LOSSES:
            if name not in args.losses:
                continue
            cls = LOSS_REGISTRY[name]
            variants = [("", {})]
            if "chunk_size" in cls.param_names() and n > args.chunk_size:
                variants = [(f"blocked {args.chunk_size}", {"chunk_size": args.chunk_size}),
                            ("whole matrix", {"chunk_size": 0})]
            for note, extra in variants:
                loss = build_loss(name, **cls.shape_params(shapes), **_PARAMS.get(name, {}), **extra).to(device)
                call = lambda l=loss: l(**{arg: tensors[arg] for arg in l.required_inputs()})
                yield name, setting, note or (f"proj {k}->128" if name == "dcd" else ""), \
                    (lambda c=call, l=loss: _step(c, [s], l.parameters()))


def _fpn_inputs(args, device):
    h, w = (int(v) for v in args.image_size.lower().split("x"))
    h, w = -(-h // 32) * 32, -(-w // 32) * 32
    g = torch.Generator(device="cpu").manual_seed(1)
    c, b = args.channels, args.fpn_images
    sizes = [(-(-h // s), -(-w // s)) for s in (4, 8, 16, 32, 64)]
    names = ["p2", "p3", "p4", "p5", "p6"]
    fs = {n: torch.randn(b, c, *hw, generator=g).to(device).requires_grad_(True) for n, hw in zip(names, sizes)}
    ft = {n: torch.randn(b, c, *hw, generator=g).to(device) for n, hw in zip(names, sizes)}
    anchors = {}
    for n, (fh, fw), stride, size in zip(names, sizes, (4, 8, 16, 32, 64), (32, 64, 128, 256, 512)):
        base = torch.tensor([[-size * r ** -0.5 / 2, -size * r ** 0.5 / 2, size * r ** -0.5 / 2, size * r ** 0.5 / 2]
                             for r in (0.5, 1.0, 2.0)])
        ys, xs = torch.meshgrid(torch.arange(fh) * stride, torch.arange(fw) * stride, indexing="ij")
        shifts = torch.stack([xs, ys, xs, ys], dim=-1).reshape(-1, 1, 4).float()
        anchors[n] = (shifts + base).reshape(-1, 4).to(device)
    gts = []
    for _ in range(b):
        xy = torch.rand(8, 2, generator=g) * torch.tensor([w * 0.7, h * 0.7])
        wh = torch.rand(8, 2, generator=g) * torch.tensor([w * 0.3, h * 0.3]) + 16
        gts.append(torch.cat([xy, xy + wh], dim=1).to(device))
    return fs, ft, anchors, gts, f"{b} img {h}x{w}, p2..p6 x {c} ch"


def _feature_cases(args, device):
    wanted = [n for n in FEATURE_LOSSES if n in args.losses]
    if not wanted:
        return
    fs, ft, anchors, gts, setting = _fpn_inputs(args, device)
    chans = [args.channels] * 5
    tensors = {"feats_s": fs, "feats_t": ft, "anchors": anchors, "gt_boxes": gts}
    for name in wanted:
        if name == "hcl":
            yield name, setting, "HCL only, no ABF", lambda: _step(lambda: hcl_loss(fs, ft), fs.values())
            continue
        params = LOSS_REGISTRY[name].shape_params({"feats_s": chans, "feats_t": chans})
        loss = build_loss(name, **params, **_PARAMS.get(name, {})).to(device)
        call = lambda l=loss: l(**{arg: tensors[arg] for arg in l.required_inputs()})
        note = {"reviewkd": "ABF + HCL", "fitnet": "1x1 adapters", "fgfi": "3x3 adapters, 8 GT/img",
                "msd": "ABP, grids 1,2,4, no classifier"}.get(name, "")
        yield name, setting, note, (lambda c=call, l=loss: _step(c, fs.values(), l.parameters()))


def _crd_cases(args, device):
    if "crd" not in args.losses:
        return
    g = torch.Generator(device="cpu").manual_seed(2)
    s = torch.randn(64, 64, generator=g).to(device).requires_grad_(True)
    t = torch.randn(64, 256, generator=g).to(device)
    index = torch.randint(0, 50000, (64,), generator=g).to(device)
    loss = build_loss("crd", in_dim_s=64, in_dim_t=256, num_samples=50000).to(device)
    yield "crd", "CIFAR: batch 64, 64/256-d, bank 50000", "K = 16384", \
        lambda: _step(lambda: loss(s, t, index), [s], loss.parameters())


def _device(arg):
    if arg == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(arg)


def _device_name(device):
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


def main(argv: list[str]) -> int:
    args = _parse(argv)
    args.losses = {n.strip() for n in args.losses.split(",") if n.strip()}
    unknown = sorted(args.losses - set(ALL))
    if unknown:
        print(f"benchmark.py losses: unknown loss(es) {unknown}; known: {', '.join(ALL)}.")
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    device = _device(args.device)
    repeats = args.repeats or (5 if device.type == "cuda" else 1)
    print(f"device: {_device_name(device)}; torch {torch.__version__}; median of {repeats} run(s) after a warm-up")
    header = f"{'loss':<9} {'setting':<38} {'note':<32} {'fwd+bwd ms':>11} {'peak MB':>9}"
    print(header + "\n" + "-" * len(header))
    rows = []
    for cases in (_logit_cases(args, device), _feature_cases(args, device), _crd_cases(args, device)):
        for name, setting, note, make_step in cases:
            ms, mb = _measure(make_step, device, repeats)
            rows.append({"loss": name, "setting": setting, "note": note, "ms": round(ms, 2), "peak_mb": round(mb, 1)})
            print(f"{name:<9} {setting:<38} {note:<32} {ms:>11.1f} {mb:>9.1f}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": _device_name(device), "torch": torch.__version__, "repeats": repeats, "rows": rows},
                      f, indent=2)
        print(f"wrote {args.json}")
    return 0
