"""DCD: discriminative and consistent distillation (Giakoumoglou & Stathaki, arXiv 2407.11802).

Both sides are projected (one Linear each, to 128-d by default) and L2-normalised; with a
learnable temperature ``tau`` (logit scale ``exp(tau)``, clamped) and a learnable bias ``b``:

.. math::

    \\ell_{ij} = e^{\\tau}\\, \\hat z^S_i{}^\\top \\hat z^T_j + b                       \\quad (8)

    p^S_i(j) = \\mathrm{softmax}_j(\\ell_{ij}), \\qquad
    p^T_i(j) = \\mathrm{softmax}_j(\\ell_{ji})   \\quad\\text{(row- and column-softmax)}  \\quad (4, 5)

    \\mathcal{L}_{contrast} = -\\frac1N \\sum_i \\log p^S_i(i)                              \\quad (3)

    \\mathcal{L}_{DCD} = \\mathcal{L}_{contrast} + \\alpha\\, \\frac1N \\sum_i
        \\mathrm{KL}(p^S_i \\| p^T_i)                                                         \\quad (2, 6)

KL direction. The paper (Eq. 6) writes KL(p^S || p^T); the authors' public code
(giakoumoglou/distillers, the DCD loss) computes
``kl_div(log_softmax(l, 1), softmax(l, 0).T, reduction="batchmean")`` = KL(p^T || p^S).
The papers' tables came from that code, so ``kl_direction="teacher_student"`` (alias
``"code"``) is the default for every row; ``"student_teacher"`` (alias ``"paper"``) gives Eq. 6.

Detection (our reading: no public DCD detection code exists). The paper's objective is
Eq. 7, L_sup + lambda KD + beta DCD (Sec. 4: alpha 0.5, beta 1, lambda 1); the classification
code feeds the penultimate features, so the detection rows feed the box-head features of the
sampled RoIs (``emb_s`` / ``emb_t``, (R, 1024) on COCO) and add KD on the RoI logits. In-batch
negatives are RoIs, and RoIs are not independent samples: most are near-identical
background and several overlap one GT box. ``object_id`` (the matched GT box per RoI, -1 =
background) lets the loss keep only foreground RoIs and drop RoIs of the anchor's own object
from the denominator (``foreground_only``, ``same_object``; chosen by measurement, see
docs/losses.md).

The bias ``b`` has no effect on either term: a constant added to every logit cancels in a
row softmax and in a column softmax alike, so the loss value and every gradient other than
``d/db`` (which is exactly 0) do not depend on it. It is kept because the paper defines it
(and a checkpoint of the public code carries it); a test checks the invariance.

Temperature clamp. The public code clamps the *scale*: ``exp(tau).clamp(0, tau_max)``
(``clamp="scale"``, default: scale <= 10, i.e. temperature >= 0.1). The paper's text clamps
``tau`` itself to [0, tau_max] (``clamp="tau"``: scale in [1, e^10]).

Paper defaults: alpha = 0.5, tau_init = 1.0, b_init = 0, tau_max = 10, projection dim 128;
the DCD weight beta = 1 and the KD weight lambda = 1 go in the loss combination
(``DistillLoss``). Detection: the shipped rows apply it to the box-head features of the sampled RoIs
(``emb_s`` / ``emb_t``, the input of the box predictor, with RoIs of one object excluded from each other's
denominators, docs/losses.md); ``inputs: {emb_s: logits_s, emb_t: logits_t}`` applies it to the class logits.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .base import LossExample, LossModule, example_rng
from .checks import check_chunk, check_nonnegative, check_positive, check_same_rows
from .contrastive import check_same_object, masked_info_nce, select_objects
from .precision import cast, compute_dtype, fp32_math, graph_zero, module_dtype
from .registry import register_loss

__all__ = ["dcd_loss", "DCDLoss"]

_DIRECTIONS = {"student_teacher": "student_teacher", "paper": "student_teacher",
               "teacher_student": "teacher_student", "code": "teacher_student"}


def _direction(loss: str, kl_direction: str) -> str:
    if kl_direction not in _DIRECTIONS:
        raise ValueError(f"{loss}: parameter 'kl_direction' must be one of {sorted(_DIRECTIONS)}, "
                         f"got {kl_direction!r}.")
    return _DIRECTIONS[kl_direction]


def _rows_block(x_rows: Tensor, y_rows: Tensor, x: Tensor, y: Tensor, scale, bias):
    """One block of rows I of ``l = s x y^T + b`` (all N columns).

    Returns:
        (row log-sum-exp of the block (|I|,), column log-sum-exp over the block's rows (N,),
        ``s * (sum(x_I * (P_I @ y)) - sum(y_I * (P_I @ x)))`` with P_I the rows' softmax).
    """
    logits = (x_rows @ y.t()) * scale + bias                                     # (|I|, N)
    row_lse = torch.logsumexp(logits, dim=1)
    col_lse = torch.logsumexp(logits, dim=0)
    p = torch.exp(logits - row_lse.unsqueeze(1))
    cross = scale * ((x_rows * (p @ y)).sum() - (y_rows * (p @ x)).sum())
    return row_lse, col_lse, cross


def _dense_dcd(z_s: Tensor, z_t: Tensor, scale, bias, alpha: float, direction: str, same: Tensor,
               same_object: str) -> Tensor:
    """DCD on the whole (N, N) matrix with same-object pairs handled (see ``same_object``).

    "exclude" removes the pairs from both softmaxes (contrastive and consistency terms);
    "positive" only changes the contrastive term (extra positives), the consistency term is
    the plain one.
    """
    logits = (z_s @ z_t.t()) * scale + bias                                   # (N, N) student rows
    contrast = masked_info_nce(logits, same, same_object).mean()
    if same_object == "exclude":
        logits = logits.masked_fill(same, float("-inf"))
    log_ps = torch.log_softmax(logits, dim=1)                                 # log p^S_i(j)
    log_pt = torch.log_softmax(logits, dim=0).t()                             # log p^T_i(j) = log softmax_j(l_ji)
    p, log_p, log_q = ((log_ps.exp(), log_ps, log_pt) if direction == "student_teacher"
                       else (log_pt.exp(), log_pt, log_ps))
    log_ratio = log_p - log_q
    if same_object == "exclude":  # -inf - -inf at the removed pairs: zero them before the product, or backward is NaN
        log_ratio = log_ratio.masked_fill(same, 0.0)
    return contrast + alpha * (p * log_ratio).sum(dim=1).mean()


@fp32_math
def dcd_loss(emb_s: Tensor, emb_t: Tensor, logit_scale=math.e, alpha: float = 0.5, bias=0.0,
             kl_direction: str = "teacher_student", chunk_size: int = 4096, object_id: Tensor | None = None,
             same_object: str = "negative", foreground_only: bool = False) -> Tensor:
    """In-batch contrastive CE + alpha x consistency KL on projected embeddings.

    Args:
        emb_s: (N, D) student embeddings after projection (L2-normalised here).
        emb_t: (N, D) teacher embeddings after projection (L2-normalised here).
        logit_scale: exp(tau) after clamping; float > 0 or 0-dim tensor (may require grad).
        alpha: consistency weight (paper: 0.5).
        bias: b, float or 0-dim tensor; cancels in both terms (kept for fidelity).
        kl_direction: "teacher_student"/"code" = KL(p^T||p^S) (default, the public code's),
            "student_teacher"/"paper" = KL(p^S||p^T) (Eq. 6).
        chunk_size: rows per block of the N x N logits; 0 = never block.
        object_id: optional (N,) int64, the object each sample shows (detection: the GT box a RoI
            is matched to, unique over the batch; -1 = background, each such RoI its own
            instance). None = every sample is a distinct instance (classification).
        same_object: "negative" (other samples of the anchor's object are negatives, the
            classification form), "exclude" (they leave both softmaxes) or "positive" (extra
            positives of the contrastive term); needs ``object_id``.
        foreground_only: keep only samples with ``object_id >= 0`` (drops background RoIs).

    Returns:
        0-dim tensor; N = 0 gives a graph-connected 0, N = 1 gives 0 (up to rounding).

    Computation. With ``l = s Z_s Z_t^T + b``, row / column log-sum-exps ``r`` / ``c`` and the
    row softmax ``P``, the consistency sum needs no transposed N x N access:
    ``sum_i KL(p^S_i || p^T_i) = s <Z_s, P Z_t> - s <Z_t, P Z_s> + sum(c) - sum(r)``
    (expand ``log p^T_i(j) = l_ji - c_i`` and ``l_ji = s z^T_i . z^S_j + b``); the code's
    direction is the same expression with the two sides swapped (``l`` transposed). Each
    block of rows yields its row log-sum-exps, its part of the column log-sum-exps and its
    part of the cross term, so the blocked mode makes one pass over the N x N matrix.
    """
    check_nonnegative("dcd", "alpha", alpha)
    check_chunk("dcd", chunk_size)
    direction = _direction("dcd", kl_direction)
    if not isinstance(logit_scale, Tensor):
        check_positive("dcd", "logit_scale", logit_scale)
    check_same_object("dcd", same_object)
    check_same_rows("dcd", emb_s, emb_t)
    if emb_s.shape[1] != emb_t.shape[1]:
        raise ValueError(f"dcd: 'emb_s' has dim {emb_s.shape[1]} but 'emb_t' has dim {emb_t.shape[1]}; "
                         "project both sides to one dim first.")
    emb_s, emb_t, same = select_objects("dcd", emb_s, emb_t, object_id, same_object, foreground_only)
    n = emb_s.shape[0]
    if n == 0:
        return graph_zero(emb_s, emb_t, [logit_scale, bias])
    dtype = compute_dtype(emb_s, emb_t)
    z_s = torch.nn.functional.normalize(cast(emb_s, dtype), dim=1)
    z_t = torch.nn.functional.normalize(cast(emb_t, dtype), dim=1)
    scale = cast(logit_scale, dtype) if isinstance(logit_scale, Tensor) else logit_scale
    bias = cast(bias, dtype) if isinstance(bias, Tensor) else bias
    if same is not None:
        return _dense_dcd(z_s, z_t, scale, bias, alpha, direction, same, same_object)

    # Rows of l (student anchors) for the paper's direction, rows of l^T for the code's: the
    # KL sum then has the same form, sum(cross) + sum(col_lse) - sum(row_lse).
    x, y = (z_s, z_t) if direction == "student_teacher" else (z_t, z_s)
    if chunk_size <= 0 or n <= chunk_size:
        row_lse, col_lse, cross = _rows_block(x, y, x, y, scale, bias)
    else:
        from torch.utils.checkpoint import checkpoint

        blocks = [checkpoint(_rows_block, x[i:i + chunk_size], y[i:i + chunk_size], x, y, scale, bias,
                             use_reentrant=False, preserve_rng_state=False) for i in range(0, n, chunk_size)]
        row_lse = torch.cat([b[0] for b in blocks])
        col_lse = torch.logsumexp(torch.stack([b[1] for b in blocks]), dim=0)
        cross = sum(b[2] for b in blocks)
    r = row_lse if direction == "student_teacher" else col_lse                  # row log-sum-exp of l
    contrast = (r - ((z_s * z_t).sum(dim=1) * scale + bias)).mean()
    consist = (cross + col_lse.sum() - row_lse.sum()) / n
    return contrast + alpha * consist


@register_loss
class DCDLoss(LossModule):
    """DCD with its learnable parts: projection heads, temperature ``tau`` and bias ``b``.

    Args:
        in_dim_s: student embedding dim (derived from ``shapes["emb_s"]``).
        in_dim_t: teacher embedding dim (derived from ``shapes["emb_t"]``).
        proj_dim: projection dim (paper: 128); None = no projection (dims must then match).
        alpha: consistency weight (paper: 0.5).
        tau_init: initial tau, logit scale exp(tau) (paper/code: 1.0).
        tau_max: clamp bound (paper/code: 10.0), see ``clamp``.
        clamp: "scale" clamps exp(tau) to [0, tau_max] (public code, default); "tau" clamps
            tau to [0, tau_max] (paper text).
        b_init: initial bias b (paper/code: 0.0); b cannot change the loss.
        kl_direction: "teacher_student" (public code, default) or "student_teacher" (paper, Eq. 6).
        learn_temperature: False keeps tau and b fixed (paper's ablation used a fixed
            temperature 0.07, i.e. ``tau_init = log(1 / 0.07)``).
        chunk_size: rows per block of the N x N logits (0 = never block).
        same_object: how samples sharing an ``object_id`` enter the loss: "negative",
            "exclude" or "positive" (see :func:`dcd_loss`); no effect without ``object_id``.
        foreground_only: drop samples with ``object_id`` -1 (background RoIs).
    """

    NAME = "dcd"
    INPUTS = ("emb_s", "emb_t", "object_id")
    OPTIONAL_INPUTS = ("object_id",)
    SHAPE_PARAMS = {"emb_s": ("in_dim_s", int), "emb_t": ("in_dim_t", int)}

    def __init__(self, in_dim_s: int | None = None, in_dim_t: int | None = None, proj_dim: int | None = 128,
                 alpha: float = 0.5, tau_init: float = 1.0, tau_max: float = 10.0, clamp: str = "scale",
                 b_init: float = 0.0, kl_direction: str = "teacher_student", learn_temperature: bool = True,
                 chunk_size: int = 4096, same_object: str = "negative", foreground_only: bool = False):
        super().__init__()
        self.same_object = check_same_object(self.NAME, same_object)
        self.foreground_only = bool(foreground_only)
        check_nonnegative(self.NAME, "alpha", alpha)
        check_positive(self.NAME, "tau_max", tau_max)
        check_chunk(self.NAME, chunk_size)
        if clamp not in ("scale", "tau"):
            raise ValueError(f"{self.NAME}: parameter 'clamp' must be 'scale' or 'tau', got {clamp!r}.")
        self.kl_direction = _direction(self.NAME, kl_direction)
        if proj_dim is None:
            if in_dim_s is not None and in_dim_t is not None and in_dim_s != in_dim_t:
                raise ValueError(f"{self.NAME}: with proj_dim=None 'in_dim_s' ({in_dim_s}) and 'in_dim_t' "
                                 f"({in_dim_t}) must be equal.")
            self.proj_s, self.proj_t = nn.Identity(), nn.Identity()
        else:
            for key, dim in (("in_dim_s", in_dim_s), ("in_dim_t", in_dim_t), ("proj_dim", proj_dim)):
                if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0:
                    raise ValueError(f"{self.NAME}: parameter '{key}' must be a positive int (give it in params "
                                     f"or through shapes), got {dim!r}.")
            self.proj_s, self.proj_t = nn.Linear(in_dim_s, proj_dim), nn.Linear(in_dim_t, proj_dim)
        self.alpha, self.tau_max, self.clamp, self.chunk_size = float(alpha), float(tau_max), clamp, int(chunk_size)
        tau, b = torch.tensor(float(tau_init)), torch.tensor(float(b_init))
        if learn_temperature:
            self.tau, self.b = nn.Parameter(tau), nn.Parameter(b)
        else:
            self.register_buffer("tau", tau)
            self.register_buffer("b", b)

    @classmethod
    def example_inputs(cls, n: int = 4, seed: int = 0, dtype: torch.dtype = torch.float32) -> LossExample:
        """(n, 5) student / (n, 6) teacher embeddings, projected to 4 dims."""
        _, r = example_rng(seed, dtype)
        inputs = {"emb_s": r(n, 5), "emb_t": r(n, 6)}
        return LossExample({"in_dim_s": 5, "in_dim_t": 6, "proj_dim": 4}, {"emb_s": 5, "emb_t": 6}, inputs)

    def logit_scale(self) -> Tensor:
        """exp(tau) with the configured clamp, 0-dim."""
        if self.clamp == "scale":
            return self.tau.exp().clamp(0.0, self.tau_max)
        return self.tau.clamp(0.0, self.tau_max).exp()

    @fp32_math
    def forward(self, emb_s: Tensor, emb_t: Tensor, object_id: Tensor | None = None) -> Tensor:
        """(N, D_s), (N, D_t), optional (N,) object ids -> 0-dim loss (in float32)."""
        check_same_rows(self.NAME, emb_s, emb_t)
        if emb_s.shape[0] == 0:
            return graph_zero(emb_s, emb_t, self)
        dtype = module_dtype(self)
        z_s, z_t = self.proj_s(cast(emb_s, dtype)), self.proj_t(cast(emb_t, dtype))
        return dcd_loss(z_s, z_t, self.logit_scale(), self.alpha, self.b, self.kl_direction, self.chunk_size,
                        object_id, self.same_object, self.foreground_only)

    def extra_repr(self) -> str:
        return (f"alpha={self.alpha}, tau_max={self.tau_max}, clamp={self.clamp!r}, "
                f"kl_direction={self.kl_direction!r}, chunk_size={self.chunk_size}, "
                f"same_object={self.same_object!r}, foreground_only={self.foreground_only}")
