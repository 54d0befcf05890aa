"""Build and load the frozen teacher from its own config file and its own weights file."""
import hashlib
import logging
import os

import torch

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

from ... import REPO_ROOT
from ...config.detection import load_config, num_classes
from ...core import freeze_, isolated_rng
from ...errors import ConfigError
from ...weights_catalog import missing_weights_error
from ...safe_load import read_detectron2_weights
from .weights import check_required_settings

__all__ = ["MappedTeacher", "build_teacher", "file_sha256", "resolve_path", "select_teacher_logits",
           "teacher_for_eval", "teacher_logit_columns"]

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


def teacher_logit_columns(class_map, k_s, k_t, readers, config_file):
    """The teacher logit columns handed to the losses, from ``KD.TEACHER.CLASS_MAP`` (checked here).

    Student class i is teacher class ``class_map[i]``; background (the last column) stays last.
    A teacher of other classes is refused only when a loss reads ``logits_t`` and no map is set.

    Args:
        class_map: ``KD.TEACHER.CLASS_MAP``, K_s ints or empty.
        k_s, k_t: student / teacher ``MODEL.ROI_HEADS.NUM_CLASSES`` (k_t None: a teacher without box head, read by
            no loss).
        readers: tags of the KD.LOSSES entries that read ``logits_t`` (after ``inputs`` remaps).
        config_file: the teacher's config file (named in the sentences).

    Returns:
        None (the teacher's logits as they are) or the K_s + 1 column indices ``[*class_map, k_t]``.
    """
    class_map = list(class_map)
    if not class_map:
        if readers and k_s != k_t:
            raise ConfigError(
                f"Teacher config {config_file} has MODEL.ROI_HEADS.NUM_CLASSES {k_t} but the student has {k_s}, and "
                f"KD.LOSSES {', '.join(readers)} read the teacher's class logits (logits_t): set KD.TEACHER.CLASS_MAP "
                f"to the teacher class of each of the {k_s} student classes, or distill features only.")
        return None
    if not readers:
        raise ConfigError(f"KD.TEACHER.CLASS_MAP is {class_map} but no KD.LOSSES entry reads the teacher's class "
                          "logits (logits_t); remove the map.")
    if len(class_map) != k_s:
        raise ConfigError(f"KD.TEACHER.CLASS_MAP has {len(class_map)} entries; it needs one teacher class per "
                          f"student class ({k_s}).")
    bad = [c for c in class_map if type(c) is not int or not 0 <= c < k_t]
    if bad:
        raise ConfigError(f"KD.TEACHER.CLASS_MAP entry {bad[0]!r} is not a class index of the teacher "
                          f"({config_file}), an int in [0, {k_t}).")
    twice = [c for c in class_map if class_map.count(c) > 1]
    if twice:
        raise ConfigError(f"KD.TEACHER.CLASS_MAP names teacher class {twice[0]} twice.")
    return class_map + [k_t]


def select_teacher_logits(logits, columns):
    """(R, K_t + 1) teacher logits -> (R, len(columns)).

    ``columns`` comes from :func:`teacher_logit_columns`; None hands the logits over as they are.
    """
    return logits if columns is None else logits[:, columns]


class MappedTeacher(torch.nn.Module):
    """A teacher whose detections are expressed in the student's classes through ``KD.TEACHER.CLASS_MAP``:
    detections of unmapped teacher classes are dropped, the rest relabelled (for ``--eval-teacher``)."""

    def __init__(self, teacher, class_map):
        super().__init__()
        self.teacher = teacher
        k_t = teacher.roi_heads.num_classes if hasattr(teacher, "roi_heads") else teacher.num_classes  # R-CNN / dense
        lookup = torch.full((k_t,), -1, dtype=torch.long)
        lookup[torch.tensor(class_map)] = torch.arange(len(class_map))
        self.register_buffer("lookup", lookup, persistent=False)

    def forward(self, batched_inputs):
        outs = self.teacher(batched_inputs)
        for out in outs:
            inst = out["instances"]
            student_class = self.lookup.to(inst.pred_classes.device)[inst.pred_classes]
            inst = inst[student_class >= 0]
            inst.pred_classes = student_class[student_class >= 0]
            out["instances"] = inst
        return outs


def teacher_for_eval(cfg, teacher, tcfg):
    """The teacher as ``--eval-teacher`` scores it on the student's test sets: itself when the class counts
    agree and no map is set, else a :class:`MappedTeacher` (a map is required for other classes).

    Returns:
        (model, the class count it predicts).
    """
    (_, k_s), (_, k_t) = num_classes(cfg), num_classes(tcfg)  # each family's key (MODEL.RETINANET.NUM_CLASSES, ...)
    class_map = list(cfg.KD.TEACHER.CLASS_MAP)
    if not class_map:
        if k_s != k_t:
            raise ConfigError(
                f"--eval-teacher: the teacher ({resolve_path(cfg.KD.TEACHER.CONFIG_FILE)}) has {k_t} classes but the "
                f"student's test sets have {k_s}; set KD.TEACHER.CLASS_MAP to the teacher class of each student "
                "class to score it through the map.")
        return teacher, k_t
    teacher_logit_columns(class_map, k_s, k_t, ["--eval-teacher"], resolve_path(cfg.KD.TEACHER.CONFIG_FILE))
    return MappedTeacher(teacher, class_map), k_s
