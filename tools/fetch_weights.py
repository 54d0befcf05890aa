#!/usr/bin/env python
"""Download, verify and place the weight files the shipped configs name (catalog: kd_det/data/weights.csv).

    python tools/fetch_weights.py --list                       # every file: URL, hash, configs naming it
    python tools/fetch_weights.py                              # all of them into pretrained/
    python tools/fetch_weights.py R-18.pkl faster_rcnn_R_101_FPN_3x.pkl [--dest pretrained]
    python tools/fetch_weights.py R-50.pkl --mirror /data/weights   # or --mirror https://host/path
    python tools/fetch_weights.py --render                     # rewrite docs/weights.md from the catalog

torchvision files are checked against the SHA-256 prefix in their name and converted to Detectron2 backbone
weights; model-zoo files against the MD5 prefix in their name and renamed; MSRA files (no published hash)
are pinned in DEST/SHA256SUMS at the first fetch. ``--mirror`` replaces each URL's part up to its last '/'.
"""
import argparse
import sys

from kd_det.errors import UserError
from kd_det.weights_catalog import CATALOG, DEFAULT_DEST, DOC, fetch, read_catalog, render


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("files", nargs="*", metavar="FILE", help="catalog file names (default: all)")
    p.add_argument("--list", action="store_true", help="print the catalog and fetch nothing")
    p.add_argument("--dest", default=DEFAULT_DEST, help=f"folder the files go to (default {DEFAULT_DEST}/)")
    p.add_argument("--mirror", help="URL or folder holding the files under their published names")
    p.add_argument("--catalog", default=CATALOG, help="catalog csv (default kd_det/data/weights.csv; for tests)")
    p.add_argument("--render", action="store_true", help=f"rewrite {DOC} from the catalog")
    a = p.parse_args(argv)
    try:
        if a.list or a.render:
            entries = read_catalog(a.catalog)
            if a.render:
                with open(DOC, "w") as f:
                    f.write(render(entries))
                print(f"wrote {DOC} ({len(entries)} files)")
            for e in entries.values() if a.list else ():
                print(f"{e.file}\t{e.url}\t{e.hash_kind} {e.hash or '(pinned at first fetch)'}\t"
                      f"{e.size_mb or '-'} MB\t{' '.join(e.configs)}")
            return 0
        for line in fetch(a.files, a.dest, a.mirror, a.catalog):
            print(line)
    except UserError as e:
        print(f"fetch_weights.py: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
