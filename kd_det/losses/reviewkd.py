"""ReviewKD (Chen et al., "Distilling Knowledge via Knowledge Review", CVPR 2021): ABF + HCL.

ABF (attention-based fusion) turns the student levels into predictions of the teacher
levels, reviewing from the coarsest level down: level ``l`` fuses its own (1x1-conv)
student map ``x_l`` with the residual ``y_{l+1}`` of the coarser level, upsampled (nearest):

.. math::

    [a, b] = \\sigma\\big(\\mathrm{conv}_{1\\times1}([x_l, \\mathrm{up}(y_{l+1})])\\big), \\quad
    y_l = a \\odot x_l + b \\odot \\mathrm{up}(y_{l+1}), \\quad
    \\hat F^T_l = \\mathrm{BN}(\\mathrm{conv}_{3\\times3}(y_l))

(the coarsest level has no residual: ``y_L = x_L``). HCL (hierarchical context loss)
compares each prediction with the teacher level at full resolution and after adaptive
average pooling to 4x4, 2x2 and 1x1:

.. math::

    \\mathcal{L}_{HCL} = \\sum_l \\frac{\\sum_k w_k\\, \\mathrm{MSE}(P_k(\\hat F^T_l), P_k(F^T_l))}{\\sum_k w_k},
    \\qquad w = 1, 0.5, 0.25, 0.125

where ``P_0`` is the identity and the pooled sizes ``4, 2, 1`` are used only when smaller
than the map (``k < min(H, W)``); the weights go to the sizes actually used, in order, and are
normalised over them (public code: checks ``k >= H`` only; both agree on square maps and on
FPN maps, whose height is the smaller side).

Classification (ReviewKD's CIFAR-100 code, mdistiller ``distillers/ReviewKD.py``): with
``pooled_level=True`` a last, coarsest level is appended on both sides, the globally pooled
embedding as a (B, D, 1, 1) map (``emb_s`` / ``emb_t``); its ABF has no residual, and HCL
compares it at 1x1 only. The reference codes also pick the maps: the teacher's
pre-activation stage maps and the student's post-activation ones (pre-activation on ImageNet,
mdistiller ``STU_PREACT``); the classification distiller provides them as
``preact_feats_*`` / ``stage_feats_*`` and the row configs remap ``feats_s`` / ``feats_t``
to them (spec key ``inputs``).

Channels come from arguments (``in_channels`` / ``out_channels`` per level, derived from
the input shapes), never a hard-coded 256. Inputs are an ordered dict (FPN p2..p6) or a
list of backbone stages, finest / shallowest first. Detection weights: 1.2 (R101->R18), 1.0
(R101->R50), 2.0 (R50->MV2), KD.REVIEWKD_LOSS_WEIGHT of dvlab-research/ReviewKD
Detection/configs/ReviewKD-{R18-R101,R50-R101,MV2-R50}.yaml.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import FeaturePairLoss, LossExample
from .features import check_channels, split_feature_pair
from .precision import cast, compute_dtype, fp32_math, graph_zero, module_dtype
from .registry import register_loss

__all__ = ["ABF", "hcl_loss", "ReviewKDLoss"]


@fp32_math
def hcl_loss(feats_s, feats_t, pool_sizes: Sequence[int] = (4, 2, 1)) -> Tensor:
    """Hierarchical context loss between lists (or dicts) of same-shape (B, C, H, W) maps.

    Args:
        feats_s: student maps (after ABF for ReviewKD), list or ordered dict.
        feats_t: teacher maps, same structure and shapes.
        pool_sizes: adaptive-pool sizes after the full-resolution term (paper: 4, 2, 1).

    Returns:
        0-dim tensor: sum over levels of the weighted, normalised MSE terms.
    """
    names, maps_s, maps_t = split_feature_pair("hcl", feats_s, feats_t)
    for name, s, t in zip(names, maps_s, maps_t):
        if s.shape != t.shape:
            raise ValueError(f"hcl: level {name!r} has student shape {tuple(s.shape)} but teacher shape "
                             f"{tuple(t.shape)}; they must match.")
    if maps_s[0].shape[0] == 0:
        return graph_zero(maps_s, maps_t)
    return _hcl(maps_s, maps_t, pool_sizes, compute_dtype(*maps_s, *maps_t))


def _hcl(maps_s: list[Tensor], maps_t: list[Tensor], pool_sizes: Sequence[int], dtype: torch.dtype) -> Tensor:
    """HCL of checked, same-shape lists of maps (:class:`ReviewKDLoss` calls it directly: its inputs are
    checked once, its ABF outputs have the teacher's shapes by construction).

    A pooled size is pooled from the previous, finer pooled grid when that is exact (the grid divides
    H and W, so its cells are equal blocks, and the new size divides the grid), else from the map:
    the same means summed in another order (equal to rounding), with the map read once per side
    instead of once per size and one pooling backward to full resolution instead of one per size.
    """
    total = 0.0
    for s, t in zip(maps_s, maps_t):
        s, t = cast(s, dtype), cast(t, dtype)
        h, w = s.shape[-2:]
        level, weight, weight_sum = F.mse_loss(s, t), 1.0, 1.0
        pooled_s, pooled_t, grid = s, t, 0
        for k in pool_sizes:
            if k >= min(h, w):
                continue
            if not (grid and grid % k == 0 and h % grid == 0 and w % grid == 0):
                pooled_s, pooled_t = s, t  # no exact coarser grid: pool the map itself
            pooled_s, pooled_t, grid = F.adaptive_avg_pool2d(pooled_s, k), F.adaptive_avg_pool2d(pooled_t, k), k
            weight /= 2.0
            level = level + weight * F.mse_loss(pooled_s, pooled_t)
            weight_sum += weight
        total = total + level / weight_sum
    return total


class ABF(nn.Module):
    """Attention-based fusion of one level.

    Args:
        in_channels: student channels of this level.
        mid_channels: channels of the fused residual path.
        out_channels: teacher channels of this level.
        fuse: False for the coarsest level (no residual from a coarser one).
    """

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, fuse: bool):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, mid_channels, 1, bias=False), nn.BatchNorm2d(mid_channels))
        self.conv2 = nn.Sequential(nn.Conv2d(mid_channels, out_channels, 3, padding=1, bias=False),
                                   nn.BatchNorm2d(out_channels))
        self.att_conv = nn.Sequential(nn.Conv2d(2 * mid_channels, 2, 1), nn.Sigmoid()) if fuse else None
        nn.init.kaiming_uniform_(self.conv1[0].weight, a=1)
        nn.init.kaiming_uniform_(self.conv2[0].weight, a=1)

    def forward(self, x: Tensor, residual: Tensor | None, out_size) -> tuple[Tensor, Tensor]:
        """x: (B, C_in, H, W); residual: (B, C_mid, H', W') or None; out_size: teacher (H_t, W_t).

        Returns:
            (prediction of the teacher map (B, C_out, H_t, W_t), residual for the next finer level).
        """
        x = self.conv1(x)
        if self.att_conv is not None:
            # att_conv (1x1) of [x, up(residual)] without building the concatenation: its weight split into
            # the x and residual halves, the residual half applied before the nearest resampling (which
            # picks pixels, so it commutes with a 1x1 conv: 4x fewer pixels). Same sums in another order.
            conv, size = self.att_conv[0], x.shape[-2:]
            w_x, w_r = conv.weight.split(x.shape[1], dim=1)
            logits = F.conv2d(x, w_x, conv.bias) + F.interpolate(F.conv2d(residual, w_r), size=size, mode="nearest")
            att = self.att_conv[1](logits)
            residual = F.interpolate(residual, size=size, mode="nearest")
            x = x * att[:, 0:1] + residual * att[:, 1:2]
        if tuple(x.shape[-2:]) != tuple(out_size):
            x = F.interpolate(x, size=tuple(out_size), mode="nearest")
        return self.conv2(x), x


@register_loss
class ReviewKDLoss(FeaturePairLoss):
    """ABF modules (learnable) followed by HCL.

    Args:
        in_channels: student channels per level, finest first (from ``shapes["feats_s"]``).
        out_channels: teacher channels per level (from ``shapes["feats_t"]``).
        mid_channels: ABF residual channels; None = min(512, in_channels[-1]) as in the
            public code (256 for Detectron2 FPNs; with ``pooled_level`` the last level is the
            pooled one, as in the reference code).
        pool_sizes: HCL pooled sizes (paper: 4, 2, 1).
        pooled_level: append the pooled embeddings (``emb_s`` / ``emb_t``, required then) as
            a last 1x1 level (ReviewKD's CIFAR / ImageNet code); default False (detection).
        pooled_channels: (student, teacher) embedding widths of that level (from
            ``shapes["emb_s"]`` / ``shapes["emb_t"]``).
    """

    NAME, LABEL = "reviewkd", "ReviewKD"
    INPUTS = ("feats_s", "feats_t", "emb_s", "emb_t")
    OPTIONAL_INPUTS = ("emb_s", "emb_t")

    def __init__(self, in_channels, out_channels, mid_channels: int | None = None,
                 pool_sizes: Sequence[int] = (4, 2, 1), pooled_level: bool = False, pooled_channels=None):
        super().__init__(in_channels, out_channels)
        if not isinstance(pooled_level, bool):
            raise ValueError(f"{self.NAME}: parameter 'pooled_level' must be true or false, got {pooled_level!r}.")
        self.pooled_level = pooled_level
        if pooled_level:
            if pooled_channels is None:
                raise ValueError(f"{self.NAME}: parameter 'pooled_level' needs 'pooled_channels' (student, teacher "
                                 "embedding widths), derived from the shapes of 'emb_s' / 'emb_t' when given.")
            pooled = check_channels(self.NAME, "pooled_channels", pooled_channels)
            if len(pooled) != 2:
                raise ValueError(f"{self.NAME}: parameter 'pooled_channels' must be (student, teacher) widths, "
                                 f"got {pooled_channels!r}.")
            self.in_channels.append(pooled[0])
            self.out_channels.append(pooled[1])
        mid = min(512, self.in_channels[-1]) if mid_channels is None else mid_channels
        if isinstance(mid, bool) or not isinstance(mid, int) or mid <= 0:
            raise ValueError(f"{self.NAME}: parameter 'mid_channels' must be a positive int, got {mid_channels!r}.")
        if any(isinstance(k, bool) or not isinstance(k, int) or k <= 0 for k in pool_sizes):
            raise ValueError(f"{self.NAME}: parameter 'pool_sizes' must hold positive ints, got {pool_sizes!r}.")
        self.mid_channels, self.pool_sizes = mid, tuple(pool_sizes)
        last = len(self.in_channels) - 1
        self.abfs = nn.ModuleList(ABF(c_in, mid, c_out, fuse=i < last)
                                  for i, (c_in, c_out) in enumerate(zip(self.in_channels, self.out_channels)))

    def required_inputs(self) -> tuple[str, ...]:
        return self.INPUTS if self.pooled_level else ("feats_s", "feats_t")

    def used_inputs(self) -> tuple[str, ...]:
        return self.required_inputs()  # emb_s / emb_t: required with pooled_level, ignored without

    @classmethod
    def example_inputs(cls, n: int = 4, seed: int = 0, dtype: torch.dtype = torch.float32) -> LossExample:
        """FitNet's two levels, 2 ABF residual channels (no pooled level)."""
        params, shapes, inputs, _ = cls.example_maps(n, seed, dtype)
        return LossExample(dict(params, mid_channels=2), shapes, inputs)

    @classmethod
    def shape_params(cls, shapes) -> dict:
        out = super().shape_params(shapes)
        if isinstance(shapes.get("emb_s"), int) and isinstance(shapes.get("emb_t"), int):
            out["pooled_channels"] = [shapes["emb_s"], shapes["emb_t"]]
        return out

    def fuse(self, maps_s: list[Tensor], sizes_t: list) -> list[Tensor]:
        """Run the ABF chain, coarsest level first; returns predictions finest first."""
        outputs, residual = [None] * len(maps_s), None
        for i in reversed(range(len(maps_s))):
            outputs[i], residual = self.abfs[i](maps_s[i], residual, sizes_t[i])
        return outputs

    @fp32_math
    def forward(self, feats_s, feats_t, emb_s: Tensor | None = None, emb_t: Tensor | None = None) -> Tensor:
        """Lists (or ordered dicts) of (B, C_l, H_l, W_l) maps, finest first (+ (B, D) embeddings
        with ``pooled_level``) -> 0-dim loss."""
        names, maps_s, maps_t = split_feature_pair(self.NAME, feats_s, feats_t)
        if self.pooled_level:
            if emb_s is None or emb_t is None:
                raise ValueError(f"{self.NAME}: inputs 'emb_s' and 'emb_t' are required with pooled_level=True.")
            if emb_s.dim() != 2 or emb_t.dim() != 2:
                raise ValueError(f"{self.NAME}: 'emb_s' / 'emb_t' must be (B, D), got {tuple(emb_s.shape)} / "
                                 f"{tuple(emb_t.shape)}.")
            names = list(names) + ["pooled"]
            maps_s = list(maps_s) + [emb_s[:, :, None, None]]
            maps_t = list(maps_t) + [emb_t[:, :, None, None]]
        self.check_level_count(len(maps_s))
        self.check_levels(names, maps_s, maps_t)
        if maps_s[0].shape[0] == 0:
            return graph_zero(maps_s, maps_t, self)
        dtype = module_dtype(self)
        preds = self.fuse([cast(s, dtype) for s in maps_s], [t.shape[-2:] for t in maps_t])
        return _hcl(preds, maps_t, self.pool_sizes, dtype)
