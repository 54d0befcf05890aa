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
from kd_det.evaluation.runs import markdown_table, read_run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# (label, config, extra overrides): the runs of the demo, trained in this order.
RUNS = [
    ("Faster R-CNN R-18-FPN", "configs/shapes/faster_rcnn_R_18_FPN_shapes.yaml", []),
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
    rows = []
    for label, config, opts in RUNS:
        out_dir = os.path.join(a.output, os.path.splitext(os.path.basename(config))[0])
        run(label, config, opts, out_dir)
        rows.append(dict(read_run(out_dir), label=label))
    os.makedirs(a.report, exist_ok=True)
    table = markdown_table(rows)
    path = os.path.join(a.report, "report.md")
    with open(path, "w") as f:
        f.write("# kd_det demo: COCO box AP on shapes_val\n\n" + table + "\n")
    print("\n" + table)
    print(f"\nDemo finished in {(time.time() - t0) / 60:.1f} min. Report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
