#!/usr/bin/env python
"""Write docs/recipes.md from kd_det/data/recipes.csv (the provenance of every config value).

    python tools/render_recipes.py            # rewrite docs/recipes.md
    python tools/render_recipes.py --check    # exit 1 if the csv and the configs or the doc disagree

The csv has one line ``config,key,value,source`` per hyper-parameter that differs from the
config's stock recipe; the rules are in :mod:`kd_det.recipes`.
"""
import argparse
import sys

from kd_det.recipes import DOC, problems, read_entries, render


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--check", action="store_true", help="check csv, configs and doc; write nothing")
    a = p.parse_args(argv)
    entries = read_entries()
    issues = problems(entries)
    for line in issues:
        print(line, file=sys.stderr)
    text = render(entries)
    if a.check:
        with open(DOC) as f:
            stale = f.read() != text
        if stale:
            print(f"{DOC} is not the rendering of the csv: run python tools/render_recipes.py", file=sys.stderr)
        return 1 if issues or stale else 0
    with open(DOC, "w") as f:
        f.write(text)
    print(f"wrote {DOC} ({len(entries)} entries{'; ' + str(len(issues)) + ' problems above' if issues else ''})")
    return 1 if issues else 0


if __name__ == "__main__":
    sys.exit(main())
