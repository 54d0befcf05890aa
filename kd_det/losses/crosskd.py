"""CrossKD (Wang et al., CVPR 2024): prediction mimicking through the teacher's head.

The student's dense-head features after ``L`` convolutions of each branch (before that layer's activation) are
scale-aligned to the teacher's features of the same layer (:func:`align_scale`), passed through the frozen
teacher's remaining head layers, and the resulting *cross-head* predictions mimic the teacher's own (Sec. 3.2,
Eq. 3-4 of the paper). The detection wrapper computes the cross-head tensors (it owns the heads); this module
holds the two pieces that are pure tensor math: the scale alignment and the loss.

For the anchors (FCOS: locations) of the batch, with ``w_a = 1`` unless the student's matching ignores anchor
``a`` (``anchor_labels == -1``, then 0) and ``N_pos = max(#positive anchors, 1)``:

.. math::

    \\mathcal{L} = \\frac{\\lambda_{cls}}{N_{pos}} \\sum_a w_a \\sum_{c=1}^{K}
        \\mathrm{BCE}(\\hat z_{ac}, \\sigma(z^T_{ac}))\\,|\\sigma(\\hat z_{ac}) - \\sigma(z^T_{ac})|^{\\beta}
      + \\frac{\\lambda_{reg}}{N_{pos}} \\sum_a w_a\\, \\sigma(\\max_c z^T_{ac})\\, \\ell(\\hat b_a, b^T_a)

with ``\\hat z`` / ``\\hat b`` the cross-head class logits / decoded boxes, ``z^T`` / ``b^T`` the teacher's, the
classification term the KD quality focal loss and ``\\ell`` the GIoU loss ``1 - GIoU`` (RetinaNet) or the IoU loss
``-log IoU`` (FCOS).

Source: jbwang1997/CrossKD ``mmdet/models/detectors/crosskd_retinanet.py`` (``align_scale``,
``reuse_teacher_head``, ``pred_mimicking_loss_single``), ``mmdet/models/losses/kd_loss.py``
(``kd_quality_focal_loss``) and mmdet's ``GIoULoss`` / ``IoULoss`` (eps 1e-6); golden values from that code in
``tests/fixtures/crosskd_golden.pt``. Stated differences: the normaliser is the batch's positive count (the
reference sums ``max(positives, 1)`` per image, equal whenever every image has a positive anchor); for FCOS the
authors normalise by the positives' centerness-target sum, kd_det by the positive count for both families.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import LossExample, LossModule, example_rng
from .checks import check_finite, check_logit_pair, check_nonnegative, check_positive
from .precision import cast, compute_dtype, fp32_math, graph_zero
from .registry import register_loss
from .sigmoid_kd import _check_labels

__all__ = ["align_scale", "crosskd_loss", "CrossKDLoss", "REG_LOSSES"]

#: ``reg_loss`` values: the box term of the authors' RetinaNet ("giou") and FCOS ("iou") configs.
REG_LOSSES = ("giou", "iou")
_EPS = 1e-6  # mmdet GIoULoss / IoULoss eps


def align_scale(feat_s: Tensor, feat_t: Tensor, eps: float = 1e-6) -> Tensor:
    """The student's map standardised per channel over (N, H, W) and given the teacher's per-channel mean / std
    (unbiased), as CrossKD's ``align_scale``; the student's statistics keep their gradient.

    Args:
        feat_s: (N, C, H, W) student head features of one level.
        feat_t: (N, C, H, W) teacher head features of the same level and layer.

    Returns:
        (N, C, H, W) in ``feat_s``'s dtype; with a single value per channel (N*H*W = 1), where the unbiased std is
        undefined, the teacher's map (graph-connected, zero gradient).
    """
    if feat_s.shape != feat_t.shape:
        raise ValueError(f"crosskd: student head features {tuple(feat_s.shape)} and teacher head features "
                         f"{tuple(feat_t.shape)} differ; CrossKD needs heads of the same width on the same levels.")
    s = feat_s.transpose(0, 1).flatten(1)                                                     # (C, N*H*W)
    if s.shape[1] < 2:  # one value per channel (a 1x1 level of one image): no spread to align (the authors' std is
        return feat_s * 0 + feat_t.to(feat_s.dtype)  # NaN here); the teacher's value, connected, zero gradient
    t = feat_t.transpose(0, 1).flatten(1).to(s.dtype)
    s = (s - s.mean(dim=1, keepdim=True)) / (s.std(dim=1, keepdim=True) + eps)
    s = s * t.std(dim=1, keepdim=True) + t.mean(dim=1, keepdim=True)
    return s.view(feat_s.shape[1], feat_s.shape[0], *feat_s.shape[2:]).transpose(0, 1)


def _box_iou(a: Tensor, b: Tensor, giou: bool) -> Tensor:
    """Aligned (A, 4) x (A, 4) xyxy -> (A,) IoU or GIoU, as mmdet's ``bbox_overlaps(is_aligned=True, eps=1e-6)``."""
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    wh = (torch.min(a[:, 2:], b[:, 2:]) - torch.max(a[:, :2], b[:, :2])).clamp(min=0)
    overlap = wh[:, 0] * wh[:, 1]
    union = (area_a + area_b - overlap).clamp(min=_EPS)
    iou = overlap / union
    if not giou:
        return iou
    ewh = (torch.max(a[:, 2:], b[:, 2:]) - torch.min(a[:, :2], b[:, :2])).clamp(min=0)
    enclose = (ewh[:, 0] * ewh[:, 1]).clamp(min=_EPS)
    return iou - (enclose - union) / enclose


