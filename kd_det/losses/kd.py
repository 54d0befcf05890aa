"""Hinton knowledge distillation (Hinton, Vinyals & Dean, 2015).

.. math::

    \\mathcal{L}_{KD} = \\frac{T^2}{N} \\sum_{i=1}^{N} \\mathrm{KL}\\big(p^T_i \\,\\|\\, p^S_i\\big)
                    = \\frac{T^2}{N} \\sum_i \\sum_c p^T_{ic} \\big(\\log p^T_{ic} - \\log p^S_{ic}\\big),
    \\qquad p_{ic} = \\mathrm{softmax}_c(z_{ic} / T)

Detection: ``N`` = sampled RoIs, ``C`` = K + 1 classes with background in the LAST column;
every RoI (foreground and background) counts.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import LossExample, LossModule, example_rng
from .checks import check_logit_pair, check_positive
from .precision import cast, compute_dtype, fp32_math, graph_zero
from .registry import register_loss

__all__ = ["kd_loss", "KDLoss"]


@fp32_math
def kd_loss(logits_s: Tensor, logits_t: Tensor, temperature: float = 4.0) -> Tensor:
    """KL(p_T || p_S) at temperature T, times T^2, averaged over the N rows.

    Args:
        logits_s: (N, C) student logits.
        logits_t: (N, C) teacher logits (not detached here; run the teacher under no_grad).
        temperature: T > 0.

    Returns:
        0-dim tensor (float32, or float64 for float64 inputs). N = 0 gives a graph-connected 0.
    """
    check_positive("kd", "temperature", temperature)
    check_logit_pair("kd", logits_s, logits_t)
    if logits_s.shape[0] == 0:
        return graph_zero(logits_s, logits_t)
    dtype = compute_dtype(logits_s, logits_t)
    log_p_s = F.log_softmax(cast(logits_s, dtype) / temperature, dim=1)
    log_p_t = F.log_softmax(cast(logits_t, dtype) / temperature, dim=1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1)
    return kl.mean() * temperature ** 2


@register_loss
class KDLoss(LossModule):
    """Hinton KD as a module (see :func:`kd_loss`).

    Args:
        temperature: T; CIFAR/ImageNet recipes (CRD, DKD papers) use 4.0, detection uses 1.0.
    """

    NAME = "kd"
    INPUTS = ("logits_s", "logits_t")

    def __init__(self, temperature: float = 4.0):
        super().__init__()
        check_positive(self.NAME, "temperature", temperature)
        self.temperature = float(temperature)

    @classmethod
    def example_inputs(cls, n: int = 4, seed: int = 0, dtype: torch.dtype = torch.float32) -> LossExample:
        """(n, 5) student / teacher logits."""
        _, r = example_rng(seed, dtype)
        inputs = {"logits_s": r(n, 5), "logits_t": r(n, 5)}
        return LossExample({}, {"logits_s": 5, "logits_t": 5}, inputs)

    def forward(self, logits_s: Tensor, logits_t: Tensor) -> Tensor:
        """(N, C), (N, C) -> 0-dim loss."""
        return kd_loss(logits_s, logits_t, self.temperature)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"
