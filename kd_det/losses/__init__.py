"""kd_det.losses: every distillation loss of the toolkit, pure PyTorch (never imports Detectron2).

The detection meta-architecture and the classification distiller only decide which tensors
to hand over; the losses live here once. Build one by name with :func:`build_loss`, or
several with weights with :class:`DistillLoss`; the stateless ones also exist as functions
(:func:`kd_loss`, :func:`dkd_loss`, :func:`ckd_loss`, :func:`dcd_loss`, :func:`hcl_loss`).
All return a 0-dim tensor computed in float32 (float64 for float64 inputs), also under
autocast. See ``docs/losses.md`` for equations, defaults and the choices made.

Input vocabulary (each loss class lists what its ``forward`` takes in ``INPUTS``; the
optional ones also in ``OPTIONAL_INPUTS``):

==================== ============================================================================
``logits_s``         (N, C) student class logits (detection: R x (K+1), background LAST column)
``logits_t``         (N, C) teacher class logits on the same samples / RoIs
``target``           (N,) int64 class index (detection: assigned class, background = K)
``emb_s``            (N, D_s) student embeddings (classification: penultimate features)
``emb_t``            (N, D_t) teacher embeddings
``feats_s``          list of (B, C_l, H_l, W_l) maps, or ordered dict level -> map (FPN p2..p6),
                     finest / shallowest first
``feats_t``          teacher maps, same structure as ``feats_s``
``index``            (N,) int64 dataset indices (CRD memory bank)
``contrast_index``   (N, K+1) int64 CRD negative indices, column 0 = ``index`` (optional)
``teacher_classifier`` callable (M, D_t) -> (M, num_classes) logits (MSD cell labels)
``anchors``          per FPN level (list, or dict keyed like the features) of (H_l*W_l*A, 4)
                     xyxy anchors in Detectron2's order (FGFI)
``gt_boxes``         per image, list of (G_i, 4) xyxy GT boxes (FGFI)
``object_id``        (N,) int64 object each sample shows (detection: matched GT box, unique over
                     the batch, -1 = background); optional for DCD / CKD
==================== ============================================================================

``shapes`` (for ``shape_params`` / ``DistillLoss``): input name -> int (vector dim, e.g.
``shapes["emb_s"] = 64``, ``shapes["logits_t"] = 81``) or list of ints (channels per level,
``shapes["feats_s"] = [64, 128, 256, 512]``), plus ``"num_samples"`` (dataset size, CRD) and
``"num_classes"``.
"""
from __future__ import annotations

from ._common import LossModule, NonFiniteInputError, set_finite_check
from .ckd import CKDLoss, ckd_loss
from .combine import DistillLoss
from .crd import CRDLoss
from .dcd import DCDLoss, dcd_loss
from .dkd import DKDLoss, dkd_loss, dkd_terms
from .fgfi import FGFILoss, fgfi_mask, fgfi_masks
from .fitnet import FitNetLoss
from .kd import KDLoss, kd_loss
from .msd import MSDLoss, msd_stage_loss, multi_scale_pool
from .reviewkd import ReviewKDLoss, hcl_loss

__all__ = [
    "LOSS_REGISTRY", "build_loss", "register_loss", "DistillLoss", "LossModule", "NonFiniteInputError", "set_finite_check",
    "kd_loss", "dkd_loss", "dkd_terms", "ckd_loss", "dcd_loss", "hcl_loss", "msd_stage_loss", "multi_scale_pool",
    "fgfi_mask", "fgfi_masks",
    "KDLoss", "DKDLoss", "CKDLoss", "DCDLoss", "FitNetLoss", "FGFILoss", "ReviewKDLoss", "MSDLoss", "CRDLoss",
]

#: The one place loss names are listed: name -> nn.Module class.
LOSS_REGISTRY: dict[str, type[LossModule]] = {
    "kd": KDLoss,
    "dkd": DKDLoss,
    "ckd": CKDLoss,
    "dcd": DCDLoss,
    "fitnet": FitNetLoss,
    "fgfi": FGFILoss,
    "reviewkd": ReviewKDLoss,
    "msd": MSDLoss,
    "crd": CRDLoss,
}


def build_loss(name: str, **params) -> LossModule:
    """Instantiate a registered loss: ``build_loss("dkd", alpha=1.0, beta=0.25, temperature=1.0)``.

    Raises:
        ValueError: unknown name (one sentence listing the known ones).
    """
    key = str(name).lower()
    if key not in LOSS_REGISTRY:
        raise ValueError(f"Unknown loss {name!r}; known losses: {', '.join(sorted(LOSS_REGISTRY))}.")
    return LOSS_REGISTRY[key](**params)


def register_loss(name: str):
    """Class decorator adding a :class:`LossModule` subclass to :data:`LOSS_REGISTRY` (for extensions)."""

    def deco(cls):
        key = name.lower()
        if key in LOSS_REGISTRY and LOSS_REGISTRY[key] is not cls:
            raise ValueError(f"Loss name {name!r} is already registered to {LOSS_REGISTRY[key].__name__}.")
        if not (isinstance(cls, type) and issubclass(cls, LossModule)):
            raise ValueError(f"register_loss({name!r}) expects a LossModule subclass, got {cls!r}.")
        LOSS_REGISTRY[key] = cls
        return cls

    return deco
