#!/usr/bin/env python
"""Build the synthetic shapes dataset: ``python tools/make_shapes.py [--root DIR] [--overwrite]``.

Writes ``DIR/shapes/{train,val}/*.png`` and ``DIR/shapes/annotations/instances_{train,val}.json``
(DIR defaults to ``$DETECTRON2_DATASETS``, else the repository's ``datasets/``).
Deterministic: the same arguments give byte-identical files.
"""
import argparse
import sys

from kd_det.detection.data.shapes import SPLITS, make_shapes


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=None, help="dataset root (default: $DETECTRON2_DATASETS or ./datasets)")
    p.add_argument("--train-images", type=int, default=SPLITS["train"][0])
    p.add_argument("--val-images", type=int, default=SPLITS["val"][0])
    p.add_argument("--overwrite", action="store_true", help="rewrite existing splits")
    a = p.parse_args(argv)
    if a.root is None:
        from kd_det.detection.data.datasets import datasets_root
        a.root = datasets_root()
    splits = {"train": (a.train_images, SPLITS["train"][1]), "val": (a.val_images, SPLITS["val"][1])}
    for split, path in make_shapes(a.root, splits, overwrite=a.overwrite).items():
        print(f"shapes_{split}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
