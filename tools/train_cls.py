#!/usr/bin/env python
"""Train a classification teacher, student or distilled student from a config.

    python tools/train_cls.py --config configs/classification/cifar100/resnet32x4-resnet8x4/teacher.yaml \
        DATA.ROOT datasets      # writes output/classification/cifar100/teachers/resnet32x4/model_final.pth
    python tools/train_cls.py --config configs/classification/cifar100/resnet32x4-resnet8x4/dcd.yaml \
        DATA.ROOT datasets KD.TEACHER.WEIGHTS output/classification/cifar100/teachers/resnet32x4/model_final.pth
    torchrun --nproc_per_node 2 tools/train_cls.py --config ... [KEY VALUE ...]   # DDP
    python tools/train_cls.py --config ... --resume        # continue from last_checkpoint.pth
    python tools/train_cls.py --config ... --eval-only MODEL.WEIGHTS path.pth   # the teacher is not loaded

``--config-file`` (train_net.py's spelling) is the same as ``--config``.

The logic lives in :mod:`kd_det.classification.engine`; this file only parses arguments.
"""
import argparse
import json
import logging
import sys

from kd_det.classification import dist
from kd_det.config.classification import load_cls_config
from kd_det.classification.engine import evaluate_config, train
from kd_det.errors import UserError
from kd_det.weights_catalog import require_weights


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", "--config-file", dest="config", required=True,
                   help="configs/classification/... .yaml")
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/last_checkpoint.pth")
    p.add_argument("--eval-only", action="store_true", help="only evaluate MODEL.WEIGHTS")
    p.add_argument("--debug", action="store_true", help="show tracebacks of configuration errors")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = p.parse_args(argv)
    for flag in ("--resume", "--eval-only", "--debug"):  # also accepted after the overrides
        while flag in args.opts:
            args.opts.remove(flag)
            setattr(args, flag[2:].replace("-", "_"), True)
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s", datefmt="%H:%M:%S")
    main_process = True
    try:
        cfg = load_cls_config(args.config, args.opts)
        cfg.freeze()
        require_weights("MODEL.WEIGHTS", cfg.MODEL.WEIGHTS)  # at start: missing -> the fetch / train command
        if cfg.KD.TEACHER.ARCH and not args.eval_only:
            require_weights("KD.TEACHER.WEIGHTS", cfg.KD.TEACHER.WEIGHTS)
        result = evaluate_config(cfg) if args.eval_only else train(cfg, resume=args.resume)
        main_process = dist.is_main()
    except UserError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    finally:
        dist.cleanup()
    if main_process:
        print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
