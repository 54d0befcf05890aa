"""FitNet hint loss (Romero et al., ICLR 2015) with a 1x1-conv adapter per level.

For each level ``l`` the student map goes through a regressor ``r_l`` (1x1 conv, the
channel adapter used by the detection baselines of ReviewKD / CKD Table V) and is compared
with the teacher map by mean squared error:

.. math::

    \\mathcal{L}_{FitNet} = \\sum_{l} \\frac{1}{B C_l H_l W_l}
        \\big\\| r_l(F^S_l) - F^T_l \\big\\|_2^2

Detection: FPN levels p2..p6 (an ordered dict or a list); classification: a list of
backbone stages. Student and teacher maps of a level must have the same spatial size.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import FeaturePairLoss, LossExample
from .precision import cast, fp32_math, graph_zero, module_dtype
from .registry import register_loss

__all__ = ["FitNetLoss"]


@register_loss
class FitNetLoss(FeaturePairLoss):
    """Hint loss: sum over levels of MSE(adapter(student), teacher).

    Args:
        in_channels: student channels per level (from ``shapes["feats_s"]``).
        out_channels: teacher channels per level (from ``shapes["feats_t"]``).
        kernel_size: adapter kernel (1 = the 1x1 regressor of the baselines; odd sizes pad
            to keep the spatial size).
    """

    NAME, LABEL = "fitnet", "FitNet"
    BUILT_FOR = "the adapter maps {} -> {}"
    SAME_SIZE = True

    def __init__(self, in_channels, out_channels, kernel_size: int = 1):
        super().__init__(in_channels, out_channels)
        if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"{self.NAME}: parameter 'kernel_size' must be a positive odd int, got {kernel_size!r}.")
        self.adapters = nn.ModuleList(
            nn.Conv2d(c_s, c_t, kernel_size, padding=kernel_size // 2)
            for c_s, c_t in zip(self.in_channels, self.out_channels))

    @classmethod
    def example_inputs(cls, n: int = 4, seed: int = 0, dtype: torch.dtype = torch.float32) -> LossExample:
        """Two levels, (n, 2, 4, 4) / (n, 3, 2, 2) student maps, (n, 3, 4, 4) / (n, 2, 2, 2) teacher maps."""
        params, shapes, inputs, _ = cls.example_maps(n, seed, dtype)
        return LossExample(params, shapes, inputs)

    @fp32_math
    def forward(self, feats_s, feats_t) -> Tensor:
        """Lists (or dicts) of (B, C_l, H_l, W_l) maps -> 0-dim loss."""
        names, maps_s, maps_t = self.split_levels(feats_s, feats_t)
        if maps_s[0].shape[0] == 0:
            return graph_zero(maps_s, maps_t, self)
        self.check_levels(names, maps_s, maps_t)
        dtype = module_dtype(self)
        total = 0.0
        for s, t, adapter in zip(maps_s, maps_t, self.adapters):
            diff = adapter(cast(s, dtype)) - cast(t, dtype)
            total = total + diff.pow(2).mean()
        return total
