"""The classification distiller: it only routes tensors.

The student runs once with gradients, the teacher (if a loss consumes one of its outputs) once
under ``torch.no_grad()`` in eval mode; the distiller hands each loss of
:class:`kd_det.losses.DistillLoss` exactly the inputs its ``required_inputs()`` /
``optional_inputs()`` ask for, from :attr:`Distiller.PROVIDED_INPUTS` (a loss needing anything
else is refused at build). No method names appear here: a new loss needs no change to this file.
"""
from typing import Callable, Dict, Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from ..core import DistillContract, FrozenTeacherMixin, TeacherMode
from .models import ClsNet

__all__ = ["Distiller", "build_distill_loss"]


def _frozen_call(module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """``module`` as a callable that never builds a graph (for the teacher classifier)."""

    def call(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return module(x)

    return call


def build_distill_loss(specs, student: ClsNet, teacher: ClsNet, num_samples: int, num_classes: int,
                       warmup: int = 0):
    """``DistillLoss`` from config specs, its dimensions taken from the two models (:meth:`Distiller.build_distill`).

    Args:
        specs: ``KD.LOSSES``, a list of {name, weight, params, inputs, tag} (:mod:`kd_det.config.schema`; a spec
            with ``start_iter`` > 0 was refused at load: the epoch loop ramps terms in with ``warmup`` instead).
        student, teacher: models exposing ``stage_channels``, ``stage_feat_channels`` and ``embed_dim``.
        num_samples: size of the training set (CRD's memory bank).
        num_classes: number of classes.
        warmup: ``KD.WARMUP_EPOCHS``: epochs over which the terms ramp in (DistillLoss's schedule, step = epoch).

    Raises:
        ConfigError: a loss needs an input classification does not provide, or refuses its parameters.
    """
    shapes = {
        "logits_s": num_classes, "logits_t": num_classes,
        "emb_s": student.embed_dim, "emb_t": teacher.embed_dim,
        "feats_s": list(student.stage_channels), "feats_t": list(teacher.stage_channels),
        "stage_feats_s": list(student.stage_feat_channels), "stage_feats_t": list(teacher.stage_feat_channels),
        "preact_feats_s": list(student.stage_feat_channels), "preact_feats_t": list(teacher.stage_feat_channels),
        "num_samples": num_samples, "num_classes": num_classes,
    }
    return Distiller.build_distill(specs, shapes, warmup=warmup)


class Distiller(DistillContract, FrozenTeacherMixin):
    """Student + learnable loss parts; the frozen teacher is held outside the module tree.

    The teacher (:class:`kd_det.core.FrozenTeacherMixin`) is neither in ``state_dict()`` (it
    comes from its own checkpoint) nor seen by DistributedDataParallel or the optimizer. It is
    frozen three ways: ``requires_grad=False``, ``eval()`` whenever the distiller is put in
    training mode, forward under ``torch.no_grad()``; and it runs only when a loss consumes one
    of its outputs.

    Args:
        student: the trained model.
        teacher: the frozen teacher, or None for plain cross-entropy training.
        criterion: a ``kd_det.losses.DistillLoss`` (None without a teacher), held as ``self.distill``; it may
            only need inputs of :attr:`PROVIDED_INPUTS`.
        ce_weight: weight of the label cross-entropy.
        teacher_mode: the teacher's own precision and memory format (:class:`kd_det.core.TeacherMode`;
            ``KD.TEACHER.PRECISION`` / ``CHANNELS_LAST``); default: the student's precision, NCHW.
    """

    TASK = "classification"
    #: The loss inputs a classification training step provides (names of kd_det.losses.vocabulary.INPUTS).
    PROVIDED_INPUTS = ("logits_s", "logits_t", "emb_s", "emb_t", "feats_s", "feats_t", "stage_feats_s",
                       "stage_feats_t", "preact_feats_s", "preact_feats_t", "target", "index",
                       "contrast_index", "teacher_classifier")
    #: Teacher part -> the provided inputs it produces (the forward runs only if a loss takes one of its outputs).
    TEACHER_PARTS = {"forward": ("logits_t", "emb_t", "feats_t", "stage_feats_t", "preact_feats_t"),
                     "classifier": ("teacher_classifier",)}

    def __init__(self, student: ClsNet, teacher: Optional[ClsNet] = None,
                 criterion: Optional[nn.Module] = None, ce_weight: float = 1.0,
                 teacher_mode: Optional[TeacherMode] = None):
        super().__init__()
        self.student = student
        self.teacher_mode = teacher_mode or TeacherMode()
        self.teacher = None if teacher is None else self.teacher_mode.prepare(teacher)
        self.ce_weight = float(ce_weight)
        self.attach_distill(criterion)

    def forward(self, images: torch.Tensor, target: torch.Tensor,
                index: Optional[torch.Tensor] = None,
                contrast_index: Optional[torch.Tensor] = None,
                epoch: Optional[int] = None) -> Tuple[Dict[str, torch.Tensor], torch.Tensor]:
        """One training step's losses.

        Args:
            images: (N, 3, H, W).
            target: (N,) int64 labels.
            index: (N,) int64 training-set indices (CRD's memory bank).
            contrast_index: (N, K + 1) int64 CRD negatives from the data loader, or None.
            epoch: the 0-based epoch (the terms' warm-up, ``KD.WARMUP_EPOCHS``); needed only with a warm-up.

        Returns:
            (losses, student logits): losses maps "loss_ce" and every "loss_<name>" of the
            criterion to a weighted scalar; logits is (N, num_classes).
        """
        out_s = self.student(images, with_features=True, preact="preact_feats_s" in self.needs)
        losses = {"loss_ce": self.ce_weight * F.cross_entropy(out_s["logits"].float(), target)}
        if self.distill is None:
            return losses, out_s["logits"]
        available = {
            "logits_s": out_s["logits"], "emb_s": out_s["emb"], "feats_s": out_s["feats"],
            "stage_feats_s": out_s["stage_feats"], "preact_feats_s": out_s["preact_feats"],
            "target": target, "index": index, "contrast_index": contrast_index,
        }
        if "forward" in self.teacher_parts:
            with self.teacher_mode.context():
                out_t = self.teacher_mode.outputs(
                    self.teacher(images, with_features=True, preact="preact_feats_t" in self.needs))
            available.update(logits_t=out_t["logits"], emb_t=out_t["emb"], feats_t=out_t["feats"],
                             stage_feats_t=out_t["stage_feats"], preact_feats_t=out_t["preact_feats"])
        if "teacher_classifier" in self.needs:
            available["teacher_classifier"] = _frozen_call(self.teacher.get_classifier())
        losses.update(self.distill(step=epoch, **{k: available[k] for k in self.needs}))
        return losses, out_s["logits"]
