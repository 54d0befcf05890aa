#!/usr/bin/env python
"""The main job (`make demo`): shapes dataset -> train -> evaluate -> AP report, on CPU.

Each run is ``tools/train_net.py`` on a config of ``configs/shapes/``; a run whose
``evaluation.json`` exists is reused (delete ``output/demo`` to retrain). Progress
lines (ETA, AP) are echoed; full logs are in each run's ``log.txt``.
"""
import argparse
import os
import re
import subprocess
import sys
import time

from kd_det.data.datasets import datasets_root
from kd_det.data.shapes import make_shapes
from kd_det.evaluation.report import build_report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEACHER = ("Teacher R-34-FPN", "configs/shapes/faster_rcnn_R_34_FPN_shapes_teacher.yaml")
# (label, config) of the students, trained after the teacher; distilled ones load its model_final.pth.
STUDENTS = [
    ("Student R-18-FPN (baseline)", "configs/shapes/faster_rcnn_R_18_FPN_shapes.yaml"),
    ("R-18 + DCD", "configs/shapes/distill/dcd.yaml"),
    ("R-18 + CKD + ReviewKD", "configs/shapes/distill/ckd_reviewkd.yaml"),
    ("R-18 + DKD", "configs/shapes/distill/dkd.yaml"),
]
# Lines of the training log echoed to the console: ETA lines, the AP table, speed, errors.
ECHO = re.compile(r"eta:|copypaste: |Overall training speed|Error")


def run(label, config, opts, out_dir):
    if os.path.isfile(os.path.join(out_dir, "evaluation.json")):
        print(f"== {label}: reusing {out_dir}")
        return
    print(f"== {label}: training {config} -> {out_dir}", flush=True)
    cmd = [sys.executable, os.path.join(ROOT, "tools/train_net.py"), "--config-file", os.path.join(ROOT, config),
           "OUTPUT_DIR", out_dir, *opts]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    for line in proc.stdout:
        if ECHO.search(line):
            print("   " + line.rstrip().split("]: ", 1)[-1], flush=True)
    if proc.wait() != 0:
        sys.exit(f"demo: {label} failed (exit {proc.returncode}); see {out_dir}/log.txt")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--output", default=os.path.join(ROOT, "output/demo"), help="where runs are written")
    p.add_argument("--report", default=os.path.join(ROOT, "report/demo"), help="where the report is written")
    a = p.parse_args(argv)
    t0 = time.time()
    print(f"Building the shapes dataset under {datasets_root()} ...")
    make_shapes(datasets_root())
    names = {}  # run dir -> label, in training order
    teacher_weights = None
    for label, config in [TEACHER, *STUDENTS]:
        out_dir = os.path.join(a.output, os.path.splitext(os.path.basename(config))[0])
        opts = [] if teacher_weights is None or "/distill/" not in config else ["KD.TEACHER.WEIGHTS", teacher_weights]
        run(label, config, opts, out_dir)
        teacher_weights = teacher_weights or os.path.join(out_dir, "model_final.pth")
        names[out_dir] = label
    report = build_report(list(names), a.report, names=names, title="kd_det demo: COCO box AP on shapes_val")
    path = report["files"][0]  # report.md; report.csv and plots/ beside it
    print("\n" + report["summary"])
    print(f"\nDemo finished in {(time.time() - t0) / 60:.1f} min. Report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
