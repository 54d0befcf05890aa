"""FGD: focal and global distillation (Yang et al., "Focal and Global Knowledge Distillation for Detectors",
CVPR 2022).

Per level (student map ``S`` through a 1x1 ``align`` conv when the channels differ; ``T`` the teacher's), with
temperature ``t``:

* attention: ``A^S(F) = HW softmax_{hw}(mean_c |F| / t)`` (N, H, W) and ``A^C(F) = C softmax_c(mean_{hw} |F| / t)``
  (N, C);
* masks from ``gt_boxes``: a box covers the cells ``floor(x0 / s) .. ceil(x1 / s)`` and ``floor(y0 / s) ..
  ceil(y1 / s)`` (inclusive, ``s`` the level's stride); ``M_fg`` holds ``1 / (cells high x cells wide)`` of the
  smallest box covering a cell (0 elsewhere), ``M_bg = [M_fg = 0] / sum [M_fg = 0]`` per image;
* focal loss ``L_fg / L_bg = 1/N sum_{n,c,h,w} M A^S(T) A^C(T) (S - T)^2`` with ``M = M_fg`` / ``M_bg``;
* attention loss ``L_at = 1/N (sum |A^C(S) - A^C(T)| + sum |A^S(S) - A^S(T)|)``;
* global loss ``L_gl = 1/N || S + R_s(S) - T - R_t(T) ||^2``, ``R(F) = conv(ReLU(LN(conv(context(F)))))`` a GcBlock:
  ``context(F) = sum_{hw} F softmax_{hw}(conv_mask(F))`` (N, C, 1, 1), one block for each side;

.. math::

    \\mathcal{L}_{FGD} = \\sum_l \\alpha L_{fg} + \\beta L_{bg} + \\gamma L_{at} + \\lambda L_{gl}

Reference: yzd-v/FGD ``mmdet/distillation/losses/fgd.py`` (``FeatureLoss``; golden test
``tests/losses/test_field_methods.py``), with its initialisation (``conv_mask_*``: Kaiming normal, fan_in, zero
bias; the last conv of each GcBlock zero). Parameter names as there (``alpha_fgd``, ..., ``temp`` ->
``temperature``); class defaults are that file's defaults, the Faster R-CNN values come from the configs.

Box scaling (the one deviation): the authors scale each image's boxes by ``W / img_shape[1]`` (and ``H /
img_shape[0]``), the unpadded image size of that image. kd_det's ``gt_boxes`` are in the pixels of the padded
batch (Detectron2 pads at the bottom / right only), whose level-``l`` map has stride ``s_l``: boxes are divided by
``s_l``, the exact geometry. Both agree when an image fills the padded batch (golden test); with padding the
authors' boxes are stretched over the padding. The strides come from the ``strides`` parameter or, when None,
from the level names (Detectron2's ``p<k>`` has stride ``2**k``).
"""
from __future__ import annotations

import re
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import FeaturePairLoss, LossExample
from .checks import check_nonnegative, check_positive
from .precision import cast, fp32_math, graph_zero, module_dtype
from .registry import register_loss

__all__ = ["FGDLoss", "fgd_masks", "fgd_attention"]


def fgd_masks(gt_boxes: Sequence[Tensor], size, stride: float, dtype=torch.float32, device=None):
    """Per-image boxes (G_i, 4) xyxy in input pixels, map size (H, W), stride -> (fg, bg), each (N, H, W)."""
    h, w = int(size[0]), int(size[1])
    fg = torch.zeros(len(gt_boxes), h, w, dtype=dtype, device=device)
    rows, cols = torch.arange(h, device=device), torch.arange(w, device=device)
    for i, boxes in enumerate(gt_boxes):
        if len(boxes) == 0:
            continue
        b = boxes.to(device=device, dtype=dtype) / stride
        wmin, wmax = torch.floor(b[:, 0]).long(), torch.ceil(b[:, 2]).long()
        hmin, hmax = torch.floor(b[:, 1]).long(), torch.ceil(b[:, 3]).long()
        area = 1.0 / (hmax + 1 - hmin).to(dtype) / (wmax + 1 - wmin).to(dtype)            # (G,)
        in_h = (rows[None] >= hmin[:, None]) & (rows[None] <= hmax[:, None])                 # (G, H)
        in_w = (cols[None] >= wmin[:, None]) & (cols[None] <= wmax[:, None])                 # (G, W)
        inside = in_h[:, :, None] & in_w[:, None, :]                                         # (G, H, W)
        fg[i] = (inside.to(dtype) * area[:, None, None]).amax(dim=0)
    bg = (fg == 0).to(dtype)
    count = bg.sum(dim=(1, 2), keepdim=True)
    bg = torch.where(count > 0, bg / count.clamp(min=1), bg)
    return fg, bg


