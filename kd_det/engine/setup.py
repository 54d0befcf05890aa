"""Turn a command line into a ready config: file + overrides, checks, logging, output dir."""
import os

import torch
from detectron2.engine import default_setup
from detectron2.utils.logger import setup_logger

from ..config import get_cfg
from ..core import import_custom_modules
from ..data import setup_datasets
from ..errors import ConfigError
from ..kd_config import finish_kd, prepare_kd

__all__ = ["load_config", "setup"]


def load_config(config_file, opts=()):
    """``get_cfg()`` merged with ``config_file`` and ``KEY VALUE`` overrides; errors name the file/key.

    ``KD.LOSSES.<tag>.weight 2.0`` and the like change one loss entry (:func:`kd_det.kd_config.prepare_kd`).
    """
    if config_file and not os.path.isfile(config_file):
        raise ConfigError(f"Config file {config_file} does not exist.")
    import_custom_modules(config_file, opts)  # KD.CUSTOM_IMPORTS, before the merge: user losses register first
    cfg = get_cfg()
    if config_file:
        try:
            cfg.merge_from_file(config_file)
        except KeyError as e:
            raise ConfigError(f"Config file {config_file}: {e.args[0]} (not a key of kd_det's get_cfg()).") from None
        except FileNotFoundError as e:
            raise ConfigError(f"Config file {config_file}: its _BASE_ {e.filename} does not exist.") from None
    if len(opts) % 2:
        raise ConfigError(f"Overrides must be KEY VALUE pairs; {opts[-1]!r} has no value.")
    rest = prepare_kd(cfg, list(opts), "detection", config_file)  # old loss form, KD.LOSSES.<tag>.<field> overrides
    try:
        cfg.merge_from_list(rest)
    except KeyError as e:
        raise ConfigError(f"Override {e.args[0]} (not a key of kd_det's get_cfg()).") from None
    except (ValueError, AssertionError) as e:
        if str(e).startswith("Non-existent key: "):
            raise ConfigError(f"Override {str(e)[18:]} (not a key of kd_det's get_cfg()).") from None
        raise ConfigError(f"Override rejected: {e}.") from None
    return finish_kd(cfg, config_file, list(opts), "detection")  # specs validated, method label


def setup(args):
    """Config from ``args`` (Detectron2's parser), datasets checked, logging + output dir set up."""
    cfg = load_config(args.config_file, args.opts)
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"MODEL.DEVICE is {cfg.MODEL.DEVICE!r} but no CUDA GPU is visible; "
                          "add `MODEL.DEVICE cpu` to run on the CPU.")
    setup_datasets(cfg)
    cfg.freeze()
    default_setup(cfg, args)
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=_rank(), name="kd_det", abbrev_name="kd_det")
    return cfg


def _rank():
    from detectron2.utils import comm

    return comm.get_rank()
