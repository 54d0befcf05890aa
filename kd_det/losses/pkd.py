"""PKD: feature imitation with the Pearson correlation coefficient (Cao et al., "PKD: General Distillation
Framework for Object Detectors via Pearson Correlation Coefficient", NeurIPS 2022).

Per level ``l``, every channel ``c`` of the student map ``S`` and of the teacher map ``T`` is normalised over the
batch and the spatial positions together (the (N, H, W) axes) to zero mean and unit standard deviation, and
the normalised maps are compared by mean squared error, halved (equivalent to ``1 - r``, r the Pearson
correlation of the two maps, per channel):

.. math::

    \\hat S_{c} = \\frac{S_{c} - \\mu(S_{c})}{\\sigma(S_{c}) + 10^{-6}}, \\qquad
    \\mathcal{L}_{PKD} = \\sum_l \\frac{1}{2\\, N C_l H_l W_l} \\big\\| \\hat S^l - \\hat T^l \\big\\|_2^2

with ``sigma`` the unbiased standard deviation (``torch.std``). Reference: open-mmlab/mmrazor
``mmrazor/models/losses/pkd_loss.py`` (``PKDLoss.norm`` / ``forward``; golden test
``tests/losses/test_field_methods.py``). Its ``loss_weight`` (6 in mmrazor
``configs/distill/mmdet/pkd/pkd_fpn_faster-rcnn_r101_faster-rcnn_r50_2x_coco.py``) is the ``weight`` of the
``KD.LOSSES`` entry here: one place per weight. When the two maps of a level differ in size, the student map is
resized bilinearly to the teacher's (``resize_stu=True``, the authors' default) or the teacher's to the
student's. PKD has no adapter: student and teacher levels need the same channels.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import FeaturePairLoss, LossExample
from .precision import cast, compute_dtype, fp32_math, graph_zero
from .registry import register_loss

__all__ = ["PKDLoss", "pkd_normalize"]


def pkd_normalize(feat: Tensor, eps: float = 1e-6) -> Tensor:
    """(N, C, H, W) -> (N, C, H, W): each channel to zero mean / unit (unbiased) std over (N, H, W)."""
    flat = feat.transpose(0, 1).reshape(feat.shape[1], -1)                   # (C, N * H * W)
    flat = (flat - flat.mean(dim=1, keepdim=True)) / (flat.std(dim=1, keepdim=True) + eps)
    return flat.reshape(feat.shape[1], feat.shape[0], *feat.shape[2:]).transpose(0, 1)


@register_loss
class PKDLoss(FeaturePairLoss):
    """Pearson-correlation feature imitation, summed over levels (no learnable parts).

    Args:
        in_channels: student channels per level (from ``shapes["feats_s"]``).
        out_channels: teacher channels per level; must equal ``in_channels``.
        resize_stu: True resizes the student map to the teacher's size when they differ, False the teacher's.

    Inputs:
        feats_s, feats_t: FPN maps, list or ordered dict level -> (N, C_l, H_l, W_l).
    """

    NAME, LABEL = "pkd", "PKD"

    def __init__(self, in_channels, out_channels, resize_stu: bool = True):
        super().__init__(in_channels, out_channels)
        if self.in_channels != self.out_channels:
            raise ValueError(f"{self.NAME}: parameter 'in_channels' {self.in_channels} must equal 'out_channels' "
                             f"{self.out_channels} (PKD has no adapter).")
        if not isinstance(resize_stu, bool):
            raise ValueError(f"{self.NAME}: parameter 'resize_stu' must be True or False, got {resize_stu!r}.")
        self.resize_stu = resize_stu

    @classmethod
    def example_inputs(cls, n: int = 4, seed: int = 0, dtype: torch.dtype = torch.float32) -> LossExample:
        """Two levels of (n, 3, 4, 4) / (n, 2, 2, 2) maps on both sides."""
        params, shapes, inputs, _ = cls.example_maps(n, seed, dtype, in_channels=(3, 2), out_channels=(3, 2))
        return LossExample(params, shapes, inputs)

    @fp32_math
    def forward(self, feats_s, feats_t) -> Tensor:
        """Lists (or dicts) of (N, C_l, H_l, W_l) maps -> 0-dim loss."""
        names, maps_s, maps_t = self.split_levels(feats_s, feats_t)
        self.check_levels(names, maps_s, maps_t)
        if maps_s[0].shape[0] == 0:
            return graph_zero(maps_s, maps_t)
        dtype = compute_dtype(*maps_s, *maps_t)
        total = 0.0
        for s, t in zip(maps_s, maps_t):
            s, t = cast(s, dtype), cast(t, dtype)
            if s.shape[-2:] != t.shape[-2:]:
                if self.resize_stu:
                    s = F.interpolate(s, t.shape[-2:], mode="bilinear")
                else:
                    t = F.interpolate(t, s.shape[-2:], mode="bilinear")
            total = total + F.mse_loss(pkd_normalize(s), pkd_normalize(t)) / 2
        return total
