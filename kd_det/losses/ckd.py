"""CKD: sample-wise contrastive knowledge distillation (Zhu et al., "CKD: Contrastive Knowledge
Distillation from A Sample-wise Perspective").

Each row of teacher and student logits is L2-normalised; the teacher row ``t_i`` is the
anchor, its own student row ``s_i`` the positive and the other samples' student rows
``s_j`` (j != i) the negatives (the paper's triples (s_i, t_i, s_j), Eq. 13 / Fig. 5):

.. math::

    \\mathcal{L}_{CKD} = -\\frac{1}{N} \\sum_{i=1}^{N}
        \\log \\frac{\\exp(\\hat t_i^\\top \\hat s_i / \\tau)}
                   {\\sum_{j=1}^{N} \\exp(\\hat t_i^\\top \\hat s_j / \\tau)},
    \\qquad \\hat x = x / \\|x\\|_2

i.e. cross-entropy of ``sim = t_norm @ s_norm.T / tau`` (rows = teacher anchors) with
targets ``arange(N)``. The paper's NumPy pseudo-code writes ``axis=0`` for the
cross-entropy; its Eq. 13 normalises over the student rows for a fixed teacher anchor, which is
what this does (github.com/wencheng-zhu/CKD holds only a README: there is no public code).

Detection: which RoIs are negatives. The paper's samples are images ("we classify all other
samples as negative, regardless of their class", Fig. 2); on the R-CNN head the samples are
the sampled RoIs, and several RoIs overlap one GT box while most are near-identical
background. The paper does not say how it treats them. ``object_id`` (the GT box each RoI is
matched to, -1 = background, given by DistillRCNN) with ``same_object`` decides: "negative"
keeps the literal reading (every other RoI, same object or not, is a negative), "exclude"
removes the RoIs of the anchor's own object from its denominator, "positive" makes them extra
positives; ``foreground_only`` drops the background RoIs. The detection rows' choice and the
measurement behind it are in docs/losses.md.

Memory: the N x N similarity is built in blocks of ``chunk_size`` rows (with activation
checkpointing) once N exceeds it (default 4,096: the 16-image detection step, 8,192 RoIs,
holds one 4,096 x 8,192 block at a time instead of several 8,192 x 8,192 matrices).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import LossExample, LossModule, example_rng
from .checks import check_chunk, check_logit_pair, check_positive
from .contrastive import check_same_object, masked_info_nce, row_logsumexp, select_objects
from .precision import cast, compute_dtype, fp32_math, graph_zero
from .registry import register_loss

__all__ = ["ckd_loss", "CKDLoss"]


@fp32_math
def ckd_loss(logits_s: Tensor, logits_t: Tensor, temperature: float = 1.0, chunk_size: int = 4096,
             object_id: Tensor | None = None, same_object: str = "negative", foreground_only: bool = False) -> Tensor:
    """Sample-wise contrastive loss on L2-normalised logits.

    Args:
        logits_s: (N, C) student logits (detection: R x (K+1), background last).
        logits_t: (N, C) teacher logits on the same samples / RoIs.
        temperature: tau > 0 (paper: 1.0).
        chunk_size: rows per block of the N x N similarity; 0 = never block.
        object_id: optional (N,) int64 object of each sample (detection: matched GT box, unique
            over the batch; -1 = background, each such RoI its own instance).
        same_object: "negative", "exclude" or "positive": how the other samples of the anchor's
            object count (see the module docstring); needs ``object_id``.
        foreground_only: keep only samples with ``object_id >= 0``.

    Returns:
        0-dim tensor; N = 0 gives a graph-connected 0, N = 1 gives 0 (up to rounding).
    """
    check_positive("ckd", "temperature", temperature)
    check_chunk("ckd", chunk_size)
    check_same_object("ckd", same_object)
    check_logit_pair("ckd", logits_s, logits_t)
    logits_s, logits_t, same = select_objects("ckd", logits_s, logits_t, object_id, same_object, foreground_only)
    if logits_s.shape[0] == 0:
        return graph_zero(logits_s, logits_t)
    dtype = compute_dtype(logits_s, logits_t)
    s = F.normalize(cast(logits_s, dtype), dim=1)
    t = F.normalize(cast(logits_t, dtype), dim=1)
    if same is not None:                                                          # dense (N, N), teacher rows
        return masked_info_nce((t @ s.t()) / temperature, same, same_object).mean()
    lse = row_logsumexp(t, s, scale=1.0 / temperature, chunk_size=chunk_size)   # (N,)
    positive = (t * s).sum(dim=1) / temperature                                   # (N,) diagonal
    return (lse - positive).mean()


@register_loss
class CKDLoss(LossModule):
    """CKD as a module (see :func:`ckd_loss`).

    Args:
        temperature: tau (paper: 1.0).
        chunk_size: rows per block of the N x N similarity (0 = never block).
        same_object: "negative", "exclude" or "positive" (see :func:`ckd_loss`); no effect
            without ``object_id``.
        foreground_only: drop samples with ``object_id`` -1 (background RoIs).
    """

    NAME = "ckd"
    INPUTS = ("logits_s", "logits_t", "object_id")
    OPTIONAL_INPUTS = ("object_id",)

    def __init__(self, temperature: float = 1.0, chunk_size: int = 4096, same_object: str = "negative",
                 foreground_only: bool = False):
        super().__init__()
        check_positive(self.NAME, "temperature", temperature)
        check_chunk(self.NAME, chunk_size)
        self.same_object = check_same_object(self.NAME, same_object)
        self.temperature, self.chunk_size, self.foreground_only = float(temperature), int(chunk_size), bool(foreground_only)

    @classmethod
    def example_inputs(cls, n: int = 4, seed: int = 0, dtype: torch.dtype = torch.float32) -> LossExample:
        """(n, 5) student / teacher logits."""
        _, r = example_rng(seed, dtype)
        inputs = {"logits_s": r(n, 5), "logits_t": r(n, 5)}
        return LossExample({}, {"logits_s": 5, "logits_t": 5}, inputs)

    def forward(self, logits_s: Tensor, logits_t: Tensor, object_id: Tensor | None = None) -> Tensor:
        """(N, C), (N, C), optional (N,) object ids -> 0-dim loss."""
        return ckd_loss(logits_s, logits_t, self.temperature, self.chunk_size, object_id, self.same_object,
                        self.foreground_only)

    def extra_repr(self) -> str:
        return (f"temperature={self.temperature}, chunk_size={self.chunk_size}, same_object={self.same_object!r}, "
                f"foreground_only={self.foreground_only}")
