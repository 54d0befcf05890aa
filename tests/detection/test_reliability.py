"""Scale-out and reliability through the real command line: 2 Gloo processes = 1 process, resume
after ``kill -9`` = uninterrupted run, a kill during a checkpoint write loses nothing, NaN stops."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CFG = "configs/shapes/faster_rcnn_R_18_FPN_shapes.yaml"
# Log every iteration's raw losses (no smoothing), no evaluation, no random flip: runs are comparable.
EXACT = ["SOLVER.LOG_PERIOD", "1", "SOLVER.LOG_WINDOW", "1", "DATASETS.TEST", "()", "INPUT.RANDOM_FLIP", "none",
         "SEED", "7"]


def distill_opts(teacher_files, losses=("dkd", "reviewkd")):
    cfg_file, weights = teacher_files
    return ["MODEL.META_ARCHITECTURE", "DistillRCNN", "KD.TEACHER.CONFIG_FILE", cfg_file, "KD.TEACHER.WEIGHTS", weights,
            "KD.LOSSES", str([{"name": n} for n in losses]),
            "KD.FEATURE_LEVELS", "['p3', 'p4']"]


def losses_by_iteration(out):
    """{iteration: {loss name: value}} from metrics.json; a later row for an iteration wins (re-run after resume)."""
    rows = {}
    with open(os.path.join(out, "metrics.json")) as f:
        for line in f:
            r = json.loads(line)
            if "total_loss" in r:
                rows[r["iteration"]] = {k: v for k, v in r.items() if k.startswith("loss_") or k == "total_loss"}
    return rows


def weights(path, skip=()):
    return {k: v for k, v in torch.load(path, weights_only=True)["model"].items()
            if v.is_floating_point() and not k.endswith(tuple(skip))}


def assert_close_runs(a, b, first_iter, tol=1e-5, skip=()):
    """Losses of every iteration from ``first_iter`` and final weights (but ``skip`` suffixes) agree within
    ``tol`` (relative above 1)."""
    la, lb = losses_by_iteration(a), losses_by_iteration(b)
    iters = [i for i in sorted(la) if i >= first_iter]
    assert iters and iters == [i for i in sorted(lb) if i >= first_iter], (sorted(la), sorted(lb))
    for i in iters:
        assert la[i].keys() == lb[i].keys()
        for k in la[i]:
            assert abs(la[i][k] - lb[i][k]) <= tol * max(1.0, abs(la[i][k])), (i, k, la[i][k], lb[i][k])
    wa, wb = weights(os.path.join(a, "model_final.pth"), skip), weights(os.path.join(b, "model_final.pth"), skip)
    assert wa.keys() == wb.keys()
    worst = max((wa[k] - wb[k]).abs().max().item() for k in wa)
    assert worst <= tol, worst


# tools/train_net.py in float64 (argv: the script, then its arguments). Detectron2 0.6 hard-codes float32
# in Boxes and casts boxes to float32 for NMS: boxes follow the default dtype and NMS takes the scores'.
FLOAT64_TRAIN_NET = """
import runpy, sys
import torch
torch.set_default_dtype(torch.float64)
import kd_det  # noqa: F401  (kd_det.compat before Detectron2)
from detectron2.structures import boxes
from torchvision.ops import boxes as box_ops
_init, _batched_nms = boxes.Boxes.__init__, box_ops.batched_nms
def _boxes_init(self, tensor):
    _init(self, tensor)
    self.tensor = self.tensor.to(torch.get_default_dtype())
