"""Real torch.distributed: a 2-process Gloo DDP run on CPU through torchrun."""
import os
import re
import subprocess
import sys

import torch

from cls_helpers import CONFIGS, REPO, SMOKE_STUDENT, SMOKE_TEACHER, read_metrics, subprocess_env, tiny_overrides


def test_two_process_gloo_ddp(tmp_path, tiny_cifar, smoke_teacher):
    out = str(tmp_path / "ddp")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           os.path.join(REPO, "tools", "train_cls.py"),
           "--config", os.path.join(CONFIGS, "cifar100", "resnet32x4-resnet8x4", "dcd_kd.yaml"),
           *tiny_overrides(tiny_cifar, out), "MODEL.ARCH", SMOKE_STUDENT,
           "KD.TEACHER.ARCH", SMOKE_TEACHER, "KD.TEACHER.WEIGHTS", smoke_teacher]
    proc = subprocess.run(cmd, cwd=REPO, env=subprocess_env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (record,) = read_metrics(out)  # written once, by rank 0
    assert record["val/num_images"] == 32  # the two validation shards cover the set exactly once
    assert "loss_dcd" in proc.stdout + proc.stderr or "train/loss_dcd" in record
    # one JSON summary line, from rank 0 only
    assert sum(line.startswith('{"top1"') for line in proc.stdout.splitlines()) == 1
    ckpt = torch.load(os.path.join(out, "last_checkpoint.pth"), weights_only=False)
    assert not any(k.startswith("module.") for k in ckpt["model"])


# Rank 1's cross-entropy turns NaN at its first batch; rank 0's losses stay finite. torchrun's SIGTERM
# (sent when rank 1 exits) is ignored, so what rank 0 prints is what it does by itself.
NAN_ON_RANK_1 = r"""
import runpy, signal, sys
from kd_det.classification import dist, distiller

signal.signal(signal.SIGTERM, signal.SIG_IGN)

forward = distiller.Distiller.forward


def nan_on_rank_1(self, *args, **kwargs):
    losses, logits = forward(self, *args, **kwargs)
    if dist.get_rank() == 1:
        losses["loss_ce"] = losses["loss_ce"] * float("nan")
    return losses, logits


distiller.Distiller.forward = nan_on_rank_1
sys.argv = [sys.argv[1], *sys.argv[2:]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_nan_on_one_process_stops_every_process(tmp_path, tiny_cifar):
    """The NaN stop is agreed across processes: the rank with finite losses stops at the same step,
    with the sentence, instead of waiting in the gradient all-reduce of a process that has left."""
    script = tmp_path / "nan_on_rank_1.py"
    script.write_text(NAN_ON_RANK_1)
    out = str(tmp_path / "out")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
           os.path.join(REPO, "tools", "train_cls.py"),
           "--config", os.path.join(CONFIGS, "cifar100", "resnet32x4-resnet8x4", "student.yaml"),
           *tiny_overrides(tiny_cifar, out), "MODEL.ARCH", SMOKE_STUDENT]
    proc = subprocess.run(cmd, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    errors = sorted(re.findall(r"error: [^\r\n]*", proc.stderr))  # tqdm's bar may precede one on its line
    stop = (": training stopped before the optimizer step; no checkpoint had been written yet (restart with a "
            "lower SOLVER.BASE_LR).")
    assert errors == ["error: Loss term loss_ce is nan at epoch 1, iteration 0" + stop,
                      "error: Loss term loss_ce is non-finite on another rank at epoch 1, iteration 0" + stop], \
        proc.stderr[-3000:]
    assert not os.path.exists(os.path.join(out, "last_checkpoint.pth"))
