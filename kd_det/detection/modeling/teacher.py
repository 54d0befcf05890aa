"""Build and load the frozen teacher from its own config file and its own weights file."""
import hashlib
import logging
import os

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

from ... import REPO_ROOT
from ...config.detection import load_config
from ...core import freeze_, isolated_rng
from ...errors import ConfigError
from ...weights_catalog import missing_weights_error
from ...safe_load import read_detectron2_weights
from .weights import check_required_settings

__all__ = ["build_teacher", "file_sha256", "resolve_path"]

logger = logging.getLogger(__name__)


def file_sha256(path, chunk=1 << 20):
    """Hex SHA-256 of a file (the teacher weights' identity recorded in logs and checkpoints)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def resolve_path(path):
    """A relative path as given if it exists from the working directory, else from the kd_det repository root."""
    if not path or os.path.isabs(path) or os.path.exists(path):
        return path
    in_repo = os.path.join(REPO_ROOT, path)
    return in_repo if os.path.exists(in_repo) else path


def _teacher_cfg(cfg, check=None):
    path = resolve_path(cfg.KD.TEACHER.CONFIG_FILE)
    if not path:
        raise ConfigError("KD.TEACHER.CONFIG_FILE is empty; DistillRCNN needs the teacher's Detectron2 config file.")
    if not os.path.isfile(path):
        raise ConfigError(f"KD.TEACHER.CONFIG_FILE {path} does not exist.")
    tcfg = load_config(path)
    if check is not None:
        check(tcfg, path)
    k_s, k_t = cfg.MODEL.ROI_HEADS.NUM_CLASSES, tcfg.MODEL.ROI_HEADS.NUM_CLASSES
    if k_s != k_t:
        raise ConfigError(f"Teacher config {path} has MODEL.ROI_HEADS.NUM_CLASSES {k_t} but the student has {k_s}; "
                          "logit distillation needs the same classes.")
    tcfg.defrost()
    tcfg.MODEL.DEVICE = cfg.MODEL.DEVICE
    tcfg.MODEL.WEIGHTS = resolve_path(cfg.KD.TEACHER.WEIGHTS)
    tcfg.freeze()
    return tcfg


def _load_checked(model, path, min_fraction, config_file=""):
    """Load ``path`` into ``model``; refuse if too few of the model's parameters were matched, or if
    ``path`` records input settings (a converted backbone) that ``config_file`` disagrees with."""
    if not path:
        raise ConfigError("KD.TEACHER.WEIGHTS is empty; a teacher needs trained weights.")
    if not os.path.isfile(path):
        raise missing_weights_error("KD.TEACHER.WEIGHTS", path, config_file)  # the fetch or train command
    data = read_detectron2_weights(path, "KD.TEACHER.WEIGHTS")
    check_required_settings(model, data, path, "KD.TEACHER.WEIGHTS",
                            f"KD.TEACHER.CONFIG_FILE {config_file}" if config_file else "the teacher config")
    ckpt = DetectionCheckpointer(model)
    incompatible = ckpt._load_model(data)
    total = len(model.state_dict())
    missed = set(incompatible.missing_keys) | {k for k, *_ in incompatible.incorrect_shapes}
    fraction = 1.0 - len(missed) / max(total, 1)
    if fraction < min_fraction:
        raise ConfigError(
            f"KD.TEACHER.WEIGHTS {path} matches only {fraction:.0%} of the teacher's {total} parameters "
            f"(KD.TEACHER.MIN_MATCHED_FRACTION {min_fraction}): is KD.TEACHER.CONFIG_FILE the network it was "
            "trained as?")
    return fraction


def build_teacher(cfg, check=None):
    """The frozen teacher of ``cfg`` (KD.TEACHER.*) and a record of what was loaded.

    ``check(teacher_cfg, path)``, if given, refuses a teacher config the caller cannot read (a distillation
    wrapper's :meth:`~kd_det.detection.modeling.wrapper.DistillDetector.check_teacher_config`).

    Returns:
        (the teacher model in eval mode with requires_grad off, its CfgNode,
        {"config_file", "weights", "sha256", "matched_fraction"}).
    """
    tcfg = _teacher_cfg(cfg, check)
    with isolated_rng():  # its random init is overwritten by its weights: draw nothing from the global RNGs
        teacher = build_model(tcfg)
    fraction = _load_checked(teacher, tcfg.MODEL.WEIGHTS, cfg.KD.TEACHER.MIN_MATCHED_FRACTION,
                             resolve_path(cfg.KD.TEACHER.CONFIG_FILE))
    freeze_(teacher)
    identity = {"config_file": os.path.abspath(resolve_path(cfg.KD.TEACHER.CONFIG_FILE)),
                "weights": os.path.abspath(tcfg.MODEL.WEIGHTS), "sha256": file_sha256(tcfg.MODEL.WEIGHTS),
                "matched_fraction": round(fraction, 4)}
    logger.info(f"Teacher: {identity}")
    return teacher, tcfg, identity