boxes.Boxes.__init__ = _boxes_init
box_ops.batched_nms = lambda b, scores, idxs, iou: _batched_nms(b.to(scores.dtype), scores, idxs, iou)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_two_gloo_processes_under_torchrun_equal_one(tiny_shapes, tmp_path, tiny_opts, teacher_files):
    """Same total batch (2) and seed: 2 processes x 1 image give the losses and weights of 1 process x 2 images.

    Two things differ between the runs unless controlled, and the test controls both:

    * BN. The student's ResNet uses BN (trained from scratch); per-process BN would normalise each
      image by its own statistics, so both runs use ``naiveSyncBN`` (Detectron2's all-reduce BN, plain
      BN in one process): the two processes then normalise with the statistics of the whole batch.
      ReviewKD's fusion modules have BN too: ``KD.NORM naiveSyncBN`` syncs them the same way. The
      teacher's BN is in eval mode (running statistics) either way. Every parameter and running mean
      is compared; running *variances* are not: Detectron2's NaiveSyncBatchNorm tracks the biased
      batch variance, BatchNorm2d the unbiased one (factor n/(n-1)), so they differ by design.
    * Random sampling. RPN anchors and R-CNN proposals are subsampled with ``torch.randperm``; one
      process draws for both images from one random stream, two processes from two. The test samples
      every anchor and every proposal (batch sizes above the counts, no ground truth appended, so each
      image has exactly POST_NMS_TOPK_TRAIN RoIs and the per-image means average exactly).

    DKD and ReviewKD are per-RoI / per-image means; contrastive losses (CKD, DCD) draw negatives from
    the local batch only and would differ, as they do in the papers' multi-GPU runs.

    Both runs compute in float64 (:data:`FLOAT64_TRAIN_NET`). They add the same numbers in different
    orders (BN statistics over the batch vs. per process then all-reduced; DDP's mean of per-process
    gradients vs. one backward over both images), which in float32 leaves ~1e-7 relative differences
    after the first step. ReLUs turn these into jumps: a pre-activation within 1e-7 of 0 (a few of the
    ~3M per step) changes sign in one run only, which moved a whole res4 conv gradient by 2% at step 1
    (measured by interpolating between the two runs' weights), and the random teacher's huge KD losses
    (ReviewKD ~18,000) make the clipped updates large. In float32 the final weights differed by 5e-7
    to 1.5e-3 over SEED 7-10 and two commits (the images each iteration sees follow the random state
    left after the model is built): pass or fail by chance. In float64 the rounding is ~1e-16 and they
    agree to ~1e-13 for each of those seeds, while an unsynced BN (``KD.NORM BN``) differs by 1e-1.
    """
    common = [*tiny_opts, *EXACT, *distill_opts(teacher_files), "SOLVER.MAX_ITER", "3",
              "MODEL.RESNETS.NORM", "naiveSyncBN", "KD.NORM", "naiveSyncBN", "MODEL.RPN.BATCH_SIZE_PER_IMAGE", "100000",
              "MODEL.RPN.POSITIVE_FRACTION", "1.0", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "100000",
              "MODEL.ROI_HEADS.POSITIVE_FRACTION", "1.0", "MODEL.ROI_HEADS.PROPOSAL_APPEND_GT", "False"]
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    wrapper = tmp_path / "float64_train_net.py"
    wrapper.write_text(FLOAT64_TRAIN_NET)
    train_net = [str(wrapper), os.path.join(REPO, "tools", "train_net.py"), "--config-file", CFG]
    env = dict(os.environ, DETECTRON2_DATASETS=tiny_shapes, OMP_NUM_THREADS="2")
    r1 = subprocess.run([sys.executable, *train_net, "OUTPUT_DIR", one, *common], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=600)
    assert r1.returncode == 0, r1.stderr[-3000:]
    # The 2-process run is launched by torchrun (env://); --num-gpus 2 is tested in test_train_eval.py.
    env["OMP_NUM_THREADS"] = "1"
    r2 = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                         *train_net, "OUTPUT_DIR", two, *common], cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=600)
    assert r2.returncode == 0, r2.stderr[-3000:]
    with open(os.path.join(two, "log.txt")) as f:
        assert "World size: 2" in f.read()
    assert_close_runs(one, two, first_iter=0, skip=("running_var",))
    # The learnable distillation parts (ReviewKD's fusion modules) were trained and synced too.
    assert any(k.startswith("distill.") for k in weights(os.path.join(two, "model_final.pth")))


def _popen_train(args, datasets_root):
    env = dict(os.environ, DETECTRON2_DATASETS=datasets_root, OMP_NUM_THREADS="2")
    return subprocess.Popen([sys.executable, os.path.join(REPO, "tools", "train_net.py"), *args], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _wait_for(predicate, proc, timeout=300):
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.005)
    return False


