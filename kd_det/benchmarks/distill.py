"""``python tools/benchmark.py distill``: a distillation step against its parts, on one batch.

Measured side by side in one process, same weights, same batch (medians of ``--steps``):

* (a) a plain student training step (GeneralizedRCNN forward + backward; no optimizer update);
* (b) a teacher inference forward (eval mode, ``torch.no_grad``: backbone, RPN, box head on its
  proposals, post-processing; a dense teacher: backbone, head, post-processing);
* (c) a distillation training step for each method (DistillRCNN; DistillRetinaNet / DistillFCOS with
  ``--pair`` a dense pair's folder);
* with ``--amp``, also (c) under autocast (``--amp-dtype``, bfloat16 by default: with ``--raw-init``
  a float16 R-101 teacher overflows to Inf, which trained weights do not), as a row "<method> amp"
  with its speed-up over float32;
* with ``--teacher-precision`` / ``--teacher-channels-last``, also (b) and each (c) with the teacher alone in
  that precision / memory format (``KD.TEACHER.PRECISION`` / ``CHANNELS_LAST``, the student in float32), as
  rows "(b) <mode>" and "<method> <mode>"; their c / (a + b) keeps the float32 (b) in the denominator, so a
  ratio below the float32 row's is the time the teacher's mode saves.

Prints c / (a + b) per method (the target is <= 1.05 for logit losses and <= 1.10 with feature
losses) and peak memory (CUDA: max allocated per phase; CPU: process peak RSS after each phase,
which only grows, so on CPU it is an upper bound). Functions are timed in turns after warm-up.
On CPU every figure is given twice: wall time, and process CPU time (all threads), which other
processes on a shared machine disturb much less.
Images are random 0..255 pixels; every model normalises them with its own config's ``PIXEL_MEAN`` /
``PIXEL_STD`` / ``INPUT.FORMAT`` (the pair's real configs: the R-18 student reads RGB with
torchvision mean / std, the R-101 teacher BGR with Detectron2's), printed as "inputs".

Weights are random (Detectron2's initialisation), with the frozen BatchNorm statistics of teacher and
student then set from this batch (each ``FrozenBatchNorm2d`` normalises its input, as trained weights
do): with the raw initialisation the R-101 teacher's activations grow to ~1e7, its RPN keeps no
proposal, and (b) would skip the box head and the post-processing that a trained teacher runs on
1,000 proposals per image. ``--raw-init`` keeps the raw initialisation. ``--teacher-weights`` loads a
trained teacher instead (a small teacher whose random weights keep only a few proposals on the batch,
such as the shapes one, otherwise understates (b) and the RoI losses' work). The teacher's proposals and
detections per image in (b) are printed and saved.

Phase breakdown (medians over the same steps): forward hooks that only this benchmark installs
(on each DistillRCNN's ``distill`` module and on the teacher's parts) time the distillation
losses' forward and the teacher's forward inside a step; "student fwd" is the rest of the
forward (preprocessing, backbone, RPN, RoI sampling and head, detection losses); "backward" is
``loss.backward()`` (there is no optimizer update). CPU: ``time.perf_counter`` and
``time.process_time``; CUDA: CUDA events (no synchronisation inside a step). The machine's load
average before and after the run, its core count and torch's thread count are printed and saved;
a load above the core count means other processes shared the CPU and the timings mean little (a
warning says so).

``--profile N``: after the timing, one more step of (a) and of each method (``--profile-repeats``
steps: each operator keeps its least time) runs under ``torch.profiler`` (CPU operators) and the
N operators with the most self CPU time are printed, for each method beside (a) with the
difference (what the method adds). Trailing ``KEY VALUE`` pairs override the student configs.
"""
import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from contextlib import contextmanager

import torch

import kd_det
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage

from ..detection import modeling  # noqa: F401  (registers DistillRCNN and the MobileNetV2-FPN backbone)
from ..config.detection import load_config, num_classes

REPO = kd_det.REPO_ROOT
PAIR_DIR = "configs/COCO-Detection/distill/R101-R18"


