"""MGD: masked generative distillation (Yang et al., "Masked Generative Distillation", ECCV 2022).

Per level, the student map (through a 1x1 ``align`` conv when the channels differ) has a random set of spatial
positions zeroed, a generation block (3x3 conv, ReLU, 3x3 conv) regenerates the teacher's full map from the rest,
and the generated map is compared with the teacher's by summed squared error per image:

.. math::

    M_{n,hw} = \\mathbb{1}[u_{n,hw} \\le 1 - \\lambda], \\; u \\sim U(0, 1), \\qquad
    \\mathcal{L}_{MGD} = \\sum_l \\frac{1}{N} \\big\\| \\mathcal{G}_l\\big(f^l_{align}(S^l) \\odot M^l\\big)
        - T^l \\big\\|_2^2

``lambda`` is the masked ratio (``mask_ratio``, the authors' ``lambda_mgd``; one mask per image and position,
shared by the channels). References: open-mmlab/mmrazor ``mmrazor/models/losses/mgd_loss.py`` (``MGDLoss``, the
summed MSE / N) and ``mmrazor/models/architectures/connectors/mgd_connector.py`` (``MGDConnector``: align, mask,
generation), the same computation as yzd-v/MGD ``det/mmdet/distillation/losses/mgd.py``; golden test
``tests/losses/test_field_methods.py``. The authors' ``alpha_mgd`` multiplies the whole loss: it is the
``weight`` of the ``KD.LOSSES`` entry here (one place per weight).

Random mask, repeatable: the authors draw it from torch's global generator. Here each training-mode call draws
its masks on the CPU from its own ``torch.Generator`` seeded with ``mask_seed + draws`` (two int64 buffers, so
they are saved in checkpoints and a resumed run draws the masks it would have drawn), then ``draws`` advances by
one. ``mask_seed`` is the constructor's ``seed``, or, when None, one number drawn from torch's global generator at
construction: the detection wrapper builds the losses under ``kd_det.core.isolated_rng`` after the run's
``SEED`` has seeded it, so one seed gives the same masks bit for bit and the data order is left untouched. An
eval-mode call uses the masks of the current ``draws`` without advancing (repeatable calls, e.g. gradcheck).
The masks do not depend on the device.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import FeaturePairLoss, LossExample
from .precision import cast, fp32_math, graph_zero, module_dtype
from .registry import register_loss

__all__ = ["MGDLoss"]


class MGDLevel(nn.Module):
    """One level's learnable parts, named as mmrazor's ``MGDConnector``: ``align`` (1x1 conv C_s -> C_t, or None
    when C_s == C_t) and ``generation`` (3x3 conv, ReLU, 3x3 conv, C_t -> C_t), PyTorch's default init as there."""

    def __init__(self, c_s: int, c_t: int):
        super().__init__()
        self.align = nn.Conv2d(c_s, c_t, kernel_size=1) if c_s != c_t else None
        self.generation = nn.Sequential(nn.Conv2d(c_t, c_t, kernel_size=3, padding=1), nn.ReLU(),
                                        nn.Conv2d(c_t, c_t, kernel_size=3, padding=1))

    def forward(self, s: Tensor, t: Tensor, keep: Tensor) -> Tensor:
        """(N, C_s, H, W), (N, C_t, H, W), (N, 1, H, W) 0/1 keep mask -> summed squared error / N."""
        if self.align is not None:
            s = self.align(s)
        return (self.generation(s * keep) - t).pow(2).sum() / t.shape[0]


@register_loss
class MGDLoss(FeaturePairLoss):
    """Masked generation of the teacher's FPN maps from the student's, summed over levels.

    Args:
        in_channels: student channels per level (from ``shapes["feats_s"]``).
        out_channels: teacher channels per level (from ``shapes["feats_t"]``).
        mask_ratio: fraction of positions masked, in (0, 1) (``lambda_mgd``; mmrazor's default 0.65).
        seed: seed of the mask generator; None draws it from torch's global generator (see the module docstring).

    Inputs:
        feats_s, feats_t: FPN maps, list or ordered dict level -> (N, C_l, H_l, W_l), same (H, W) on both sides.
    """

    NAME, LABEL = "mgd", "MGD"
    BUILT_FOR = "the align conv maps {} -> {}"
    SAME_SIZE = True

    def __init__(self, in_channels, out_channels, mask_ratio: float = 0.65, seed: int | None = None):
        super().__init__(in_channels, out_channels)
        if isinstance(mask_ratio, bool) or not isinstance(mask_ratio, (int, float)) or not 0 < mask_ratio < 1:
            raise ValueError(f"{self.NAME}: parameter 'mask_ratio' must be a number in (0, 1) (the fraction of "
                             f"positions masked), got {mask_ratio!r}.")
        if seed is None:
            seed = int(torch.randint(0, 2 ** 62, ()))
        elif isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2 ** 62:
            raise ValueError(f"{self.NAME}: parameter 'seed' must be None or an int in [0, 2**62), got {seed!r}.")
        self.mask_ratio = float(mask_ratio)
        self.levels = nn.ModuleList(MGDLevel(c_s, c_t) for c_s, c_t in zip(self.in_channels, self.out_channels))
        self.register_buffer("mask_seed", torch.tensor(seed, dtype=torch.int64))
        self.register_buffer("draws", torch.tensor(0, dtype=torch.int64))

    @classmethod
    def example_inputs(cls, n: int = 4, seed: int = 0, dtype: torch.dtype = torch.float32) -> LossExample:
        """Two levels (student 2 / 3, teacher 3 / 2 channels: both with an align conv), seed fixed, eval mode
        (a training-mode call advances the mask stream)."""
        params, shapes, inputs, _ = cls.example_maps(n, seed, dtype)
        return LossExample({**params, "mask_ratio": 0.5, "seed": seed}, shapes, inputs, train=False)

    def keep_masks(self, sizes) -> list[Tensor]:
        """Per level ``(N, H, W)`` in ``sizes``: the (N, 1, H, W) bool keep masks of the current ``draws``
        (True = kept, probability 1 - mask_ratio), drawn on the CPU, levels in order."""
        g = torch.Generator().manual_seed(int(self.mask_seed) + int(self.draws))
        return [torch.rand((n, 1, h, w), generator=g) <= 1 - self.mask_ratio for n, h, w in sizes]

    @fp32_math
    def forward(self, feats_s, feats_t) -> Tensor:
        """Lists (or dicts) of (N, C_l, H_l, W_l) maps -> 0-dim loss."""
        names, maps_s, maps_t = self.split_levels(feats_s, feats_t)
        self.check_levels(names, maps_s, maps_t)
        if maps_s[0].shape[0] == 0:
            return graph_zero(maps_s, maps_t, self)
        keeps = self.keep_masks([(t.shape[0], *t.shape[-2:]) for t in maps_t])
        if self.training:
            self.draws += 1
        dtype = module_dtype(self)
        total = 0.0
        for s, t, keep, level in zip(maps_s, maps_t, keeps, self.levels):
            total = total + level(cast(s, dtype), cast(t, dtype), keep.to(device=t.device, dtype=dtype))
        return total
