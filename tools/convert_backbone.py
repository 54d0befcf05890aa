#!/usr/bin/env python
"""Convert a (distilled) ImageNet classification checkpoint into Detectron2 backbone weights.

    python tools/convert_backbone.py output/classification/imagenet/resnet34-resnet18/dcd/model_final.pth \
        output/backbones/r18_dcd.pkl

Then train the detection student with ``MODEL.WEIGHTS output/backbones/r18_dcd.pkl`` plus the
printed settings (the R-18 / R-34 / MobileNetV2 configs of configs/COCO-Detection already have the
input ones). ResNet-18/34/50/101/152 and MobileNetV2 (torchvision layout) are supported. The file
records the input normalisation it needs (and STRIDE_IN_1X1 False for R-50 and deeper); kd_det refuses
to load it into a model whose config disagrees.
"""
import argparse
import sys

from kd_det.classification.convert import convert_checkpoint, detectron2_settings, required_settings
from kd_det.errors import UserError


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("src", help="classification checkpoint (.pth)")
    p.add_argument("dst", help="output Detectron2 weights (.pkl or .pth)")
    p.add_argument("--prefix", default="backbone.bottom_up.",
                   help="prepended to every name: 'backbone.bottom_up.' for FPN backbones (default); "
                        "'' for bare names (with --matching-heuristics)")
    p.add_argument("--matching-heuristics", action="store_true",
                   help="let Detectron2 match names by suffix instead of exactly")
    args = p.parse_args(argv)
    try:
        arch, depth, n = convert_checkpoint(args.src, args.dst, args.prefix, args.matching_heuristics)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    name = f"ResNet-{depth}" if arch == "resnet" else "MobileNetV2"
    print(f"Wrote {n} {name} backbone tensors to {args.dst}.")
    print("Detectron2 settings for this backbone: " + " ".join(detectron2_settings(arch, depth)))
    print(f"Recorded in {args.dst} (loading it with other values is refused): "
          + ", ".join(required_settings(arch, depth)) + ".")
    return 0


if __name__ == "__main__":
    sys.exit(main())
