#!/usr/bin/env python
"""kd_det benchmarks: ``python tools/benchmark.py SUBCOMMAND [options]``.

Each subcommand lives in ``kd_det/benchmarks/<name>.py`` and exposes
``main(argv: list[str]) -> int``; it prints a table of figures measured side by
side in one run and says which device each figure came from.
"""
import importlib
import pkgutil
import sys

import kd_det.benchmarks as _pkg


def _subcommands():
    return sorted(m.name for m in pkgutil.iter_modules(_pkg.__path__) if not m.name.startswith("_"))


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    names = _subcommands()
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in names:
        if argv and argv[0] not in ("-h", "--help"):
            print(f"benchmark.py: unknown subcommand {argv[0]!r}; known: {', '.join(names)}.", file=sys.stderr)
        print(f"usage: python tools/benchmark.py {{{','.join(names)}}} [options]", file=sys.stderr)
        return 2 if argv and argv[0] not in ("-h", "--help") else 0
    return importlib.import_module(f"kd_det.benchmarks.{argv[0]}").main(argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main())