def test_kill_9_then_resume_equals_uninterrupted(tiny_shapes, tmp_path, run_tool, tiny_opts, teacher_files):
    """kill -9 right after the first checkpoint; --resume continues from it with the same losses."""
    common = [*tiny_opts, *EXACT, *distill_opts(teacher_files, ("kd",)), "SOLVER.MAX_ITER", "6",
              "SOLVER.CHECKPOINT_PERIOD", "2"]
    ref, run = str(tmp_path / "ref"), str(tmp_path / "run")
    r = run_tool("train_net.py", ["--config-file", CFG, "OUTPUT_DIR", ref, *common], tiny_shapes)
    assert r.returncode == 0, r.stderr[-3000:]

    last = os.path.join(run, "last_checkpoint")
    proc = _popen_train(["--config-file", CFG, "OUTPUT_DIR", run, *common], tiny_shapes)
    assert _wait_for(lambda: os.path.isfile(last), proc), proc.communicate()[1][-3000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    with open(last) as f:
        resumed_from = f.read().strip()
    assert resumed_from != "model_final.pth"  # killed mid-run
    done = torch.load(os.path.join(run, resumed_from), weights_only=True)["iteration"]

    r = run_tool("train_net.py", ["--config-file", CFG, "--resume", "OUTPUT_DIR", run, *common], tiny_shapes)
    assert r.returncode == 0, r.stderr[-3000:]
    with open(os.path.join(run, "log.txt")) as f:
        assert f"Starting training from iteration {done + 1}" in f.read()
    assert_close_runs(ref, run, first_iter=done + 1, tol=1e-6)


def _temporary_file_written(folder, name):
    """True while kd_det.core.atomic_write has written bytes to the temporary file of ``name``."""
    for tmp in folder.glob(f"{name}.*.tmp"):
        try:
            if tmp.stat().st_size > 0:
                return True
        except FileNotFoundError:  # renamed in the meantime
            pass
    return False


KILL_DURING_SAVE = r"""
import sys, torch
import kd_det
from kd_det.detection.engine.checkpoint import KDCheckpointer
model = torch.nn.Linear(4096, 4096)  # 64 MB per checkpoint: the write takes a while
ckpt = KDCheckpointer(model, save_dir=sys.argv[1])
ckpt.save("model_0000001", iteration=1)
print("saved", flush=True)
while True:
    ckpt.save("model_0000003", iteration=3)  # killed during one of these writes
"""


def test_kill_during_checkpoint_write_keeps_previous(tmp_path):
    for attempt in range(5):
        out = tmp_path / f"try{attempt}"
        proc = subprocess.Popen([sys.executable, "-c", KILL_DURING_SAVE, str(out)], cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "saved", proc.stderr.read()[-3000:]
        writing = _wait_for(lambda: _temporary_file_written(out, "model_0000003.pth"), proc, timeout=60)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if writing and (out / "last_checkpoint").read_text() == "model_0000001.pth":
            break
    else:
        pytest.fail("could not kill the process during a checkpoint write in 5 tries")
    from kd_det.detection.engine.checkpoint import KDCheckpointer

    model = torch.nn.Linear(4096, 4096)
    data = KDCheckpointer(model, save_dir=str(out)).resume_or_load("", resume=True)
    assert data["iteration"] == 1  # the previous checkpoint, whole


def test_nan_loss_stops_with_one_sentence(tiny_shapes, tmp_path, run_tool, tiny_opts):
    """The LR jumps by 1e8 after iteration 3: the loss overflows; the run stops naming term and iteration."""
    out = str(tmp_path)
    r = run_tool("train_net.py", ["--config-file", CFG, "OUTPUT_DIR", out, *tiny_opts, *EXACT,
                                  "SOLVER.MAX_ITER", "20", "SOLVER.CHECKPOINT_PERIOD", "2", "SOLVER.STEPS", "(3,)",
                                  "SOLVER.GAMMA", "1e8", "SOLVER.CLIP_GRADIENTS.ENABLED", "False"], tiny_shapes)
    assert r.returncode == 2, r.stderr[-3000:]
    err = r.stderr.strip().splitlines()
    assert len(err) == 1, r.stderr[-3000:]
    import re

    m = re.fullmatch(r"train_net\.py: error: (Loss term loss_\w+ is (nan|inf|-inf)|The forward pass diverged "
                     r"\(Predicted boxes or scores contain Inf/NaN\)) at iteration (\d+): training "
                     r"stopped before the optimizer step; the last checkpoint (\S+) predates it and is untouched "
                     r"\(restart from it .*\)\.", err[0])
    assert m, err[0]
    failed_at, ckpt = int(m.group(3)), m.group(4)
    assert 3 < failed_at < 20
    saved = sorted(f for f in os.listdir(out) if f.endswith(".pth"))
    assert "model_final.pth" not in saved and os.path.basename(ckpt) == saved[-1]
    assert torch.load(ckpt, weights_only=True)["iteration"] < failed_at
    rows = losses_by_iteration(out)
    assert max(rows) == failed_at - 1  # the failed iteration was never logged as a result
    with open(os.path.join(out, "log.txt")) as f:
        assert "Training stopped: " in f.read()  # the log has the sentence, not a traceback

    # The same failure in the last iteration, with a test set: no "final" checkpoint or evaluation of a
    # diverged run (Detectron2's EvalHook would evaluate after a failure in the last iteration).
    last = str(tmp_path / "last_iter")
    r = run_tool("train_net.py", ["--config-file", CFG, "OUTPUT_DIR", last, *tiny_opts, *EXACT,
                                  "SOLVER.MAX_ITER", str(failed_at + 1), "SOLVER.CHECKPOINT_PERIOD", "2",
                                  "SOLVER.STEPS", "(3,)", "SOLVER.GAMMA", "1e8", "SOLVER.CLIP_GRADIENTS.ENABLED",
                                  "False", "DATASETS.TEST", "('shapes_val',)"], tiny_shapes)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr[-3000:]
    assert f"at iteration {failed_at}:" in r.stderr, r.stderr[-3000:]
    assert not os.path.exists(os.path.join(last, "model_final.pth"))
    assert not os.path.exists(os.path.join(last, "evaluation.json"))
    with open(os.path.join(last, "last_checkpoint")) as f:
        assert f.read().strip() == os.path.basename(ckpt)
