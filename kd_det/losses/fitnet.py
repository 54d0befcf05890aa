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

from torch import Tensor, nn

from ._common import (LossModule, cast, channel_list, check_channels, fp32_math, graph_zero, module_dtype,
                      split_feature_pair)

__all__ = ["FitNetLoss"]


class FitNetLoss(LossModule):
    """Hint loss: sum over levels of MSE(adapter(student), teacher).

    Args:
        in_channels: student channels per level (from ``shapes["feats_s"]``).
        out_channels: teacher channels per level (from ``shapes["feats_t"]``).
        kernel_size: adapter kernel (1 = the 1x1 regressor of the baselines; odd sizes pad
            to keep the spatial size).
    """

    NAME = "fitnet"
    INPUTS = ("feats_s", "feats_t")

    def __init__(self, in_channels, out_channels, kernel_size: int = 1):
        super().__init__()
        self.in_channels = check_channels(self.NAME, "in_channels", in_channels)
        self.out_channels = check_channels(self.NAME, "out_channels", out_channels)
        if len(self.in_channels) != len(self.out_channels):
            raise ValueError(f"{self.NAME}: 'in_channels' has {len(self.in_channels)} levels but 'out_channels' "
                             f"has {len(self.out_channels)}.")
        if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"{self.NAME}: parameter 'kernel_size' must be a positive odd int, got {kernel_size!r}.")
        self.adapters = nn.ModuleList(
            nn.Conv2d(c_s, c_t, kernel_size, padding=kernel_size // 2)
            for c_s, c_t in zip(self.in_channels, self.out_channels))

    @classmethod
    def shape_params(cls, shapes) -> dict:
        out = {}
        if "feats_s" in shapes:
            out["in_channels"] = channel_list(shapes["feats_s"])
        if "feats_t" in shapes:
            out["out_channels"] = channel_list(shapes["feats_t"])
        return out

    @fp32_math
    def forward(self, feats_s, feats_t) -> Tensor:
        """Lists (or dicts) of (B, C_l, H_l, W_l) maps -> 0-dim loss."""
        names, maps_s, maps_t = split_feature_pair(self.NAME, feats_s, feats_t)
        if len(maps_s) != len(self.adapters):
            raise ValueError(f"{self.NAME}: got {len(maps_s)} levels but the loss was built for "
                             f"{len(self.adapters)}.")
        if maps_s[0].shape[0] == 0:
            return graph_zero(maps_s, maps_t, self)
        dtype = module_dtype(self)
        total = 0.0
        for name, s, t, adapter in zip(names, maps_s, maps_t, self.adapters):
            if s.shape[1] != adapter.in_channels or t.shape[1] != adapter.out_channels:
                raise ValueError(f"{self.NAME}: level {name!r} has {s.shape[1]} student / {t.shape[1]} teacher "
                                 f"channels but the adapter maps {adapter.in_channels} -> {adapter.out_channels}.")
            if s.shape[-2:] != t.shape[-2:]:
                raise ValueError(f"{self.NAME}: level {name!r} has student size {tuple(s.shape[-2:])} but teacher "
                                 f"size {tuple(t.shape[-2:])}; they must match.")
            diff = adapter(cast(s, dtype)) - cast(t, dtype)
            total = total + diff.pow(2).mean()
        return total