def _check_boxes(name: str, boxes, n: int) -> None:
    if not isinstance(boxes, Tensor) or not boxes.is_floating_point() or boxes.dim() != 2 or boxes.shape != (n, 4):
        got = tuple(boxes.shape) if isinstance(boxes, Tensor) else type(boxes).__name__
        raise ValueError(f"crosskd: input '{name}' must be a floating (A, 4) tensor of xyxy boxes with A = {n} (one "
                         f"per anchor of the logits), got {got}.")
    check_finite("crosskd", name, boxes)


@fp32_math
def crosskd_loss(cross_logits_s: Tensor, anchor_logits_t: Tensor, cross_boxes_s: Tensor, anchor_boxes_t: Tensor,
                 anchor_labels: Tensor, cls_weight: float = 1.0, reg_weight: float = 1.0, beta: float = 1.0,
                 reg_loss: str = "giou") -> Tensor:
    """CrossKD's prediction-mimicking loss (module docstring).

    Args:
        cross_logits_s: (A, K) cross-head class logits (the teacher's class branch on the student's features).
        anchor_logits_t: (A, K) the teacher's class logits on the same anchors.
        cross_boxes_s: (A, 4) xyxy boxes of the cross-head box branch, decoded at the anchors.
        anchor_boxes_t: (A, 4) xyxy boxes the teacher predicts at the same anchors.
        anchor_labels: (A,) int64 student matching, K = background, -1 = ignored (weight 0).
        cls_weight, reg_weight: >= 0, the two terms' weights.
        beta: > 0, the quality-focal exponent.
        reg_loss: "giou" (1 - GIoU) or "iou" (-log IoU).

    Returns:
        0-dim tensor (float32, or float64 for float64 inputs); no anchors give a graph-connected 0.
    """
    check_logit_pair("crosskd", cross_logits_s, anchor_logits_t, ("cross_logits_s", "anchor_logits_t"))
    n, k = cross_logits_s.shape
    _check_labels("crosskd", anchor_labels, n, k)
    _check_boxes("cross_boxes_s", cross_boxes_s, n)
    _check_boxes("anchor_boxes_t", anchor_boxes_t, n)
    if n == 0:
        return graph_zero(cross_logits_s, anchor_logits_t, cross_boxes_s, anchor_boxes_t)
    dtype = compute_dtype(cross_logits_s, anchor_logits_t, cross_boxes_s, anchor_boxes_t)
    z_s, z_t = cast(cross_logits_s, dtype), cast(anchor_logits_t, dtype)
    weight = (anchor_labels >= 0).to(dtype)                                                       # (A,)
    num_pos = ((anchor_labels >= 0) & (anchor_labels < k)).sum().clamp(min=1).to(dtype)
    p_t = z_t.sigmoid()
    qfl = F.binary_cross_entropy_with_logits(z_s, p_t, reduction="none") * (z_s.sigmoid() - p_t).abs().pow(beta)
    cls = (qfl * weight[:, None]).sum() / num_pos
    iou = _box_iou(cast(cross_boxes_s, dtype), cast(anchor_boxes_t, dtype), giou=reg_loss == "giou")
    box = 1 - iou if reg_loss == "giou" else -iou.clamp(min=_EPS).log()
    reg_w = z_t.max(dim=1).values.sigmoid() * weight                                             # (A,)
    reg = (box * reg_w).sum() / num_pos
    return cls_weight * cls + reg_weight * reg


