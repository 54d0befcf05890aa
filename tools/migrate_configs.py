#!/usr/bin/env python
"""Rewrite config files from the old forms to the one KD schema, in place, keeping every comment.

    python tools/migrate_configs.py                  # every yaml under configs/
    python tools/migrate_configs.py my/cfg.yaml dir/ # these files (a folder: every yaml under it)
    python tools/migrate_configs.py --check          # list files still in the old form; exit 1 if any

Old detection form: ``KD.LOSSES`` as names + ``KD.LOSS_WEIGHTS`` / ``KD.LOSS_START_ITERS`` / ``KD.PARAMS`` /
``KD.INPUTS`` -> one spec per line, ``- {name: dcd, weight: 1.0, params: {alpha: 0.5}}  # comment``.
Old classification keys: ``ROW.*`` -> ``KD.LABEL.*``, ``TEACHER.ARCH / WEIGHTS`` -> ``KD.TEACHER.*``, a bool
``SOLVER.AMP`` -> ``SOLVER.AMP.ENABLED``. Running it again changes nothing. The rules:
:mod:`kd_det.config.migration`.
"""
import argparse
import glob
import os
import sys

from kd_det import REPO_ROOT
from kd_det.config.migration import MigrationError, migrate_text


def _files(paths):
    out = []
    for path in paths:
        if os.path.isdir(path):
            out += sorted(glob.glob(os.path.join(path, "**", "*.y*ml"), recursive=True))
        else:
            out.append(path)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("paths", nargs="*", help="yaml files or folders (default: configs/)")
    p.add_argument("--check", action="store_true", help="only list files still in the old form (exit 1 if any)")
    a = p.parse_args(argv)
    files = _files(a.paths or [os.path.join(REPO_ROOT, "configs")])
    changed, failed = [], []
    for path in files:
        with open(path) as f:
            text = f.read()
        try:
            new = migrate_text(text, path)
        except MigrationError as e:
            failed.append(path)
            print(f"migrate_configs.py: {e}", file=sys.stderr)
            continue
        if new == text:
            continue
        changed.append(path)
        if a.check:
            print(f"{path}: old form")
        else:
            with open(path, "w") as f:
                f.write(new)
            print(f"{path}: rewritten")
    verb = "in the old form" if a.check else "rewritten"
    print(f"{len(changed)} of {len(files)} file(s) {verb}" + (f", {len(failed)} not migratable" if failed else "")
          + ".")
    return 1 if failed or (a.check and changed) else 0


if __name__ == "__main__":
    sys.exit(main())
