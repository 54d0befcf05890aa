#!/usr/bin/env python
"""AP / top-1 report of run directories: report.md, report.csv and PNG plots.

    python tools/report.py output/r101_r18/* --out report/
    python tools/report.py RUN_DIR [RUN_DIR ...] --out report/ --paper-csv my_results.csv

Each RUN_DIR is a detection (tools/train_net.py) or classification (tools/train_cls.py)
OUTPUT_DIR. Runs whose configs differ only in SEED and OUTPUT_DIR are pooled: mean +- std, n,
and the gain over the baseline paired by seed with its 95% confidence interval and verdict.
A RUN_DIR that is not a directory, or holds no run outputs, is listed in the report as
missing (with a warning here), never dropped. The logic lives in
:mod:`kd_det.evaluation.report`.
"""
import argparse
import os
import sys

from kd_det.evaluation.report import build_report


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run output directories")
    p.add_argument("--out", default="report", help="folder for report.md, report.csv and plots/ (default: report)")
    p.add_argument("--paper-csv", default=None, help="papers' numbers (default: kd_det/data/paper_results.csv)")
    p.add_argument("--title", default="AP / top-1 report", help="first heading of report.md")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--strict", action="store_true", help="exit 1 when a run is missing or incomplete")
    a = p.parse_args(argv)
    if a.paper_csv and not os.path.isfile(a.paper_csv):
        p.error(f"--paper-csv {a.paper_csv} is not a file.")
    try:
        result = build_report(a.run_dirs, a.out, paper_csv=a.paper_csv, title=a.title, plots=not a.no_plots)
    except ValueError as e:  # a paper CSV without the expected columns
        print(f"report.py: error: {e}", file=sys.stderr)
        return 2
    for line in result["problems"]:
        print(f"report.py: warning: {line}; listed in the report.", file=sys.stderr)
    print(f"Wrote {', '.join(result['files'][:3])} and {len(result['files']) - 3} plot(s).")
    return 1 if a.strict and result["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
