"""kd_det.losses: every distillation loss of the toolkit, pure PyTorch (never imports Detectron2).

The detection meta-architecture and the classification distiller only decide which tensors
to hand over; the losses live here once. Build one by name with :func:`build_loss`, or
several with weights with :class:`DistillLoss`; the stateless ones also exist as functions
(:func:`kd_loss`, :func:`dkd_loss`, :func:`ckd_loss`, :func:`dcd_loss`, :func:`hcl_loss`).
All return a 0-dim tensor computed in float32 (float64 for float64 inputs), also under
autocast. See ``docs/losses.md`` for equations, defaults and the choices made.

Input vocabulary: each loss class lists what its ``forward`` takes in ``INPUTS`` (the optional
ones also in ``OPTIONAL_INPUTS``), all names of :data:`kd_det.losses.vocabulary.INPUTS`, the one
table of input names with their shapes (also the ``shapes`` keys for ``shape_params`` /
``DistillLoss``). Each registered class also gives ``example_inputs()``: small seeded inputs
the registry-wide tests build and run it on.
"""
from __future__ import annotations

from . import vocabulary
from .base import LossExample, LossModule
from .checks import NonFiniteInputError, set_finite_check
from .registry import LOSS_REGISTRY, build_loss, loss_labels, register_loss

# The shipped losses register themselves (``@register_loss``) in this order, the registry's order.
from .kd import KDLoss, kd_loss  # noqa: E402
from .dkd import DKDLoss, dkd_loss, dkd_terms  # noqa: E402
from .ckd import CKDLoss, ckd_loss  # noqa: E402
from .dcd import DCDLoss, dcd_loss  # noqa: E402
from .fitnet import FitNetLoss  # noqa: E402
from .fgfi import FGFILoss, fgfi_mask, fgfi_masks  # noqa: E402
from .reviewkd import ReviewKDLoss, hcl_loss  # noqa: E402
from .msd import MSDLoss, msd_stage_loss, multi_scale_pool  # noqa: E402
from .crd import CRDLoss  # noqa: E402
from .pkd import PKDLoss  # noqa: E402
from .cwd import CWDLoss  # noqa: E402
from .mgd import MGDLoss  # noqa: E402
from .fgd import FGDLoss, fgd_masks  # noqa: E402
from .sigmoid_kd import SigmoidKDLoss, sigmoid_kd_loss  # noqa: E402
from .crosskd import CrossKDLoss, align_scale, crosskd_loss  # noqa: E402
from .combine import DistillLoss, check_inputs  # noqa: E402
from .vocabulary import INPUTS, TEACHER_INPUTS  # noqa: E402

__all__ = [
    "LOSS_REGISTRY", "build_loss", "register_loss", "loss_labels", "DistillLoss", "check_inputs", "LossModule",
    "LossExample", "NonFiniteInputError", "set_finite_check", "vocabulary", "INPUTS", "TEACHER_INPUTS",
    "kd_loss", "dkd_loss", "dkd_terms", "ckd_loss", "dcd_loss", "hcl_loss", "msd_stage_loss", "multi_scale_pool",
    "fgfi_mask", "fgfi_masks",
    "KDLoss", "DKDLoss", "CKDLoss", "DCDLoss", "FitNetLoss", "FGFILoss", "ReviewKDLoss", "MSDLoss", "CRDLoss",
    "PKDLoss", "CWDLoss", "MGDLoss", "FGDLoss", "fgd_masks", "SigmoidKDLoss", "sigmoid_kd_loss",
    "CrossKDLoss", "crosskd_loss", "align_scale",
]
