"""CWD: channel-wise distillation (Shu et al., "Channel-wise Knowledge Distillation for Dense Prediction",
ICCV 2021).

Per level, each channel's map is turned into a distribution over its H x W positions by a softmax at temperature
``tau``, and the student's distribution is pulled to the teacher's by KL divergence:

.. math::

    \\mathcal{L}_{CWD} = \\sum_l \\frac{\\tau^2}{N C_l} \\sum_{n, c} \\sum_{i=1}^{H_l W_l}
        \\phi(T^l_{nc} / \\tau)_i \\big[\\log \\phi(T^l_{nc} / \\tau)_i - \\log \\phi(S^l_{nc} / \\tau)_i\\big]

``phi`` the softmax over the positions. Reference: open-mmlab/mmrazor ``mmrazor/models/losses/cwd.py``
(``ChannelWiseDivergence``; golden test ``tests/losses/test_field_methods.py``). Its ``loss_weight`` (10 in mmrazor
``configs/distill/mmdet/cwd/cwd_fpn_frcnn_r101_frcnn_r50_1x_coco.py``) is the ``weight`` of the ``KD.LOSSES``
entry here. No adapter: student and teacher levels need the same channels and the same (H, W).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import FeaturePairLoss, LossExample
from .checks import check_positive
from .precision import cast, compute_dtype, fp32_math, graph_zero
from .registry import register_loss

__all__ = ["CWDLoss"]


@register_loss
class CWDLoss(FeaturePairLoss):
    """Channel-wise spatial-softmax KL(teacher || student), summed over levels (no learnable parts).

    Args:
        in_channels: student channels per level (from ``shapes["feats_s"]``).
        out_channels: teacher channels per level; must equal ``in_channels``.
        temperature: ``tau`` of the paper (> 0; mmrazor's detection configs: 1).

    Inputs:
        feats_s, feats_t: FPN maps, list or ordered dict level -> (N, C_l, H_l, W_l), same sizes on both sides.
    """

    NAME, LABEL = "cwd", "CWD"
    SAME_SIZE = True

    def __init__(self, in_channels, out_channels, temperature: float = 1.0):
        super().__init__(in_channels, out_channels)
        if self.in_channels != self.out_channels:
            raise ValueError(f"{self.NAME}: parameter 'in_channels' {self.in_channels} must equal 'out_channels' "
                             f"{self.out_channels} (CWD has no adapter).")
        check_positive(self.NAME, "temperature", temperature)
        self.temperature = float(temperature)

    @classmethod
    def example_inputs(cls, n: int = 4, seed: int = 0, dtype: torch.dtype = torch.float32) -> LossExample:
        """Two levels of (n, 3, 4, 4) / (n, 2, 2, 2) maps on both sides, temperature 2."""
        params, shapes, inputs, _ = cls.example_maps(n, seed, dtype, in_channels=(3, 2), out_channels=(3, 2))
        return LossExample({**params, "temperature": 2.0}, shapes, inputs)

    @fp32_math
    def forward(self, feats_s, feats_t) -> Tensor:
        """Lists (or dicts) of (N, C_l, H_l, W_l) maps -> 0-dim loss."""
        names, maps_s, maps_t = self.split_levels(feats_s, feats_t)
        self.check_levels(names, maps_s, maps_t)
        if maps_s[0].shape[0] == 0:
            return graph_zero(maps_s, maps_t)
        dtype = compute_dtype(*maps_s, *maps_t)
        tau = self.temperature
        total = 0.0
        for s, t in zip(maps_s, maps_t):
            n, c = s.shape[:2]
            log_p_t = F.log_softmax(cast(t, dtype).reshape(n * c, -1) / tau, dim=1)
            log_p_s = F.log_softmax(cast(s, dtype).reshape(n * c, -1) / tau, dim=1)
            kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum()
            total = total + kl * tau ** 2 / (n * c)
        return total
