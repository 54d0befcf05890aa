#!/usr/bin/env python
"""Export a distilled student: a plain Detectron2 checkpoint, or a TorchScript / ONNX graph for deployment.

    python tools/export_student.py --config-file configs/shapes/distill/dcd.yaml \
        --weights output/demo/dcd/model_final.pth --output exported/dcd [--format pth|torchscript|onnx]

Every format writes OUT/model_final.pth (student tensors; teacher and distillation parts dropped) and
OUT/config.yaml (the student's stock meta-architecture; keys stock Detectron2's get_cfg() lacks are dropped,
so it loads with build_model + DetectionCheckpointer and no kd_det code, MobileNetV2 students excepted).
torchscript adds OUT/model.ts and onnx OUT/model.onnx: one image in (float32 (3, H, W), 0-255, INPUT.FORMAT
order, any size), boxes (N, 4) xyxy / scores (N,) / classes (N,) int64 [/ masks (N, H, W) uint8] out;
docs/deploy.md shows how to run them (onnx needs `pip install -e ".[deploy]"`).
"""
import argparse
import sys

import kd_det  # noqa: F401
from kd_det.errors import UserError
from kd_det.detection.modeling.export import EXPORT_FORMATS, export_student


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, help="the distillation config used for training")
    p.add_argument("--weights", required=True, help="checkpoint written by train_net.py")
    p.add_argument("--output", required=True, help="folder for model_final.pth + config.yaml (+ the graph)")
    p.add_argument("--format", default="pth", help=f"one of {', '.join(EXPORT_FORMATS)} (default pth)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    a = p.parse_args(argv)
    try:
        out = export_student(a.config_file, a.weights, a.output, a.opts, fmt=a.format)
    except UserError as e:
        print(f"export_student.py: error: {e}", file=sys.stderr)
        return 2
    print(f"Student checkpoint: {out['checkpoint']} ({out['dropped']} distillation tensors dropped)\n"
          f"Config: {out['config']}")
    if "graph" in out:
        print(f"{a.format} graph: {out['graph']} (input image (3, H, W) float32 0-255; outputs "
              f"{', '.join(out['outputs'])})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