def fgd_attention(feat: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """(N, C, H, W) -> spatial (N, H, W) and channel (N, C) attention, scaled to mean 1."""
    n, c, h, w = feat.shape
    value = feat.abs()
    spatial = h * w * F.softmax((value.mean(dim=1) / temperature).reshape(n, -1), dim=1).reshape(n, h, w)
    channel = c * F.softmax(value.mean(dim=(2, 3)) / temperature, dim=1)
    return spatial, channel


class FGDLevel(nn.Module):
    """One level's learnable parts, named as the authors' ``FeatureLoss``: ``align`` (1x1 conv or None),
    ``conv_mask_s`` / ``conv_mask_t`` (1x1 conv C_t -> 1) and ``channel_add_conv_s`` / ``channel_add_conv_t``
    (conv C_t -> C_t // 2, LayerNorm, ReLU, conv -> C_t)."""

    def __init__(self, c_s: int, c_t: int):
        super().__init__()
        self.align = nn.Conv2d(c_s, c_t, kernel_size=1) if c_s != c_t else None
        self.conv_mask_s = nn.Conv2d(c_t, 1, kernel_size=1)
        self.conv_mask_t = nn.Conv2d(c_t, 1, kernel_size=1)
        self.channel_add_conv_s = self._gc_transform(c_t)
        self.channel_add_conv_t = self._gc_transform(c_t)
        for conv in (self.conv_mask_s, self.conv_mask_t):    # mmcv kaiming_init(mode='fan_in'): normal, relu, bias 0
            nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")
            nn.init.zeros_(conv.bias)
        for block in (self.channel_add_conv_s, self.channel_add_conv_t):    # last_zero_init
            nn.init.zeros_(block[-1].weight)
            nn.init.zeros_(block[-1].bias)

    @staticmethod
    def _gc_transform(c: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(c, c // 2, kernel_size=1), nn.LayerNorm([c // 2, 1, 1]), nn.ReLU(),
                             nn.Conv2d(c // 2, c, kernel_size=1))

    @staticmethod
    def _context(x: Tensor, conv_mask: nn.Module) -> Tensor:
        n, c = x.shape[:2]
        weights = F.softmax(conv_mask(x).reshape(n, 1, -1), dim=2)                           # (N, 1, HW)
        return torch.einsum("ncp,nkp->nc", x.reshape(n, c, -1), weights).reshape(n, c, 1, 1)

    def forward(self, s: Tensor, t: Tensor, fg: Tensor, bg: Tensor, temperature: float, weights) -> Tensor:
        """(N, C_s, H, W), (N, C_t, H, W), masks (N, H, W) -> the weighted sum of the four terms."""
        if self.align is not None:
            s = self.align(s)
        n = s.shape[0]
        spatial_s, channel_s = fgd_attention(s, temperature)
        spatial_t, channel_t = fgd_attention(t, temperature)
        sq = (s - t).pow(2) * spatial_t[:, None] * channel_t[:, :, None, None]
        fg_loss = (sq * fg[:, None]).sum() / n
        bg_loss = (sq * bg[:, None]).sum() / n
        at_loss = (channel_s - channel_t).abs().sum() / n + (spatial_s - spatial_t).abs().sum() / n
        out_s = s + self.channel_add_conv_s(self._context(s, self.conv_mask_s))
        out_t = t + self.channel_add_conv_t(self._context(t, self.conv_mask_t))
        gl_loss = (out_s - out_t).pow(2).sum() / n
        alpha, beta, gamma, lam = weights
        return alpha * fg_loss + beta * bg_loss + gamma * at_loss + lam * gl_loss


@register_loss
class FGDLoss(FeaturePairLoss):
    """Focal (fore/background, attention-weighted) and global (GcBlock) feature distillation, summed over levels.

    Args:
        in_channels: student channels per level (from ``shapes["feats_s"]``).
        out_channels: teacher channels per level (from ``shapes["feats_t"]``), each >= 2.
        temperature: attention temperature (> 0; the authors' ``temp``, 0.5).
        alpha_fgd, beta_fgd, gamma_fgd, lambda_fgd: weights (>= 0) of the foreground, background, attention and
            global terms (defaults: yzd-v/FGD ``FeatureLoss``'s).
        strides: stride of each level in input pixels; None reads them off level names ``p<k>`` (2**k).

    Inputs:
        feats_s, feats_t: FPN maps, list or ordered dict level -> (N, C_l, H_l, W_l), same (H, W) on both sides.
        gt_boxes: per image, (G_i, 4) xyxy GT boxes in the pixels of the padded input batch.
    """

    NAME, LABEL = "fgd", "FGD"
    INPUTS = ("feats_s", "feats_t", "gt_boxes")
    BUILT_FOR = "the align conv maps {} -> {}"
    SAME_SIZE = True

    def __init__(self, in_channels, out_channels, temperature: float = 0.5, alpha_fgd: float = 0.001,
                 beta_fgd: float = 0.0005, gamma_fgd: float = 0.001, lambda_fgd: float = 0.000005, strides=None):
        super().__init__(in_channels, out_channels)
        if min(self.out_channels) < 2:
            raise ValueError(f"{self.NAME}: parameter 'out_channels' must be >= 2 on every level (the global block "
                             f"halves them), got {self.out_channels}.")
        check_positive(self.NAME, "temperature", temperature)
        for key, value in (("alpha_fgd", alpha_fgd), ("beta_fgd", beta_fgd), ("gamma_fgd", gamma_fgd),
                           ("lambda_fgd", lambda_fgd)):
            check_nonnegative(self.NAME, key, value)
        if strides is not None:
            if (not isinstance(strides, (list, tuple)) or len(strides) != len(self.in_channels)
                    or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 for v in strides)):
                raise ValueError(f"{self.NAME}: parameter 'strides' must be None or {len(self.in_channels)} positive "
                                 f"numbers (one per level), got {strides!r}.")
            strides = [float(v) for v in strides]
        self.temperature, self.strides = float(temperature), strides
        self.weights = (float(alpha_fgd), float(beta_fgd), float(gamma_fgd), float(lambda_fgd))
        self.levels = nn.ModuleList(FGDLevel(c_s, c_t) for c_s, c_t in zip(self.in_channels, self.out_channels))

    @classmethod
    def example_inputs(cls, n: int = 4, seed: int = 0, dtype: torch.dtype = torch.float32) -> LossExample:
        """FitNet's two levels at strides 8 / 16 and one GT box per image, all four terms weighted 1."""
        params, shapes, inputs, _ = cls.example_maps(n, seed, dtype)
        params.update(temperature=0.5, alpha_fgd=1.0, beta_fgd=1.0, gamma_fgd=1.0, lambda_fgd=1.0, strides=[8, 16])
        inputs["gt_boxes"] = [torch.tensor([[4.0, 4.0, 20.0, 14.0]]) for _ in range(n)]
        return LossExample(params, shapes, inputs)

    def level_strides(self, names) -> list[float]:
        """The stride of each level: ``strides``, else from names ``p<k>``; one sentence when neither exists."""
        if self.strides is not None:
            return self.strides
        found = [re.fullmatch(r"p(\d+)", str(name)) for name in names]
        if not all(found):
            raise ValueError(f"{self.NAME}: levels {list(names)} are not named p<k>, so parameter 'strides' must "
                             "give their strides.")
        return [float(2 ** int(m.group(1))) for m in found]

    @fp32_math
    def forward(self, feats_s, feats_t, gt_boxes) -> Tensor:
        """See the class docstring for shapes; returns a 0-dim loss."""
        names, maps_s, maps_t = self.split_levels(feats_s, feats_t)
        self.check_levels(names, maps_s, maps_t)
        gt_boxes = [g.tensor if hasattr(g, "tensor") else g for g in gt_boxes]
        batch = maps_s[0].shape[0]
        if len(gt_boxes) != batch:
            raise ValueError(f"{self.NAME}: got GT boxes for {len(gt_boxes)} images but features for {batch}.")
        strides = self.level_strides(names)
        if batch == 0:
            return graph_zero(maps_s, maps_t, self)
        dtype = module_dtype(self)
        total = 0.0
        for s, t, stride, level in zip(maps_s, maps_t, strides, self.levels):
            fg, bg = fgd_masks(gt_boxes, t.shape[-2:], stride, dtype, t.device)
            total = total + level(cast(s, dtype), cast(t, dtype), fg, bg, self.temperature, self.weights)
        return total