def _batch(n, h, w, device, classes=80, masks=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        inst = Instances((h, w))
        xy = torch.rand(8, 2, generator=g) * torch.tensor([w * 0.7, h * 0.7])
        wh = 20 + torch.rand(8, 2, generator=g) * torch.tensor([w * 0.3, h * 0.3])
        inst.gt_boxes = Boxes(torch.cat([xy, xy + wh], 1))
        inst.gt_classes = torch.randint(0, classes, (8,), generator=g)
        if masks:  # a Mask R-CNN student: each box filled as its instance mask
            ys, xs = torch.arange(h)[None, :, None], torch.arange(w)[None, None, :]
            b = inst.gt_boxes.tensor[:, :, None, None]
            inst.gt_masks = BitMasks((xs >= b[:, 0]) & (xs < b[:, 2]) & (ys >= b[:, 1]) & (ys < b[:, 3]))
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


class PhaseClock:
    """Time of the phases of one step, from hooks the benchmark installs (never in the model).

    ``attach(phase, modules)`` registers forward pre/post hooks on ``modules``; time spent inside
    the outermost of them is added to ``phase`` (nested calls are counted once). ``phase(name)``
    times a block. ``take()`` returns ({phase: wall seconds}, {phase: process CPU seconds}) since
    the last ``take()`` and resets. CPU: ``time.perf_counter`` and ``time.process_time``; CUDA:
    events, resolved in ``take()`` after the caller's sync (no CPU-time figures then).
    """

    def __init__(self, device):
        self.cuda = device.startswith("cuda")
        self.depth, self.start, self.spans, self.handles = Counter(), {}, defaultdict(list), []

    def _now(self):
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            return ev
        return time.perf_counter(), time.process_time()

    #: phase -> the phase it is not counted inside (the teacher's modules that CrossKD's cross-head pass runs are
    #: that pass's time, not the teacher's forward)
    SHADOWED = {"teacher": "cross"}

    def _enter(self, phase):
        if self.depth[self.SHADOWED.get(phase, "")]:
            return
        if self.depth[phase] == 0:
            self.start[phase] = self._now()
        self.depth[phase] += 1

    def _exit(self, phase):
        if self.depth[self.SHADOWED.get(phase, "")]:
            return
        self.depth[phase] -= 1
        if self.depth[phase] == 0:
            self.spans[phase].append((self.start.pop(phase), self._now()))

    def attach(self, phase, modules):
        for m in modules:
            self.handles.append(m.register_forward_pre_hook(lambda mod, args, p=phase: self._enter(p)))
            self.handles.append(m.register_forward_hook(lambda mod, args, out, p=phase: self._exit(p)))

    def timed(self, name, fn):
        """``fn`` wrapped to count as phase ``name`` (for a step that is a method, not a module)."""
        def run(*args, **kwargs):
            with self.phase(name):
                return fn(*args, **kwargs)
        return run

    @contextmanager
    def phase(self, name):
        self._enter(name)
        try:
            yield
        finally:
            self._exit(name)

    def take(self):
        wall, cpu = {}, {}
        for phase, spans in self.spans.items():
            if self.cuda:
                wall[phase] = sum(a.elapsed_time(b) / 1000 for a, b in spans)
            else:
                wall[phase] = sum(b[0] - a[0] for a, b in spans)
                cpu[phase] = sum(b[1] - a[1] for a, b in spans)
        self.spans.clear()
        return wall, cpu

    def remove(self):
        for h in self.handles:
            h.remove()
        self.handles.clear()


def teacher_parts(teacher):
    """The teacher's modules down to depth 3 (backbone, RPN, box pooler / head / predictor, and the layers of a dense
    head's branches, which the dense wrappers run one by one): the wrappers call them, never ``teacher.forward``;
    nested calls count once."""
    return [m for name, m in teacher.named_modules() if name and name.count(".") <= 2]


def breakdown(phases):
    """Raw {forward, backward, teacher, losses} seconds of one step -> the reported phases."""
    fwd = phases.get("forward", 0.0)
    teacher, losses, cross = phases.get("teacher", 0.0), phases.get("losses", 0.0), phases.get("cross", 0.0)
    out = {"student_fwd_s": max(fwd - teacher - losses - cross, 0.0), "teacher_fwd_s": teacher,
           "losses_fwd_s": losses, "backward_s": phases.get("backward", 0.0)}
    if "cross" in phases:  # CrossKD: the teacher's head layers run on the student's features (with gradients)
        out["cross_fwd_s"] = cross
    return out


def _round_robin(fns, steps, device, clock=None):
    """Functions timed in turns (a, b, c1, c2, ... repeated) after two warm-ups each, so slow drifts
    of the machine hit every figure alike. Returns {"time": median wall s, "cpu": median process CPU s
    (CPU only), "peak": peak MB (see module doc), "phases" / "phases_cpu": median s of each phase
    (:func:`breakdown`)}, each keyed by function name."""
    clock = clock or PhaseClock(device)
    for _ in range(2):
        for fn in fns.values():
            fn()
            _sync(device)
            clock.take()
    raw = {key: {k: [] for k in fns} for key in ("time", "cpu")}
    phases = {key: {k: defaultdict(list) for k in fns} for key in ("phases", "phases_cpu")}
    peaks = {}
    _peak_mb(device)
    for _ in range(steps):
        for k, fn in fns.items():
            _sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            _sync(device)
            raw["time"][k].append(time.perf_counter() - t0)
            raw["cpu"][k].append(time.process_time() - c0)
            for key, ph in zip(("phases", "phases_cpu"), clock.take()):
                if ph:
                    for name, sec in breakdown(ph).items():
                        phases[key][k][name].append(sec)
            peaks[k] = max(peaks.get(k, 0.0), _peak_mb(device))
    out = {key: {k: statistics.median(v) for k, v in d.items()} for key, d in raw.items()}
    if device.startswith("cuda"):
        out["cpu"] = {}
    out.update({key: {k: {n: statistics.median(v) for n, v in ph.items()} for k, ph in d.items()}
                for key, d in phases.items()})
    out["peak"] = peaks
    return out


def _train_step(model, batch, amp_device=None, dtype=torch.bfloat16, clock=None):
    """Forward + backward of a training step (no optimizer update, so random weights never diverge)."""
    clock = clock or PhaseClock("cpu")

    def step():
        with EventStorage(), torch.autocast(amp_device or "cpu", dtype=dtype, enabled=amp_device is not None):
            with clock.phase("forward"):
                loss = sum(model(batch).values())
        model.zero_grad(set_to_none=True)
        with clock.phase("backward"):
            loss.backward()
    return step


def machine_load():
    """Load average (1, 5, 15 min), cores, cores this process may use, torch threads."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count()
    return {"loadavg": [round(v, 2) for v in os.getloadavg()], "cores": os.cpu_count(), "usable_cores": usable,
            "torch_threads": torch.get_num_threads()}


def _op_table(fn, repeats=1):
    """``repeats`` calls of ``fn``, each under torch.profiler (CPU) -> {op: (self CPU seconds, calls)},
    the least self time of each operator over the calls (other processes only ever add time)."""
    from torch.profiler import ProfilerActivity, profile

    from .losses import _quiet_stderr

    out = {}
    for _ in range(max(1, repeats)):
        with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU]) as prof:
            fn()
        with _quiet_stderr():
            events = prof.key_averages()
        for e in events:
            sec = e.self_cpu_time_total / 1e6
            out[e.key] = (min(sec, out[e.key][0]), e.count) if e.key in out else (sec, e.count)
    return out


def profile_ops(fns, names, top, repeats=1):
    """Operator tables of one step of (a) and of each method in ``names`` -> {name: {self_cpu_total_ms, rows}}.

    Rows of (a): its ``top`` operators by self CPU time; rows of a method: its ``top`` operators by
    self CPU time added over (a), with (a)'s figures beside them."""
    tables = {k: _op_table(fns[k], repeats) for k in ["a"] + list(names)}
    base = tables["a"]
    out = {}
    for k, table in tables.items():
        ref = base if k != "a" else {}
        ops = sorted(set(table) | set(ref), key=lambda op: -(table.get(op, (0, 0))[0] - ref.get(op, (0, 0))[0]))
        rows = [{"op": op, "calls_a": base.get(op, (0, 0))[1], "calls": table.get(op, (0, 0))[1],
                 "self_ms_a": 1000 * base.get(op, (0, 0))[0], "self_ms": 1000 * table.get(op, (0, 0))[0]}
                for op in ops[:top]]
        out[k] = {"self_cpu_total_ms": 1000 * sum(v[0] for v in table.values()), "rows": rows}
    return out


def print_profile(profile):
    total_a = profile["a"]["self_cpu_total_ms"]
    for k, res in profile.items():
        if k == "a":
            print(f"\nprofile: (a) student step, self CPU total {total_a:.0f} ms")
            print(f"{'operator':<48}{'calls':>7}{'self ms':>10}")
            for r in res["rows"]:
                print(f"{r['op'][:47]:<48}{r['calls']:>7}{r['self_ms']:>10.1f}")
            continue
        print(f"\nprofile: {k} step, self CPU total {res['self_cpu_total_ms']:.0f} ms (a: {total_a:.0f} ms); "
              "operators by self CPU time added over (a)")
        print(f"{'operator':<48}{'calls a':>8}{'calls':>7}{'self ms a':>11}{'self ms':>10}{'added ms':>10}")
        for r in res["rows"]:
            print(f"{r['op'][:47]:<48}{r['calls_a']:>8}{r['calls']:>7}{r['self_ms_a']:>11.1f}{r['self_ms']:>10.1f}"
                  f"{r['self_ms'] - r['self_ms_a']:>10.1f}")


def calibrate_frozen_norms(model, batch):
    """Set every ``FrozenBatchNorm2d`` of ``model``'s backbone to normalise its input on ``batch`` (mean and
    variance over images and pixels, layer after layer in one forward); returns how many were set."""
    from detectron2.layers import FrozenBatchNorm2d

    def set_stats(module, args):
        x = args[0]
        module.running_mean.copy_(x.mean((0, 2, 3)))
        module.running_var.copy_(x.var((0, 2, 3)))
    norms = [m for m in model.backbone.modules() if isinstance(m, FrozenBatchNorm2d)]
    handles = [m.register_forward_pre_hook(set_stats) for m in norms]
    try:
        with torch.no_grad():
            model.backbone(model.preprocess_image(batch).tensor)
    finally:
        for h in handles:
            h.remove()
    return len(norms)


def _teacher_outputs(teacher, inputs):
    """Proposals and detections per image of one teacher inference (what (b) computes on)."""
    seen = {}

    def count(module, args, out):  # returns None: the output is left as it is
        seen["proposals"] = [len(p) for p in out[0]]
    if getattr(teacher, "proposal_generator", None) is None:  # a dense teacher: no proposals
        with torch.no_grad():
            return {"proposals": None, "detections": [len(o["instances"]) for o in teacher(inputs)]}
    handle = teacher.proposal_generator.register_forward_hook(count)
    try:
        with torch.no_grad():
            out = teacher(inputs)
    finally:
        handle.remove()
    return {"proposals": seen.get("proposals"), "detections": [len(o["instances"]) for o in out]}


def _inputs_of(model):
    return {"format": model.input_format, "pixel_mean": [round(float(v), 3) for v in model.pixel_mean.flatten()],
            "pixel_std": [round(float(v), 3) for v in model.pixel_std.flatten()]}


def _phase_cells(ph):
    return "".join(f"{ph[k]:>12.3f}" if k in ph else f"{'-':>12}"
                   for k in ("student_fwd_s", "teacher_fwd_s", "losses_fwd_s", "backward_s"))


def init_text(a):
    """How the benchmark's weights were set, for its printout."""
    student = "raw initialisation" if a.raw_init else "frozen BN calibrated on the batch"
    if a.teacher_weights:
        return f"teacher {a.teacher_weights}, student random ({student})"
    return f"random, {student}"


def main(argv):
    p = argparse.ArgumentParser(prog="benchmark.py distill", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default="dkd,ckd,dcd,reviewkd,ckd_reviewkd,dkd_reviewkd",
                   help="config names under --pair")
    p.add_argument("--pair", default=PAIR_DIR,
                   help=f"folder of a pair's configs: student.yaml + one per method (default {PAIR_DIR}; e.g. "
                        "configs/COCO-Detection/distill/RT101-RT50 for RetinaNet); the teacher is the methods' "
                        "KD.TEACHER.CONFIG_FILE")
    p.add_argument("--student", default=None,
                   help="the student config of (a) (default: <pair>/student.yaml), e.g. configs/shapes/fcos_R_18_FPN_shapes.yaml "
                        "with --pair configs/shapes/distill/dense")
    p.add_argument("--images", type=int, default=2)
    p.add_argument("--size", default="512x640", help="HxW of the batch images")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--raw-init", action="store_true",
                   help="keep Detectron2's raw random initialisation (no frozen-BN calibration; see above)")
    p.add_argument("--teacher-weights", metavar="PTH",
                   help="a trained teacher checkpoint (e.g. output/demo/teacher/model_final.pth) in place of random "
                        "weights: its proposals and detections, hence (b) and the RoI losses' work, are a trained "
                        "teacher's (the student stays random, as at the start of training)")
    p.add_argument("--amp", action="store_true", help="also time each method under autocast")
    p.add_argument("--amp-dtype", default="bfloat16", choices=["bfloat16", "float16"])
    p.add_argument("--teacher-precision", choices=["float32", "bfloat16", "float16"],
                   help="also time (b) and every method with the teacher alone in this precision "
                        "(KD.TEACHER.PRECISION)")
    p.add_argument("--teacher-channels-last", action="store_true",
                   help="... and with its weights in channels_last (KD.TEACHER.CHANNELS_LAST)")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="also print the N operators with the most self CPU time of one step of (a) and of each "
                        "method (torch.profiler, CPU)")
    p.add_argument("--profile-repeats", type=int, default=1, metavar="R",
                   help="profiled steps per function; each operator keeps its least self CPU time (robust to load)")
    p.add_argument("--json", help="also save the figures here")
    p.add_argument("opts", nargs=argparse.REMAINDER,
                   help="config overrides for the student of (a) and of every method (KEY VALUE ...), e.g. "
                        "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE 64; the teacher keeps its own config")
    a = p.parse_args(argv)
    if a.teacher_weights and not os.path.isfile(a.teacher_weights):
        raise SystemExit(f"benchmark.py distill: --teacher-weights {a.teacher_weights}: no such file.")
    if a.threads:
        torch.set_num_threads(a.threads)
    h, w = (int(v) for v in a.size.split("x"))
    dev = a.device
    load_before = machine_load()
    base = ["MODEL.DEVICE", dev, "MODEL.WEIGHTS", ""]
    pair, methods = os.path.join(REPO, a.pair), a.methods.split(",")
    student_file = os.path.join(REPO, a.student) if a.student else os.path.join(pair, "student.yaml")
    student_cfg = load_config(student_file, base + a.opts)
    batch = _batch(a.images, h, w, dev, classes=num_classes(student_cfg)[1], masks=student_cfg.MODEL.MASK_ON)
    clock = PhaseClock(dev)
    with tempfile.TemporaryDirectory() as tmp:
        teacher_file = load_config(os.path.join(pair, f"{methods[0]}.yaml")).KD.TEACHER.CONFIG_FILE
        teacher_cfg = load_config(os.path.join(REPO, teacher_file), base)
        teacher_model = build_model(teacher_cfg).eval()
        student = build_model(student_cfg).train()
        if a.teacher_weights:
            DetectionCheckpointer(teacher_model).load(a.teacher_weights)
        if not a.raw_init:
            if not a.teacher_weights:
                calibrate_frozen_norms(teacher_model, batch)
            calibrate_frozen_norms(student, batch)
        DetectionCheckpointer(teacher_model, save_dir=tmp).save("teacher")
        del teacher_model
        teacher_w = os.path.join(tmp, "teacher.pth")
        mode_opts, mode = [], None
        if a.teacher_precision or a.teacher_channels_last:
            precision = a.teacher_precision or "float32"
            mode_opts = ["KD.TEACHER.PRECISION", precision, "KD.TEACHER.CHANNELS_LAST", str(a.teacher_channels_last)]
            mode = f"teacher {precision}" + (" channels_last" if a.teacher_channels_last else "")
        models = {}
        for m in methods:
            for label, extra in [(m, [])] + ([(f"{m} {mode}", mode_opts)] if mode else []):
                models[label] = build_model(load_config(os.path.join(pair, f"{m}.yaml"), base + a.opts + [
                    "KD.TEACHER.WEIGHTS", teacher_w] + extra)).train()
        inputs = [{"image": x["image"]} for x in batch]

        def teacher_forward(model):
            def run():
                with model.teacher_mode.context(), clock.phase("teacher"):
                    model.teacher(inputs)
            return run
        first = next(iter(models.values()))
        teacher = first.teacher
        fns = {"a": _train_step(student, batch, clock=clock), "b": teacher_forward(first)}
        if mode:
            fns[f"(b) {mode}"] = teacher_forward(models[f"{methods[0]} {mode}"])
        for name, model in models.items():
            model.load_state_dict(student.state_dict(), strict=False)
            clock.attach("teacher", teacher_parts(model.teacher))
            clock.attach("losses", [model.distill])
            if getattr(model, "teacher_parts", ()) and "cross_head" in model.teacher_parts:
                model._cross_head = clock.timed("cross", model._cross_head)  # CrossKD's pass, on its own
            fns[name] = _train_step(model, batch, clock=clock)
            if a.amp:
                fns[f"{name} amp"] = _train_step(model, batch, dev.split(":")[0], getattr(torch, a.amp_dtype),
                                                 clock=clock)
        res = _round_robin(fns, a.steps, dev, clock)
        clock.remove()
        teacher_out = _teacher_outputs(teacher, inputs)
        profile = profile_ops(fns, list(models), a.profile, a.profile_repeats) if a.profile else None
    load_after = machine_load()
    names = [n for m in models for n in ([m, f"{m} amp"] if a.amp else [m])]
    cuda = dev.startswith("cuda")
    figures = {}
    for clock_name, t_key, ph_key in (("wall", "time", "phases"), ("cpu", "cpu", "phases_cpu")):
        t, ph = res[t_key], res[ph_key]
        if not t:
            continue
        t_a, t_b = t["a"], t["b"]
        figures[clock_name] = {
            "a_s": t_a, "b_s": t_b,
            "a_phases": {k: v for k, v in ph["a"].items() if k in ("student_fwd_s", "backward_s")},
            "b_phases": {"teacher_fwd_s": ph["b"]["teacher_fwd_s"]},
            **({"b_mode": {"mode": mode, "s": t[f"(b) {mode}"], "speedup": t_b / t[f"(b) {mode}"]}} if mode else {}),
            "methods": [{"method": m, "c_s": t[m], "ratio": t[m] / (t_a + t_b), "phases": ph[m],
                         "amp_speedup": t[m.split(" ")[0]] / t[m] if m.endswith(" amp") else None}
                        for m in names]}
    rows = [dict(r, peak_mb=res["peak"][r["method"]]) for r in figures["wall"]["methods"]]
    if "cpu" in figures:
        for r, rc in zip(rows, figures["cpu"]["methods"]):
            r.update(c_cpu_s=rc["c_s"], ratio_cpu=rc["ratio"], phases_cpu=rc["phases"])
    inputs_a, inputs_t = _inputs_of(student), _inputs_of(teacher)
    same_inputs = all(_inputs_of(m) == inputs_a for m in models.values())
    cores = load_before["usable_cores"]
    peak_load = max(load_before["loadavg"][0], load_after["loadavg"][0])
    machine = {"cores": load_before["cores"], "usable_cores": cores, "torch_threads": torch.get_num_threads(),
               "torch": torch.__version__, "loadavg_before": load_before["loadavg"],
               "loadavg_after": load_after["loadavg"], "overloaded": peak_load > cores}

    print(f"device: {dev} ({torch.get_num_threads()} threads), {a.images} images {h}x{w}, teacher {teacher_file} -> "
          f"student {os.path.relpath(student_file, REPO)}, median of {a.steps} steps" + (f", amp = {a.amp_dtype} autocast" if a.amp else ""))
    print(f"machine: {machine['cores']} cores ({cores} usable), torch {torch.__version__}, "
          f"{machine['torch_threads']} torch threads; load average (1/5/15 min) before "
          f"{'/'.join(map(str, machine['loadavg_before']))}, after {'/'.join(map(str, machine['loadavg_after']))}")
    if machine["overloaded"]:
        print(f"WARNING: load average {peak_load:.2f} exceeds the {cores} usable cores: other processes shared the "
              "CPU during the run, so wall times mean little (ratios measured side by side and process CPU times "
              "suffer least).", file=sys.stderr)
    fmt = lambda d: f"{d['format']} mean {d['pixel_mean']} std {d['pixel_std']}"  # noqa: E731
    print(f"inputs: student {fmt(inputs_a)} ((a) and every method{'' if same_inputs else ': NOT the same'}); "
          f"teacher {fmt(inputs_t)}")
    print(f"weights: {init_text(a)}; "
          f"(b) teacher proposals per image {teacher_out['proposals']}, detections {teacher_out['detections']}")
    if teacher_out["proposals"] is not None and not any(teacher_out["proposals"]):  # None: a dense teacher
        print("WARNING: the teacher keeps no proposal: (b) skips its box head, unlike a trained teacher.",
              file=sys.stderr)
    if not same_inputs:
        print("WARNING: a method's student normalises its input unlike (a); c/(a+b) compares unlike things.",
              file=sys.stderr)
    col = max([28] + [len(r['method']) + 2 for r in rows] + ([len(mode) + 6] if mode else []))
    mb = (lambda v: f"{v:10.0f}") if cuda else (lambda v: f"{'-':>10}")
    for clock_name, fig in figures.items():
        print(f"\n{'wall time' if clock_name == 'wall' else 'process CPU time (all threads)'}, medians in s")
        print(f"{'':<{col}}{'step s':>9}{'c/(a+b)':>9}{'student fwd':>12}{'teacher fwd':>12}{'losses fwd':>12}"
              f"{'backward':>12}" + (f"{'peak MB':>10}{'amp speed-up':>14}" if clock_name == "wall" else ""))
        wall = clock_name == "wall"
        print(f"{'(a) student train step':<{col}}{fig['a_s']:9.3f}{'':>9}{_phase_cells(fig['a_phases'])}"
              + (mb(res["peak"]["a"]) if wall else ""))
        print(f"{'(b) teacher inference fwd':<{col}}{fig['b_s']:9.3f}{'':>9}{_phase_cells(fig['b_phases'])}"
              + (mb(res["peak"]["b"]) if wall else ""))
        if mode:
            bm = fig["b_mode"]
            print(f"{'(b) ' + mode:<{col}}{bm['s']:9.3f}{'':>9}  speed-up over (b) {bm['speedup']:.2f}x"
                  + (mb(res["peak"][f"(b) {mode}"]) if wall else ""))
        for r in fig["methods"]:
            up = f"{r['amp_speedup']:14.2f}" if r["amp_speedup"] else ""
            cross = f"  (+ cross-head pass {r['phases']['cross_fwd_s']:.3f})" if "cross_fwd_s" in r["phases"] else ""
            print(f"{r['method']:<{col}}{r['c_s']:9.3f}{r['ratio']:9.3f}{_phase_cells(r['phases'])}"
                  + (f"{mb(res['peak'][r['method']])}{up}" if wall else "") + cross)
    print("\nphases: student fwd = forward minus teacher, losses and CrossKD's cross-head pass (preprocessing, backbone, "
          "RPN, RoI sampling and head, detection losses); backward = loss.backward() (no optimizer update).")
    if not cuda:
        print(f"CPU: per-phase peaks are not separable (RSS only grows); process peak RSS {_peak_mb(dev):.0f} MB "
              "with every model of this run loaded at once.")
    if profile:
        print_profile(profile)
    if a.json:
        with open(a.json, "w") as f:
            wall = figures["wall"]
            json.dump({"device": dev, "images": a.images, "size": [h, w], "steps": a.steps, "machine": machine,
                       "inputs": {"student": inputs_a, "teacher": inputs_t, "methods_match_student": same_inputs},
                       "weights": {"init": "raw" if a.raw_init else "frozen_bn_calibrated",
                                   "teacher": a.teacher_weights or "random", **teacher_out},
                       "a_s": wall["a_s"], "b_s": wall["b_s"], "a_phases": wall["a_phases"],
                       "b_phases": wall["b_phases"], "b_mode": wall.get("b_mode"), "cpu": figures.get("cpu"),
                       "peak_a_mb": res["peak"]["a"], "peak_b_mb": res["peak"]["b"], "methods": rows,
                       "profile": profile}, f, indent=2)
    return 0
