"""Sigmoid KD: logit distillation for dense detectors with sigmoid class heads (RetinaNet, FCOS).

A dense head scores each class of each anchor (FCOS: location) with its own sigmoid, so there is no softmax
distribution to match; each (anchor, class) pair is a binary distribution ``[p, 1 - p]`` and the loss is the
binary KL divergence of student from teacher, summed over the K classes:

.. math::

    \\mathcal{L} = \\frac{T^2}{|S|} \\sum_{a \\in S} \\sum_{c=1}^{K}
        \\Big[p^T_{ac} \\log\\frac{p^T_{ac}}{p^S_{ac}} + (1 - p^T_{ac}) \\log\\frac{1 - p^T_{ac}}{1 - p^S_{ac}}\\Big],
    \\qquad p_{ac} = \\sigma(z_{ac} / T)

with ``S`` the anchor set: ``"positives"`` (anchors the student's own matching assigns to a class,
``0 <= anchor_labels < K``) or ``"non_ignored"`` (positives and background, ``anchor_labels >= 0``;
Detectron2's RetinaNet ignores anchors between its IoU thresholds with -1, FCOS ignores none).

Source: this is kd_det's own form, a per-class binary KD (Hinton's KD with each sigmoid as a two-way softmax,
T^2 scaled as Hinton et al. 2015); it is not taken from a specific paper. Its gradient in the student logits
is that of a binary cross-entropy with the teacher's softened probabilities as targets (the two differ by the
teacher's entropy, a constant), ``(p^S - p^T) T / |S|`` per logit.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from . import checks
from .base import LossExample, LossModule, example_rng
from .checks import check_logit_pair, check_positive
from .precision import cast, compute_dtype, fp32_math, graph_zero
from .registry import register_loss

__all__ = ["sigmoid_kd_loss", "SigmoidKDLoss", "ANCHOR_SETS"]

#: ``anchor_set`` values: which anchors count (and normalise).
ANCHOR_SETS = ("positives", "non_ignored")
_NAMES = ("anchor_logits_s", "anchor_logits_t")


def _check_anchor_set(loss: str, anchor_set) -> None:
    if anchor_set not in ANCHOR_SETS:
        raise ValueError(f"{loss}: parameter 'anchor_set' must be one of {', '.join(map(repr, ANCHOR_SETS))}, "
                         f"got {anchor_set!r}.")


def _check_labels(loss: str, labels: Tensor, n: int, k: int) -> None:
    if not isinstance(labels, Tensor) or labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError(f"{loss}: input 'anchor_labels' must be an integer tensor (A,) of class indices "
                         "(K = background, -1 = ignored).")
    if labels.dim() != 1 or labels.shape[0] != n:
        raise ValueError(f"{loss}: 'anchor_labels' has shape {tuple(labels.shape)} but the logits have {n} rows; "
                         f"expected ({n},).")
    if checks._FINITE_CHECK and n and (int(labels.min()) < -1 or int(labels.max()) > k):
        raise ValueError(f"{loss}: 'anchor_labels' holds values outside [-1, {k}] "
                         f"(got {int(labels.min())}..{int(labels.max())}).")


@fp32_math
def sigmoid_kd_loss(anchor_logits_s: Tensor, anchor_logits_t: Tensor, anchor_labels: Tensor,
                    temperature: float = 1.0, anchor_set: str = "positives") -> Tensor:
    """Per-class binary KL(sigma(t/T) || sigma(s/T)), summed over classes, x T^2, averaged over the anchor set.

    Args:
        anchor_logits_s: (A, K) student sigmoid class logits, one row per anchor over the batch.
        anchor_logits_t: (A, K) teacher logits on the same anchors (run the teacher under no_grad).
        anchor_labels: (A,) int64 class of each anchor from the student's matching, K = background, -1 = ignored.
        temperature: T > 0.
        anchor_set: "positives" (0 <= label < K) or "non_ignored" (label >= 0).

    Returns:
        0-dim tensor (float32, or float64 for float64 inputs); an empty set gives a graph-connected 0.
    """
    check_positive("sigmoid_kd", "temperature", temperature)
    _check_anchor_set("sigmoid_kd", anchor_set)
    check_logit_pair("sigmoid_kd", anchor_logits_s, anchor_logits_t, _NAMES)
    n, k = anchor_logits_s.shape
    _check_labels("sigmoid_kd", anchor_labels, n, k)
    keep = (anchor_labels >= 0) & (anchor_labels < k) if anchor_set == "positives" else anchor_labels >= 0
    if not bool(keep.any()):
        return graph_zero(anchor_logits_s, anchor_logits_t)
    dtype = compute_dtype(anchor_logits_s, anchor_logits_t)
    z_s = cast(anchor_logits_s[keep], dtype) / temperature                                  # (|S|, K)
    z_t = cast(anchor_logits_t[keep], dtype) / temperature
    log_p_t, log_q_t = F.logsigmoid(z_t), F.logsigmoid(-z_t)                                # log p, log (1 - p)
    kl = log_p_t.exp() * (log_p_t - F.logsigmoid(z_s)) + log_q_t.exp() * (log_q_t - F.logsigmoid(-z_s))
    return kl.sum() / z_s.shape[0] * temperature ** 2


@register_loss
class SigmoidKDLoss(LossModule):
    """Sigmoid KD as a module (see :func:`sigmoid_kd_loss` and the module docstring for the form and its source).

    Args:
        temperature: T > 0 (1.0: the detection KD rows' value).
        anchor_set: "positives" (default) or "non_ignored".
    """

    NAME = "sigmoid_kd"
    LABEL = "SigmoidKD"
    INPUTS = ("anchor_logits_s", "anchor_logits_t", "anchor_labels")

    def __init__(self, temperature: float = 1.0, anchor_set: str = "positives"):
        super().__init__()
        check_positive(self.NAME, "temperature", temperature)
        _check_anchor_set(self.NAME, anchor_set)
        self.temperature = float(temperature)
        self.anchor_set = anchor_set

    @classmethod
    def example_inputs(cls, n: int = 4, seed: int = 0, dtype: torch.dtype = torch.float32) -> LossExample:
        """(n, 5) student / teacher anchor logits, labels cycling 0..4 (classes), 5 (background), -1 (ignored)."""
        _, r = example_rng(seed, dtype)
        labels = torch.arange(n) % 7
        labels[labels == 6] = -1
        inputs = {"anchor_logits_s": r(n, 5), "anchor_logits_t": r(n, 5), "anchor_labels": labels}
        return LossExample({}, {"anchor_logits_s": 5, "anchor_logits_t": 5}, inputs)

    def forward(self, anchor_logits_s: Tensor, anchor_logits_t: Tensor, anchor_labels: Tensor) -> Tensor:
        """(A, K), (A, K), (A,) -> 0-dim loss."""
        return sigmoid_kd_loss(anchor_logits_s, anchor_logits_t, anchor_labels, self.temperature, self.anchor_set)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, anchor_set={self.anchor_set!r}"
