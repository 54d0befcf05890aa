"""The classification distiller: it only routes tensors.

The student runs once with gradients, the teacher once under ``torch.no_grad()`` in eval
mode; the distiller hands each loss of :class:`kd_det.losses.DistillLoss` exactly the
inputs its ``required_inputs()`` asks for, from one fixed vocabulary. No method names
appear here: a new loss needs no change to this file.
"""
from typing import Callable, Dict, Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import ConfigError
from ..losses import DistillLoss
from .models import ClsNet

__all__ = ["Distiller", "build_distill_loss"]


def _frozen_call(module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """``module`` as a callable that never builds a graph (for the teacher classifier)."""

    def call(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return module(x)

    return call


def build_distill_loss(specs, student: ClsNet, teacher: ClsNet, num_samples: int,
                       num_classes: int):
    """``DistillLoss`` from config specs, its dimensions taken from the two models.

    Args:
        specs: list of {"name", "weight", "params", "inputs"} (``KD.LOSSES``).
        student, teacher: models exposing ``stage_channels``, ``stage_feat_channels`` and ``embed_dim``.
        num_samples: size of the training set (CRD's memory bank).
        num_classes: number of classes.

    Raises:
        ConfigError: an unknown loss, parameter or spec key (the loss library's sentence), or a
            spec with ``start_iter`` > 0 (the epoch loop does not hand the iteration to the losses;
            ``KD.WARMUP_EPOCHS`` ramps the distillation terms in instead).
    """
    for number, spec in enumerate(specs):
        start = spec.get("start_iter", 0) if hasattr(spec, "get") else 0
        if isinstance(start, int) and not isinstance(start, bool) and start > 0:
            raise ConfigError(f"KD.LOSSES entry {number} ({spec.get('name')!r}) sets start_iter {start}, which "
                              "classification training does not support; remove it or use KD.WARMUP_EPOCHS.")
    shapes = {
        "logits_s": num_classes, "logits_t": num_classes,
        "emb_s": student.embed_dim, "emb_t": teacher.embed_dim,
        "feats_s": list(student.stage_channels), "feats_t": list(teacher.stage_channels),
        "stage_feats_s": list(student.stage_feat_channels), "stage_feats_t": list(teacher.stage_feat_channels),
        "preact_feats_s": list(student.stage_feat_channels), "preact_feats_t": list(teacher.stage_feat_channels),
        "num_samples": num_samples, "num_classes": num_classes,
    }
    try:
        return DistillLoss([dict(s) for s in specs], shapes)
    except ValueError as e:
        raise ConfigError(f"KD.LOSSES: {e}") from None


class Distiller(nn.Module):
    """Student + learnable loss parts; the frozen teacher is held outside the module tree.

    The teacher is not a registered sub-module, so it is neither in ``state_dict()`` (it
    comes from its own checkpoint) nor seen by DistributedDataParallel. It is frozen three
    ways: ``requires_grad=False``, ``eval()`` whenever the distiller is put in training mode,
    forward under ``torch.no_grad()``.

    Args:
        student: the trained model.
        teacher: the frozen teacher, or None for plain cross-entropy training.
        criterion: a ``kd_det.losses.DistillLoss`` (None without a teacher).
        ce_weight: weight of the label cross-entropy.
    """

    #: every input the distiller can provide to a loss
    VOCABULARY = ("logits_s", "logits_t", "emb_s", "emb_t", "feats_s", "feats_t", "stage_feats_s",
                  "stage_feats_t", "preact_feats_s", "preact_feats_t", "target", "index",
                  "contrast_index", "teacher_classifier")

    def __init__(self, student: ClsNet, teacher: Optional[ClsNet] = None,
                 criterion: Optional[nn.Module] = None, ce_weight: float = 1.0):
        super().__init__()
        self.student = student
        self.criterion = criterion
        self.ce_weight = float(ce_weight)
        self._teacher = (teacher,)  # a tuple hides it from nn.Module registration
        self.required = set(criterion.required_inputs()) if criterion is not None else set()
        optional = (getattr(criterion, "optional_inputs", set)() if criterion is not None else set())
        self.wanted = self.required | (set(optional) & set(self.VOCABULARY))
        missing = self.required - set(self.VOCABULARY)
        if missing:
            raise ConfigError(f"The classification distiller cannot provide loss inputs "
                             f"{sorted(missing)}; it provides {', '.join(self.VOCABULARY)}.")
        if teacher is not None:
            for p in teacher.parameters():
                p.requires_grad_(False)
            teacher.eval()

    @property
    def teacher(self) -> Optional[ClsNet]:
        return self._teacher[0]

    def train(self, mode: bool = True) -> "Distiller":
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def _apply(self, fn, *args, **kwargs):  # .to(device) / .half() also move the teacher
        if self.teacher is not None:
            self.teacher._apply(fn, *args, **kwargs)
        return super()._apply(fn, *args, **kwargs)

    def forward(self, images: torch.Tensor, target: torch.Tensor,
                index: Optional[torch.Tensor] = None,
                contrast_index: Optional[torch.Tensor] = None) -> Tuple[Dict[str, torch.Tensor], torch.Tensor]:
        """One training step's losses.

        Args:
            images: (N, 3, H, W).
            target: (N,) int64 labels.
            index: (N,) int64 training-set indices (CRD's memory bank).
            contrast_index: (N, K + 1) int64 CRD negatives from the data loader, or None.

        Returns:
            (losses, student logits): losses maps "loss_ce" and every "loss_<name>" of the
            criterion to a weighted scalar; logits is (N, num_classes).
        """
        out_s = self.student(images, with_features=True, preact="preact_feats_s" in self.wanted)
        losses = {"loss_ce": self.ce_weight * F.cross_entropy(out_s["logits"].float(), target)}
        if self.criterion is None:
            return losses, out_s["logits"]
        teacher = self.teacher
        with torch.no_grad():
            out_t = teacher(images, with_features=True, preact="preact_feats_t" in self.wanted)
        available = {
            "logits_s": out_s["logits"], "logits_t": out_t["logits"],
            "emb_s": out_s["emb"], "emb_t": out_t["emb"],
            "feats_s": out_s["feats"], "feats_t": out_t["feats"],
            "stage_feats_s": out_s["stage_feats"], "stage_feats_t": out_t["stage_feats"],
            "preact_feats_s": out_s["preact_feats"], "preact_feats_t": out_t["preact_feats"],
            "target": target, "index": index, "contrast_index": contrast_index,
            "teacher_classifier": _frozen_call(teacher.get_classifier()),
        }
        losses.update(self.criterion(**{k: available[k] for k in self.wanted}))
        return losses, out_s["logits"]
