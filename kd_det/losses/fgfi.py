"""Fine-grained feature imitation (Wang et al., "Distilling Object Detectors with Fine-grained
Feature Imitation", CVPR 2019), a CKD Table V / ReviewKD detection baseline.

Imitation mask. For every GT box ``g`` the IoU with every anchor is computed; with
``m_g = max_a IoU(a, g)`` the anchors with ``IoU(a, g) > psi * m_g`` (psi = 0.5) are kept and
a feature location is imitated when any of its A anchors is kept for any GT box:

.. math::

    I_{hw} = \\big[\\exists g, a:\\ \\mathrm{IoU}(\\mathrm{anchor}_{hwa}, g) > \\psi\\, m_g\\big]

Loss (the paper's Eq. 3, one adaptation layer ``f_adap`` per level):

.. math::

    \\mathcal{L}_{FGFI} = \\frac{1}{2 N_p} \\sum_{l} \\sum_{b, h, w} I^l_{bhw}
        \\sum_c \\big(f^l_{adap}(s)_{bchw} - t_{bchw}\\big)^2, \\qquad N_p = \\sum_{l,b,h,w} I^l_{bhw}

Choices for FPN (the paper has one feature level): the mask is built per level from that
level's anchors, and ``m_g`` is the best IoU on that level (``max_over="level"``, default) or
over all levels together (``max_over="all"``, so each GT is imitated mainly on the levels
whose anchors fit it). ``N_p`` counts masked locations over all levels and images. The
adapter is a 3x3 conv (the paper's "full convolution adaptation layer") without the ReLU of
the original VGG code, because FPN outputs take negative values.

Adapter initialisation as the authors' code (twangnh/Distilling-Object-Detectors,
``trainval_net_sup.py``: ``normal_init(stu_feature_adap[0], 0, 0.0001, truncated=True)``): weights
drawn with standard deviation ``adapter_std`` = 1e-4 (a standard deviation, not a variance) and
kept within +-2 std, the bias left at PyTorch's default (their truncated branch does not zero it).
Their +-2 std bound wraps values with ``fmod``; ``nn.init.trunc_normal_`` redraws them instead (our
choice: the same bound, a clean truncated normal). The same script's imitation weight (0.01) and
400-iteration delay at batch 1 are set in the configs (the ``weight`` / ``start_iter`` of its ``KD.LOSSES`` entry).

Anchors follow Detectron2's ``DefaultAnchorGenerator`` layout: level ``l`` has
``H_l * W_l * A`` boxes (x0, y0, x1, y1) ordered location-major, anchor-minor
(index = (h * W + w) * A + a). The mask builder takes plain tensors only.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import Tensor, nn

from .base import FeaturePairLoss, LossExample
from .checks import check_nonnegative, check_positive
from .precision import cast, fp32_math, graph_zero, module_dtype
from .registry import register_loss

__all__ = ["box_iou", "fgfi_mask", "fgfi_masks", "FGFILoss"]


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise IoU of (A, 4) and (G, 4) xyxy boxes -> (A, G)."""
    area1 = (boxes1[:, 2] - boxes1[:, 0]).clamp(min=0) * (boxes1[:, 3] - boxes1[:, 1]).clamp(min=0)
    area2 = (boxes2[:, 2] - boxes2[:, 0]).clamp(min=0) * (boxes2[:, 3] - boxes2[:, 1]).clamp(min=0)
    lt = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=2)
    union = area1[:, None] + area2[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def _num_anchors(anchors: Tensor, size) -> int:
    h, w = int(size[0]), int(size[1])
    if anchors.dim() != 2 or anchors.shape[1] != 4 or h * w == 0 or anchors.shape[0] % (h * w):
        raise ValueError(f"fgfi: anchors of shape {tuple(anchors.shape)} do not fit a {h}x{w} feature map "
                         "(expected (H * W * A, 4)).")
    return anchors.shape[0] // (h * w)


@torch.no_grad()
def fgfi_masks(anchors: Sequence[Tensor], gt_boxes: Sequence[Tensor], feat_sizes: Sequence, psi: float = 0.5,
               max_over: str = "level") -> list[Tensor]:
    """Imitation masks for every level and image.

    Args:
        anchors: per level, (H_l * W_l * A_l, 4) xyxy anchors (the same for every image).
        gt_boxes: per image, (G_i, 4) xyxy GT boxes.
        feat_sizes: per level, (H_l, W_l).
        psi: threshold factor on the best IoU of each GT box (paper: 0.5).
        max_over: "level" (best IoU per level) or "all" (best IoU over all levels).

    Returns:
        per level, a (B, H_l, W_l) bool mask.
    """
    if max_over not in ("level", "all"):
        raise ValueError(f"fgfi: parameter 'max_over' must be 'level' or 'all', got {max_over!r}.")
    if len(anchors) != len(feat_sizes):
        raise ValueError(f"fgfi: got anchors for {len(anchors)} levels but {len(feat_sizes)} feature sizes.")
    counts = [_num_anchors(a, s) for a, s in zip(anchors, feat_sizes)]
    masks = [torch.zeros(len(gt_boxes), int(s[0]), int(s[1]), dtype=torch.bool, device=a.device)
             for a, s in zip(anchors, feat_sizes)]
    for b, gt in enumerate(gt_boxes):
        if gt.numel() == 0:
            continue
        gt = gt.reshape(-1, 4)
        ious = [box_iou(a.float(), gt.to(a.device).float()) for a in anchors]       # per level (HWA, G)
        best = [iou.max(dim=0).values for iou in ious]                              # per level (G,)
        if max_over == "all":
            best = [torch.stack(best).max(dim=0).values] * len(best)
        for level, (iou, m, (h, w), a) in enumerate(zip(ious, best, feat_sizes, counts)):
            keep = (iou > psi * m.unsqueeze(0)).any(dim=1)                           # (HWA,)
            masks[level][b] = keep.view(int(h), int(w), a).any(dim=2)
    return masks


def fgfi_mask(anchors: Tensor, gt_boxes: Tensor, feat_size, psi: float = 0.5) -> Tensor:
    """Imitation mask of one image on one level: (H * W * A, 4), (G, 4), (H, W) -> (H, W) bool."""
    return fgfi_masks([anchors], [gt_boxes], [feat_size], psi)[0][0]


@register_loss
class FGFILoss(FeaturePairLoss):
    """Masked feature imitation with one adaptation conv per level.

    Args:
        in_channels: student channels per level (from ``shapes["feats_s"]``).
        out_channels: teacher channels per level (from ``shapes["feats_t"]``).
        psi: mask threshold factor (paper: 0.5).
        adapter_kernel: adaptation conv kernel (paper: 3).
        max_over: "level" or "all", see the module docstring.
        adapter_std: standard deviation of the adapter weights' truncated-normal init (authors'
            code: 1e-4, see the module docstring); None keeps PyTorch's default conv init.

    Inputs:
        feats_s, feats_t: FPN maps, list or ordered dict level -> (B, C, H_l, W_l).
        anchors: per level (list in level order, or dict keyed like the features),
            (H_l * W_l * A, 4) xyxy anchors in Detectron2's order.
        gt_boxes: per image, (G_i, 4) xyxy GT boxes in input-image coordinates.
    """

    NAME = "fgfi"
    INPUTS = ("feats_s", "feats_t", "anchors", "gt_boxes")
    BUILT_FOR = "the adapter maps {} -> {}"
    SAME_SIZE = True

    def __init__(self, in_channels, out_channels, psi: float = 0.5, adapter_kernel: int = 3,
                 max_over: str = "level", adapter_std: float | None = 1e-4):
        super().__init__(in_channels, out_channels)
        check_nonnegative(self.NAME, "psi", psi)
        if psi >= 1:
            raise ValueError(f"{self.NAME}: parameter 'psi' must be < 1 (the best anchor itself must pass), got {psi}.")
        if not isinstance(adapter_kernel, int) or adapter_kernel < 1 or adapter_kernel % 2 == 0:
            raise ValueError(f"{self.NAME}: parameter 'adapter_kernel' must be a positive odd int, "
                             f"got {adapter_kernel!r}.")
        if max_over not in ("level", "all"):
            raise ValueError(f"{self.NAME}: parameter 'max_over' must be 'level' or 'all', got {max_over!r}.")
        if adapter_std is not None:
            check_positive(self.NAME, "adapter_std", adapter_std)
        self.psi, self.max_over = float(psi), max_over
        self.adapters = nn.ModuleList(
            nn.Conv2d(c_s, c_t, adapter_kernel, padding=adapter_kernel // 2)
            for c_s, c_t in zip(self.in_channels, self.out_channels))
        if adapter_std is not None:
            std = float(adapter_std)
            for adapter in self.adapters:
                nn.init.trunc_normal_(adapter.weight, mean=0.0, std=std, a=-2.0 * std, b=2.0 * std)

    @classmethod
    def example_inputs(cls, n: int = 4, seed: int = 0, dtype: torch.dtype = torch.float32) -> LossExample:
        """FitNet's two levels (strides 8, 16; 2 anchors per location) and one GT box per image."""
        params, shapes, inputs, _ = cls.example_maps(n, seed, dtype)
        anchors = []
        for size, stride in ((4, 8), (2, 16)):
            ys, xs = torch.meshgrid(torch.arange(size) * stride, torch.arange(size) * stride, indexing="ij")
            centers = torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1).float()
            boxes = [torch.cat([centers - half, centers + half], dim=1) for half in (stride * 0.75, stride * 1.5)]
            anchors.append(torch.stack(boxes, dim=1).reshape(-1, 4))          # (H * W * 2, 4), location-major
        inputs.update(anchors=anchors, gt_boxes=[torch.tensor([[4.0, 4.0, 20.0, 14.0]]) for _ in range(n)])
        return LossExample(params, shapes, inputs)

    @fp32_math
    def forward(self, feats_s, feats_t, anchors, gt_boxes) -> Tensor:
        """See the class docstring for shapes; returns a 0-dim loss."""
        names, maps_s, maps_t = self.split_levels(feats_s, feats_t)
        if isinstance(anchors, Mapping):
            missing = [n for n in names if n not in anchors]
            if missing:
                raise ValueError(f"{self.NAME}: 'anchors' has no entry for level(s) {missing}.")
            anchors = [anchors[n] for n in names]
        anchors = [a.tensor if hasattr(a, "tensor") else a for a in anchors]
        gt_boxes = [g.tensor if hasattr(g, "tensor") else g for g in gt_boxes]
        batch = maps_s[0].shape[0]
        if len(gt_boxes) != batch:
            raise ValueError(f"{self.NAME}: got GT boxes for {len(gt_boxes)} images but features for {batch}.")
        self.check_levels(names, maps_s, maps_t)
        masks = fgfi_masks(anchors, gt_boxes, [t.shape[-2:] for t in maps_t], self.psi, self.max_over)
        num_pos = sum(int(m.sum()) for m in masks)
        if num_pos == 0:
            return graph_zero(maps_s, maps_t, self)
        dtype = module_dtype(self)
        total = 0.0
        for s, t, mask, adapter in zip(maps_s, maps_t, masks, self.adapters):
            diff = adapter(cast(s, dtype)) - cast(t, dtype)
            total = total + (diff.pow(2).sum(dim=1) * mask.to(dtype)).sum()
        return total / (2.0 * num_pos)
