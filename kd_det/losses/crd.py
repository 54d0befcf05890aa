"""CRD: contrastive representation distillation (Tian, Krishnan & Isola, ICLR 2020), with its
memory bank and NCE loss (classification tables' CRD and CRD+KD rows).

Both embeddings are projected (Linear) to ``feat_dim`` and L2-normalised: ``v_s``, ``v_t``.
Two memory banks hold one slowly-updated vector per training sample: ``M_s`` (student) and
``M_t`` (teacher). For a sample with dataset index ``y`` and K drawn negatives
``n_1..n_K`` (index list ``[y, n_1, .., n_K]``):

.. math::

    P_t(k) = \\frac{\\exp(M_s[k]^\\top v_t / \\tau)}{Z_t}, \\qquad
    P_s(k) = \\frac{\\exp(M_t[k]^\\top v_s / \\tau)}{Z_s}

    \\mathcal{L}_{NCE}(P) = -\\frac1N \\sum_i \\Big[\\log \\frac{P_i(y)}{P_i(y) + K P_n + \\epsilon}
        + \\sum_{k=1}^{K} \\log \\frac{K P_n}{P_i(n_k) + K P_n + \\epsilon}\\Big], \\qquad P_n = 1 / N_{data}

    \\mathcal{L}_{CRD} = \\mathcal{L}_{NCE}(P_s) + \\mathcal{L}_{NCE}(P_t)

``Z_s``, ``Z_t`` are fixed on the first call to ``mean(exp(.)) * N_data`` of that batch (as
in the public code). After each training-mode call, ``M[y] <- normalise(m M[y] + (1 - m) v)``
(momentum m = 0.5), outside autograd. Paper/code defaults: feat_dim 128, K = 16384,
tau = 0.07, m = 0.5, eps = 1e-7; loss weight 0.8 (CIFAR), combined with KD for CRD+KD.

Negatives: pass ``contrast_index`` (N, K + 1) from the data loader (column 0 = the sample's
own index; the public CIFAR loader draws negatives from other classes), or leave it out to
draw K indices uniformly from the bank. Memory banks are per process (not synchronised
across DDP workers), as in the public code.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import checks
from .base import LossExample, LossModule, example_rng
from .checks import check_positive, check_same_rows
from .precision import cast, fp32_math, graph_zero, module_dtype
from .registry import register_loss

__all__ = ["CRDLoss"]

_EPS = 1e-7


@register_loss
class CRDLoss(LossModule):
    """CRD with memory bank and NCE.

    Args:
        in_dim_s: student embedding dim (from ``shapes["emb_s"]``).
        in_dim_t: teacher embedding dim (from ``shapes["emb_t"]``).
        num_samples: training-set size = memory bank rows (from ``shapes["num_samples"]``).
        feat_dim: projection dim (paper: 128).
        nce_k: negatives per sample (paper: 16384).
        nce_t: temperature tau (paper: 0.07).
        nce_momentum: memory momentum m (paper: 0.5).
        score_mode: "auto", "gather" (copy the drawn rows: N x (K+1) x D floats) or "bank"
            (score each distinct drawn row once: U x (D + N) floats, U <= min(N_data, N (K+1)));
            same values, "auto" picks the smaller.

    Inputs:
        emb_s: (N, D_s) student penultimate features; emb_t: (N, D_t) teacher ones.
        index: (N,) int64 dataset indices of the batch.
        contrast_index: optional (N, K + 1) int64 indices, column 0 = ``index``.
    """

    NAME = "crd"
    INPUTS = ("emb_s", "emb_t", "index", "contrast_index")
    OPTIONAL_INPUTS = ("contrast_index",)
    SHAPE_PARAMS = {"emb_s": ("in_dim_s", int), "emb_t": ("in_dim_t", int), "num_samples": ("num_samples", int)}

    def __init__(self, in_dim_s: int, in_dim_t: int, num_samples: int, feat_dim: int = 128, nce_k: int = 16384,
                 nce_t: float = 0.07, nce_momentum: float = 0.5, score_mode: str = "auto"):
        super().__init__()
        for key, value in (("in_dim_s", in_dim_s), ("in_dim_t", in_dim_t), ("num_samples", num_samples),
                           ("feat_dim", feat_dim), ("nce_k", nce_k)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{self.NAME}: parameter '{key}' must be a positive int, got {value!r}.")
        check_positive(self.NAME, "nce_t", nce_t)
        if not isinstance(nce_momentum, (int, float)) or not 0 <= nce_momentum < 1:
            raise ValueError(f"{self.NAME}: parameter 'nce_momentum' must be in [0, 1), got {nce_momentum!r}.")
        if score_mode not in ("auto", "gather", "bank"):
            raise ValueError(f"{self.NAME}: parameter 'score_mode' must be 'auto', 'gather' or 'bank', "
                             f"got {score_mode!r}.")
        self.num_samples, self.nce_k, self.nce_t = num_samples, nce_k, float(nce_t)
        self.momentum, self.score_mode = float(nce_momentum), score_mode
        self.embed_s, self.embed_t = nn.Linear(in_dim_s, feat_dim), nn.Linear(in_dim_t, feat_dim)
        stdv = 1.0 / math.sqrt(feat_dim / 3)
        self.register_buffer("memory_s", torch.rand(num_samples, feat_dim).mul_(2 * stdv).add_(-stdv))
        self.register_buffer("memory_t", torch.rand(num_samples, feat_dim).mul_(2 * stdv).add_(-stdv))
        self.register_buffer("z_s", torch.tensor(-1.0))   # normalisation constants, set on the first call
        self.register_buffer("z_t", torch.tensor(-1.0))

    @classmethod
    def example_inputs(cls, n: int = 4, seed: int = 0, dtype: torch.dtype = torch.float32) -> LossExample:
        """(n, 5) / (n, 6) embeddings, a 20-sample bank, K = 5 given negatives; eval mode (no bank update)."""
        g, r = example_rng(seed, dtype)
        inputs = {"emb_s": r(n, 5), "emb_t": r(n, 6), "index": torch.arange(n) % 20,
                  "contrast_index": torch.randint(0, 20, (n, 6), generator=g)}
        params = {"in_dim_s": 5, "in_dim_t": 6, "num_samples": 20, "feat_dim": 4, "nce_k": 5}
        return LossExample(params, {"emb_s": 5, "emb_t": 6, "num_samples": 20}, inputs, train=False)

    def _scores(self, memory: Tensor, v: Tensor, idx: Tensor) -> Tensor:
        """exp(<memory[idx[i, k]], v_i> / tau) -> (N, K + 1)."""
        n, k1 = idx.shape
        dim = memory.shape[1]
        rows = min(self.num_samples, n * k1)                                  # distinct rows, at most
        use_bank = self.score_mode == "bank" or (self.score_mode == "auto" and rows * (dim + n) < n * k1 * dim)
        if use_bank:
            # score each distinct bank row once; memory[uniq] is a copy, so the in-place bank
            # update after the forward cannot touch what backward needs
            uniq, inverse = torch.unique(idx, return_inverse=True)
            dots = (v @ memory[uniq].t()).gather(1, inverse)                   # (N, U) -> (N, K + 1)
        else:
            dots = torch.bmm(memory[idx.reshape(-1)].view(n, k1, -1), v.unsqueeze(2)).squeeze(2)
        return torch.exp(dots / self.nce_t)

    def _nce(self, p: Tensor) -> Tensor:
        m_pn = self.nce_k / self.num_samples
        log_d1 = torch.log(p[:, 0] / (p[:, 0] + m_pn + _EPS))
        log_d0 = torch.log(m_pn / (p[:, 1:] + m_pn + _EPS))
        return -(log_d1.sum() + log_d0.sum()) / p.shape[0]

    def _check_index(self, index: Tensor, contrast_index: Tensor | None, n: int) -> None:
        if not isinstance(index, Tensor) or index.dtype != torch.int64 or index.shape != (n,):
            raise ValueError(f"{self.NAME}: input 'index' must be an int64 tensor of shape ({n},).")
        if contrast_index is not None and (not isinstance(contrast_index, Tensor) or contrast_index.dtype != torch.int64
                                           or contrast_index.shape != (n, self.nce_k + 1)):
            raise ValueError(f"{self.NAME}: input 'contrast_index' must be an int64 tensor of shape "
                             f"({n}, {self.nce_k + 1}).")
        if checks._FINITE_CHECK and n and (int(index.min()) < 0 or int(index.max()) >= self.num_samples):
            raise ValueError(f"{self.NAME}: 'index' holds values outside [0, {self.num_samples - 1}].")

    @fp32_math
    def forward(self, emb_s: Tensor, emb_t: Tensor, index: Tensor, contrast_index: Tensor | None = None) -> Tensor:
        """(N, D_s), (N, D_t), (N,) [, (N, K + 1)] -> 0-dim loss; updates the banks in training mode."""
        check_same_rows(self.NAME, emb_s.flatten(1) if emb_s.dim() > 2 else emb_s,
                        emb_t.flatten(1) if emb_t.dim() > 2 else emb_t)
        n = emb_s.shape[0]
        self._check_index(index, contrast_index, n)
        if n == 0:
            return graph_zero(emb_s, emb_t, self)
        dtype = module_dtype(self)
        v_s = F.normalize(self.embed_s(cast(emb_s.flatten(1), dtype)), dim=1)
        v_t = F.normalize(self.embed_t(cast(emb_t.flatten(1), dtype)), dim=1)
        if contrast_index is None:
            contrast_index = torch.randint(0, self.num_samples, (n, self.nce_k + 1), device=index.device)
            contrast_index[:, 0] = index
        idx = contrast_index.to(self.memory_s.device)
        out_s = self._scores(self.memory_t, v_s, idx)      # student anchor vs teacher memory
        out_t = self._scores(self.memory_s, v_t, idx)      # teacher anchor vs student memory
        with torch.no_grad():
            if self.z_s < 0:
                self.z_s.fill_(float(out_s.mean()) * self.num_samples)
            if self.z_t < 0:
                self.z_t.fill_(float(out_t.mean()) * self.num_samples)
        loss = self._nce(out_s / self.z_s) + self._nce(out_t / self.z_t)
        if self.training:
            self._update(index.to(self.memory_s.device), v_s.detach(), v_t.detach())
        return loss

    @torch.no_grad()
    def _update(self, index: Tensor, v_s: Tensor, v_t: Tensor) -> None:
        for memory, v in ((self.memory_s, v_s), (self.memory_t, v_t)):
            mixed = memory.index_select(0, index) * self.momentum + v.to(memory.dtype) * (1 - self.momentum)
            memory.index_copy_(0, index, F.normalize(mixed, dim=1))
