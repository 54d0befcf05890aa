"""Turn a command line into a ready config: file + overrides, checks, logging, output dir."""
import os

import torch
from detectron2.engine import default_setup
from detectron2.utils.logger import setup_logger

from ...config.detection import load_config
from ..data import setup_datasets
from ..modeling import check_distill_arch
from ...core.wandb_log import require_wandb
from ...errors import ConfigError
from ...weights_catalog import require_weights

__all__ = ["setup"]


def setup(args):
    """Config from ``args`` (Detectron2's parser), datasets checked, logging + output dir set up."""
    cfg = load_config(args.config_file, args.opts)
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"MODEL.DEVICE is {cfg.MODEL.DEVICE!r} but no CUDA GPU is visible; "
                          "add `MODEL.DEVICE cpu` to run on the CPU.")
    check_distill_arch(cfg)  # KD.LOSSES on a plain meta-architecture would train undistilled: refused
    require_wandb(cfg)  # SOLVER.WANDB.ENABLED without wandb: refused before anything trains
    if not (getattr(args, "eval_teacher", False)  # MODEL.WEIGHTS is read unless a teacher run or a resume skips it
            or (args.resume and os.path.isfile(os.path.join(cfg.OUTPUT_DIR, "last_checkpoint")))):
        require_weights("MODEL.WEIGHTS", cfg.MODEL.WEIGHTS)  # missing: the sentence names the fetch command
    setup_datasets(cfg)
    cfg.freeze()
    default_setup(cfg, args)
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=_rank(), name="kd_det", abbrev_name="kd_det")
    return cfg


def _rank():
    from detectron2.utils import comm

    return comm.get_rank()
