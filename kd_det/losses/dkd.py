"""Decoupled knowledge distillation (Zhao et al., CVPR 2022).

With ``t`` the target class of a row, ``p = softmax(z / T)``, the binary distribution
``b = [p_t, 1 - p_t]`` and the distribution over non-target classes
``p̂_c = p_c / (1 - p_t)`` (c != t):

.. math::

    \\mathrm{TCKD} = \\mathrm{KL}(b^T \\| b^S), \\qquad
    \\mathrm{NCKD} = \\mathrm{KL}(\\hat p^T \\| \\hat p^S)

    \\mathcal{L}_{DKD} = \\frac{T^2}{N} \\sum_i \\big(\\alpha\\,\\mathrm{TCKD}_i + \\beta\\,\\mathrm{NCKD}_i\\big)

and the identity of the DKD paper (Eq. 1-3) ties it to Hinton KD at the same T:
``KL(p^T || p^S) = TCKD + (1 - p^T_t) NCKD`` row by row.

Detection: ``target`` is the RoI's assigned class with background included; Detectron2
puts background in the LAST column, so background RoIs have ``target == C - 1`` (= K).

Numerics: NCKD is computed on the C - 1 non-target columns taken out exactly (no
``-1000 * mask`` trick), and ``log(1 - p_t)`` as a difference of log-sum-exps, so
nothing underflows for confident teachers.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .base import LossExample, LossModule, example_rng
from .checks import check_logit_pair, check_nonnegative, check_positive
from .precision import cast, compute_dtype, fp32_math, graph_zero
from . import checks
from .registry import register_loss

__all__ = ["dkd_loss", "dkd_terms", "DKDLoss"]


def _check_target(loss: str, target: Tensor, n: int, c: int) -> None:
    if not isinstance(target, Tensor) or target.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise ValueError(f"{loss}: input 'target' must be an integer tensor of class indices (N,).")
    if target.dim() != 1 or target.shape[0] != n:
        raise ValueError(f"{loss}: 'target' has shape {tuple(target.shape)} but the logits have {n} rows; "
                         f"expected ({n},).")
    if c < 2:
        raise ValueError(f"{loss}: the logits have {c} column(s); DKD needs at least 2 classes.")
    if checks._FINITE_CHECK and n and (int(target.min()) < 0 or int(target.max()) >= c):
        raise ValueError(f"{loss}: 'target' holds class indices outside [0, {c - 1}] "
                         f"(got {int(target.min())}..{int(target.max())}).")


def _log_parts(logits: Tensor, target: Tensor, temperature: float):
    """Log binary distribution (N, 2) and log non-target distribution (N, C - 1)."""
    z = logits / temperature
    n, c = z.shape
    target = target.view(-1, 1).long()
    cols = torch.arange(c - 1, device=z.device).expand(n, -1)
    z_other = z.gather(1, cols + (cols >= target).long())             # (N, C - 1): every column but the target
    z_target = z.gather(1, target).squeeze(1)
    lse_all = torch.logsumexp(z, dim=1)
    lse_other = torch.logsumexp(z_other, dim=1)
    log_b = torch.stack([z_target - lse_all, lse_other - lse_all], dim=1)
    log_hat = z_other - lse_other.unsqueeze(1)
    return log_b, log_hat


def _kl_rows(log_p: Tensor, log_q: Tensor) -> Tensor:
    """Row-wise KL(p || q) from log-probabilities, (N, K) -> (N,)."""
    return (log_p.exp() * (log_p - log_q)).sum(dim=1)


@fp32_math
def dkd_terms(logits_s: Tensor, logits_t: Tensor, target: Tensor, temperature: float = 4.0):
    """Per-row DKD parts at temperature T (without the T^2 factor).

    Args:
        logits_s: (N, C) student logits.
        logits_t: (N, C) teacher logits.
        target: (N,) int class index per row (detection: background = C - 1).
        temperature: T > 0.

    Returns:
        (tckd, nckd, p_target_teacher), each (N,): TCKD_i, NCKD_i and the teacher's
        probability of the target class, so that ``KL(p^T||p^S) = tckd + (1 - p) * nckd``.
    """
    check_positive("dkd", "temperature", temperature)
    check_logit_pair("dkd", logits_s, logits_t)
    _check_target("dkd", target, logits_s.shape[0], logits_s.shape[1])
    return _terms(logits_s, logits_t, target, temperature)


def _terms(logits_s: Tensor, logits_t: Tensor, target: Tensor, temperature: float):
    """:func:`dkd_terms` on inputs already checked (each public entry checks its inputs once)."""
    dtype = compute_dtype(logits_s, logits_t)
    log_b_s, log_hat_s = _log_parts(cast(logits_s, dtype), target, temperature)
    log_b_t, log_hat_t = _log_parts(cast(logits_t, dtype), target, temperature)
    return _kl_rows(log_b_t, log_b_s), _kl_rows(log_hat_t, log_hat_s), log_b_t[:, 0].exp()


@fp32_math
def dkd_loss(logits_s: Tensor, logits_t: Tensor, target: Tensor, alpha: float = 1.0, beta: float = 8.0,
             temperature: float = 4.0) -> Tensor:
    """T^2 * mean_i(alpha * TCKD_i + beta * NCKD_i).

    Args:
        logits_s: (N, C) student logits.
        logits_t: (N, C) teacher logits.
        target: (N,) int class index (detection: assigned class, background = C - 1).
        alpha: TCKD weight (paper: 1.0).
        beta: NCKD weight (paper CIFAR: 8.0; detection: 0.25).
        temperature: T (paper CIFAR: 4.0; detection: 1.0).

    Returns:
        0-dim tensor; N = 0 gives a graph-connected 0.
    """
    check_nonnegative("dkd", "alpha", alpha)
    check_nonnegative("dkd", "beta", beta)
    check_positive("dkd", "temperature", temperature)
    check_logit_pair("dkd", logits_s, logits_t)
    _check_target("dkd", target, logits_s.shape[0], logits_s.shape[1])
    if logits_s.shape[0] == 0:
        return graph_zero(logits_s, logits_t)
    tckd, nckd, _ = _terms(logits_s, logits_t, target, temperature)
    return (alpha * tckd + beta * nckd).mean() * temperature ** 2


@register_loss
class DKDLoss(LossModule):
    """Decoupled KD as a module (see :func:`dkd_loss`).

    Args:
        alpha: TCKD weight (paper: 1.0).
        beta: NCKD weight (paper CIFAR-100: 8.0; ImageNet: 0.5; detection: 0.25).
        temperature: T (paper CIFAR/ImageNet: 4.0 / 1.0; detection: 1.0).

    The paper's linear warm-up of the loss weight (20 epochs on CIFAR) is the term schedule of
    :class:`kd_det.losses.DistillLoss` (``warmup``; ``KD.WARMUP_EPOCHS``), not part of this module.
    """

    NAME = "dkd"
    INPUTS = ("logits_s", "logits_t", "target")

    def __init__(self, alpha: float = 1.0, beta: float = 8.0, temperature: float = 4.0):
        super().__init__()
        check_nonnegative(self.NAME, "alpha", alpha)
        check_nonnegative(self.NAME, "beta", beta)
        check_positive(self.NAME, "temperature", temperature)
        self.alpha, self.beta, self.temperature = float(alpha), float(beta), float(temperature)

    @classmethod
    def example_inputs(cls, n: int = 4, seed: int = 0, dtype: torch.dtype = torch.float32) -> LossExample:
        """(n, 5) student / teacher logits, (n,) int64 targets in [0, 5)."""
        g, r = example_rng(seed, dtype)
        inputs = {"logits_s": r(n, 5), "logits_t": r(n, 5)}
        inputs["target"] = torch.randint(0, 5, (n,), generator=g)
        return LossExample({}, {"logits_s": 5, "logits_t": 5}, inputs)

    def forward(self, logits_s: Tensor, logits_t: Tensor, target: Tensor) -> Tensor:
        """(N, C), (N, C), (N,) -> 0-dim loss."""
        return dkd_loss(logits_s, logits_t, target, self.alpha, self.beta, self.temperature)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, beta={self.beta}, temperature={self.temperature}"
