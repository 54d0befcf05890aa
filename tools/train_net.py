#!/usr/bin/env python
"""Train or evaluate a Faster R-CNN FPN (or a kd_det distillation model) with Detectron2.

Same command line as Detectron2's tools/train_net.py::

    python tools/train_net.py --config-file configs/shapes/faster_rcnn_R_18_FPN_shapes.yaml
    python tools/train_net.py --config-file CFG --eval-only MODEL.WEIGHTS output/model_final.pth
    python tools/train_net.py --config-file CFG --num-gpus 8 [--resume] [KEY VALUE ...]
    python tools/train_net.py --config-file DISTILL_CFG --eval-teacher   # teacher row, same evaluator

On a machine without GPUs ``--num-gpus N`` starts N CPU processes (Gloo). ``--config`` (train_cls.py's
spelling) is the same as ``--config-file``. ``--eval-only`` on a distillation config scores its student
alone: the teacher is neither built nor loaded.
"""
import argparse
import sys

import kd_det  # noqa: F401  (applies kd_det.compat before Detectron2 is imported)
from detectron2.engine import default_argument_parser

from kd_det.detection.engine import Trainer, evaluate_teacher, launch, setup
from kd_det.detection.engine.checkpoint import KDCheckpointer
from kd_det.errors import UserError
from kd_det.detection.modeling import student_config


def main(args):
    cfg = setup(args)
    if args.eval_teacher:
        return evaluate_teacher(cfg)
    if args.eval_only:  # the student alone (a DistillRCNN config's teacher is not needed to score it)
        model = Trainer.build_model(student_config(cfg))
        KDCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        return Trainer.test(cfg, model)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def cli(argv=None):
    parser = default_argument_parser()
    parser.add_argument("--config", dest="config_file", metavar="FILE", default=argparse.SUPPRESS,
                        help="same as --config-file")
    parser.add_argument("--eval-teacher", action="store_true",
                        help="evaluate the KD.TEACHER model with the same evaluator (OUTPUT_DIR/teacher_eval/)")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of input errors")
    args = parser.parse_args(argv)
    try:
        launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
               dist_url=args.dist_url, args=(args,))
    except UserError as e:
        if args.debug:
            raise
        print(f"train_net.py: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli())
