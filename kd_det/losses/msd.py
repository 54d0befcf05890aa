"""Multi-scale decoupled contrastive distillation (Wang, Chen & Wang, "Contrastive Representation
Distillation via Multi-Scale Feature Decoupling"). No public code exists.

For every stage, student maps go through an attention-based projector (ABP) to the teacher's
channel count; both sides are pooled into ``M`` local vectors per image (several pooling
sizes and positions), giving ``N = B * M`` student vectors ``S^i_m`` and teacher vectors
``T^j_n``. The teacher classifier labels each local teacher vector, ``C^j_n = argmax fc^T(T^j_n)``.
With cosine similarity ``sim`` (after L2 normalisation) and the discriminator ``D``
that drops "other positives" (same predicted class, different image or cell) from the
denominator (Eq. 10):

.. math::

    \\mathcal{L}_{stage} = -\\frac{1}{BM} \\sum_{i, m}
        \\log \\frac{\\exp(\\mathrm{sim}(S^i_m, T^i_m) / \\tau)}
                   {\\sum_{j, n} D(S^i_m, T^j_n)}, \\quad
    D = \\begin{cases} 0 & C^i_m = C^j_n,\\ (j, n) \\ne (i, m) \\\\
                       \\exp(\\mathrm{sim}(S^i_m, T^j_n) / \\tau) & \\text{otherwise} \\end{cases}

    \\mathcal{L}_{MSD} = \\sum_{\\text{stages}} \\mathcal{L}_{stage}   \\quad (13), \\qquad
    L = L_{CE} + \\beta\\, \\mathcal{L}_{MSD},\\ \\beta = 0.8 \\text{ (the combination weight)}

Choices the paper leaves open (also in docs/losses.md):

1. Pooling: adaptive average pooling to ``grids = (1, 2, 4)`` cells per side, so
   M = 1 + 4 + 16 = 21 vectors per image (global + 2x2 + 4x4 positions); cell ``m`` is
   ``(grid, row, col)`` in that order, the same on every stage and on both sides.
2. ABP (attention-based projector). The paper's descriptions conflict: Table 5 names the
   best projector "1x1Conv-1x1Conv-Attention", Sec. 1 says ABP enhances regions "through
   channel-wise attention", and the extra-parameter counts of Table 7 (single-level
   distillation) fit neither. Four of its five counts equal, exactly,
   ``conv1x1(C_s -> C_s, no bias) + BN -> conv3x3(C_s -> C_t, no bias) + BN ->
   conv1x1(C_t -> 1, with bias) + sigmoid`` (2 parameters per BN channel):
   ResNet110->ResNet32 64->64: 4,224 + 36,992 + 65 = 41,281; ResNet32x4->ResNet8x4
   256->256: 66,048 + 590,336 + 257 = 656,641; ->WRN-40-2 128->256: 16,640 + 295,424 + 257
   = 312,321; ->ShuffleNetV2 464->256: 216,224 + 1,069,568 + 257 = 1,286,049. The
   ShuffleNetV1 count (1,672,961) fits no integer C_s for C_t = 256 (C_s^2 + 2306 C_s + 769
   = 1,672,961 gives C_s = 579.5; its 960-channel map would give 3,136,129). No 1x1-1x1
   layout fits 41,281 either. The layout the counts support is used:
   ``y = BN(conv3x3(ReLU(BN(conv1x1(x)))))`` with the hidden width = student channels
   (``hidden_channels`` overrides it), then a spatial attention map
   ``a = sigmoid(conv1x1(y))`` (B, 1, H, W, with bias) and output ``y * a``: pooling then
   gives an attention-weighted average inside each cell. The ReLU between the two convs is
   our choice (it has no parameters, so the counts cannot show it; ReviewKD's ABF, which has
   the same conv1x1-BN / conv3x3-BN pair, has none).
3. Labels: the teacher classifier expects the penultimate (last-stage) width, so labels
   come from the pooled vectors of the stage ``label_stage`` (default -1, the last) and are
   shared by every stage through the common cell layout. They are computed under no_grad.
   Without a classifier (``sample_classification=False``, e.g. FPN levels in detection) no
   pair is removed: the "CL + MSP" row of the paper's ablation (Table 4).
4. Eq. 12 prints the ratio without the log; the log of Eq. 11 (the MI bound) is used.
5. Temperature: the paper has none (``tau = 1``, the default); ``temperature`` allows one.
6. The positive stays in the denominator (Eq. 9 sums over all (j, n) with D = exp(sim)
   for the positive); negatives come from the whole batch, one stage at a time.
7. Anchor = student vector, candidates = teacher vectors (Eq. 9); teacher maps are not
   projected; all B * M anchors weigh the same (1 / BM).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import FeaturePairLoss, LossExample
from .checks import check_positive
from .precision import cast, compute_dtype, fp32_math, graph_zero, module_dtype
from .registry import register_loss

__all__ = ["ABP", "multi_scale_pool", "msd_stage_loss", "MSDLoss"]


class ABP(nn.Module):
    """Attention-based projector: (B, C_s, H, W) -> (B, C_t, H, W), see choice 2.

    Parameters: ``C_s*h + 2h + 9*h*C_t + 2*C_t + C_t + 1`` with ``h = hidden_channels``
    (default C_s), the count of the MSD paper's Table 7.
    """

    def __init__(self, in_channels: int, out_channels: int, hidden_channels: int | None = None):
        super().__init__()
        hidden = hidden_channels or in_channels
        self.proj = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels))
        self.attention = nn.Sequential(nn.Conv2d(out_channels, 1, 1), nn.Sigmoid())

    def forward(self, x: Tensor) -> Tensor:
        y = self.proj(x)
        return y * self.attention(y)


def multi_scale_pool(x: Tensor, grids: Sequence[int] = (1, 2, 4)) -> Tensor:
    """(B, C, H, W) -> (B, M, C) local vectors, M = sum(g * g), cells grid-major then row-major."""
    cells = [F.adaptive_avg_pool2d(x, g).flatten(2) for g in grids]     # (B, C, g*g) each
    return torch.cat(cells, dim=2).transpose(1, 2)


@fp32_math
def msd_stage_loss(vec_s: Tensor, vec_t: Tensor, labels: Tensor | None = None, temperature: float = 1.0) -> Tensor:
    """Decoupled contrastive loss of one stage.

    Args:
        vec_s: (N, D) student local vectors (N = B * M, image-major), normalised here.
        vec_t: (N, D) teacher local vectors, same order.
        labels: (N,) int teacher-predicted class per cell, or None (no pair removed).
        temperature: tau > 0 (paper: none, i.e. 1.0).

    Returns:
        0-dim tensor: mean over the N anchors of -log(positive / kept denominator).
    """
    check_positive("msd", "temperature", temperature)
    n = vec_s.shape[0]
    if n == 0:
        return graph_zero(vec_s, vec_t)
    dtype = compute_dtype(vec_s, vec_t)
    s = F.normalize(cast(vec_s, dtype), dim=1)
    t = F.normalize(cast(vec_t, dtype), dim=1)
    logits = (s @ t.t()) / temperature                                   # (N, N) sim(S_k, T_l) / tau
    if labels is not None:
        same = labels.view(-1, 1) == labels.view(1, -1)
        same.fill_diagonal_(False)                                       # the related positive stays
        logits = logits.masked_fill(same, float("-inf"))
    return (torch.logsumexp(logits, dim=1) - logits.diagonal()).mean()


@register_loss
class MSDLoss(FeaturePairLoss):
    """Multi-scale decoupled contrastive distillation over several stages.

    Args:
        in_channels: student channels per stage (from ``shapes["feats_s"]``).
        out_channels: teacher channels per stage (from ``shapes["feats_t"]``).
        grids: pooling grids per side (choice 1; default (1, 2, 4), M = 21).
        temperature: tau (choice 5; paper: 1.0).
        sample_classification: label cells with the teacher classifier and drop other
            positives (paper: True); False = "CL + MSP" ablation, no classifier needed.
        label_stage: stage whose pooled teacher vectors are classified (choice 3).
        hidden_channels: ABP hidden width; None = student channels (choice 2, MSD Table 7).

    Inputs:
        feats_s, feats_t: list (or ordered dict) of (B, C_l, H_l, W_l) maps per stage.
        teacher_classifier: callable (K, D_t) -> (K, num_classes), required when
            ``sample_classification`` is True.
    """

    NAME = "msd"
    INPUTS = ("feats_s", "feats_t", "teacher_classifier")
    OPTIONAL_INPUTS = ("teacher_classifier",)
    LEVEL = "stage"

    def __init__(self, in_channels, out_channels, grids: Sequence[int] = (1, 2, 4), temperature: float = 1.0,
                 sample_classification: bool = True, label_stage: int = -1, hidden_channels: int | None = None):
        super().__init__(in_channels, out_channels)
        if not grids or any(isinstance(g, bool) or not isinstance(g, int) or g <= 0 for g in grids):
            raise ValueError(f"{self.NAME}: parameter 'grids' must be a non-empty list of positive ints, "
                             f"got {grids!r}.")
        check_positive(self.NAME, "temperature", temperature)
        if not -len(self.in_channels) <= label_stage < len(self.in_channels):
            raise ValueError(f"{self.NAME}: parameter 'label_stage' ({label_stage}) is not a valid index for "
                             f"{len(self.in_channels)} stages.")
        self.grids, self.temperature = tuple(grids), float(temperature)
        self.sample_classification, self.label_stage = bool(sample_classification), int(label_stage)
        self.projectors = nn.ModuleList(ABP(c_s, c_t, hidden_channels)
                                        for c_s, c_t in zip(self.in_channels, self.out_channels))

    def required_inputs(self) -> tuple[str, ...]:
        if self.sample_classification:
            return self.INPUTS
        return ("feats_s", "feats_t")

    def used_inputs(self) -> tuple[str, ...]:
        return self.required_inputs()  # teacher_classifier: required with sample_classification, ignored without

    @classmethod
    def example_inputs(cls, n: int = 4, seed: int = 0, dtype: torch.dtype = torch.float32) -> LossExample:
        """Two stages (2 -> 3, 3 -> 4 channels), grids (1, 2), a 4 -> 3 linear teacher classifier."""
        params, shapes, inputs, generator = cls.example_maps(n, seed, dtype, out_channels=(3, 4))
        classifier = nn.Linear(4, 3).to(dtype)
        with torch.no_grad():
            for p in classifier.parameters():
                p.copy_(torch.randn(p.shape, generator=generator) * 0.5)
        inputs["teacher_classifier"] = classifier
        return LossExample(dict(params, grids=(1, 2)), shapes, inputs)

    @torch.no_grad()
    def cell_labels(self, pooled_t: Tensor, teacher_classifier: Callable) -> Tensor:
        """(B, M, D_t) pooled teacher vectors -> (B * M,) predicted classes."""
        flat = pooled_t.reshape(-1, pooled_t.shape[-1])
        try:
            logits = teacher_classifier(flat)
        except RuntimeError as err:
            raise ValueError(f"{self.NAME}: 'teacher_classifier' could not be applied to the pooled teacher vectors "
                             f"of stage {self.label_stage} with shape {tuple(flat.shape)} ({err}).") from None
        return logits.argmax(dim=1)

    @fp32_math
    def forward(self, feats_s, feats_t, teacher_classifier: Callable | None = None) -> Tensor:
        """Per-stage maps (+ teacher classifier) -> 0-dim loss summed over stages."""
        names, maps_s, maps_t = self.split_levels(feats_s, feats_t)
        self.check_levels(names, maps_s, maps_t)
        if self.sample_classification and teacher_classifier is None:
            raise ValueError(f"{self.NAME}: input 'teacher_classifier' is required with sample_classification=True "
                             "(set it to False to skip the cell labels).")
        if maps_s[0].shape[0] == 0:
            return graph_zero(maps_s, maps_t, self)
        dtype = module_dtype(self)
        pooled_t = [multi_scale_pool(cast(t, dtype), self.grids) for t in maps_t]    # (B, M, C_t) each
        labels = None
        if self.sample_classification:
            labels = self.cell_labels(pooled_t[self.label_stage], teacher_classifier)
        total = 0.0
        for s, p_t, projector in zip(maps_s, pooled_t, self.projectors):
            p_s = multi_scale_pool(projector(cast(s, dtype)), self.grids)
            total = total + msd_stage_loss(p_s.reshape(-1, p_s.shape[-1]), p_t.reshape(-1, p_t.shape[-1]),
                                           labels, self.temperature)
        return total