@register_loss
class CrossKDLoss(LossModule):
    """CrossKD as a module (see :func:`crosskd_loss`; its parameters below, defaults the authors' RetinaNet row).

    Args:
        cls_weight: >= 0 (1.0: ``crosskd_r50_retinanet_r101_fpn_2x_coco.py``; FCOS 0.4).
        reg_weight: >= 0 (1.0 RetinaNet; FCOS 0.75).
        beta: > 0, KDQualityFocalLoss ``beta`` (1 in every config of the authors).
        reg_loss: "giou" (RetinaNet: ``GIoULoss``) or "iou" (FCOS: ``IoULoss``, log mode).

    Which head layer the student's features leave for the teacher's head is the wrapper's input, not a loss
    parameter: ``KD.CROSS_HEAD_LAYER`` (the authors' ``reused_teacher_head_idx``).
    """

    NAME = "crosskd"
    LABEL = "CrossKD"
    INPUTS = ("cross_logits_s", "anchor_logits_t", "cross_boxes_s", "anchor_boxes_t", "anchor_labels")

    def __init__(self, cls_weight: float = 1.0, reg_weight: float = 1.0, beta: float = 1.0, reg_loss: str = "giou"):
        super().__init__()
        check_nonnegative(self.NAME, "cls_weight", cls_weight)
        check_nonnegative(self.NAME, "reg_weight", reg_weight)
        check_positive(self.NAME, "beta", beta)
        if reg_loss not in REG_LOSSES:
            raise ValueError(f"{self.NAME}: parameter 'reg_loss' must be one of {', '.join(map(repr, REG_LOSSES))}, "
                             f"got {reg_loss!r}.")
        self.cls_weight, self.reg_weight, self.beta, self.reg_loss = float(cls_weight), float(reg_weight), \
            float(beta), reg_loss

    @classmethod
    def example_inputs(cls, n: int = 4, seed: int = 0, dtype: torch.dtype = torch.float32) -> LossExample:
        """(n, 3) logits, (n, 4) boxes around (10, 10)-(30, 30) with jitter, labels cycling 0..2, 3 (bg), -1."""
        _, r = example_rng(seed, dtype)
        labels = torch.arange(n) % 5 - 1
        base = torch.tensor([10.0, 10.0, 30.0, 30.0], dtype=dtype)
        inputs = {"cross_logits_s": r(n, 3), "anchor_logits_t": r(n, 3), "cross_boxes_s": base + r(n, 4),
                  "anchor_boxes_t": base + r(n, 4), "anchor_labels": labels}
        return LossExample({}, {}, inputs)

    def forward(self, cross_logits_s: Tensor, anchor_logits_t: Tensor, cross_boxes_s: Tensor, anchor_boxes_t: Tensor,
                anchor_labels: Tensor) -> Tensor:
        """(A, K), (A, K), (A, 4), (A, 4), (A,) -> 0-dim loss."""
        return crosskd_loss(cross_logits_s, anchor_logits_t, cross_boxes_s, anchor_boxes_t, anchor_labels,
                            self.cls_weight, self.reg_weight, self.beta, self.reg_loss)

    def extra_repr(self) -> str:
        return (f"cls_weight={self.cls_weight}, reg_weight={self.reg_weight}, beta={self.beta}, "
                f"reg_loss={self.reg_loss!r}")
