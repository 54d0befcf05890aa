"""Real torch.distributed: a 2-process Gloo DDP run on CPU through torchrun."""
import os
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
           "TEACHER.ARCH", SMOKE_TEACHER, "TEACHER.WEIGHTS", smoke_teacher]
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
