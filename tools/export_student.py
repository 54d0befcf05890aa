#!/usr/bin/env python
"""Export a distilled student as a plain Detectron2 checkpoint (teacher and distillation parts dropped).

    python tools/export_student.py --config-file configs/shapes/distill/dcd.yaml \
        --weights output/demo/dcd/model_final.pth --output exported/dcd

The result loads with stock Detectron2 (``build_model`` + ``DetectionCheckpointer``), no kd_det code.
Caveat: the exported config.yaml keeps kd_det's extra keys (KD.*); stock ``get_cfg()`` users should
load it with ``cfg.set_new_allowed(True)`` or copy the MODEL section.
"""
import argparse
import sys

import kd_det  # noqa: F401
from kd_det.errors import UserError
from kd_det.detection.modeling.export import export_student


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, help="the distillation config used for training")
    p.add_argument("--weights", required=True, help="checkpoint written by train_net.py")
    p.add_argument("--output", required=True, help="folder for model_final.pth + config.yaml")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    a = p.parse_args(argv)
    try:
        ckpt, cfg, dropped = export_student(a.config_file, a.weights, a.output, a.opts)
    except UserError as e:
        print(f"export_student.py: error: {e}", file=sys.stderr)
        return 2
    print(f"Student checkpoint: {ckpt} ({dropped} distillation tensors dropped)\nConfig: {cfg}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
