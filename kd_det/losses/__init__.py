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
from ._common import LossExample, LossModule, NonFiniteInputError, set_finite_check
from .ckd import CKDLoss, ckd_loss
from .combine import DistillLoss, check_inputs
from .crd import CRDLoss
from .dcd import DCDLoss, dcd_loss
from .dkd import DKDLoss, dkd_loss, dkd_terms
from .fgfi import FGFILoss, fgfi_mask, fgfi_masks
from .fitnet import FitNetLoss
from .kd import KDLoss, kd_loss
from .msd import MSDLoss, msd_stage_loss, multi_scale_pool
from .reviewkd import ReviewKDLoss, hcl_loss
from .vocabulary import INPUTS, TEACHER_INPUTS

__all__ = [
    "LOSS_REGISTRY", "build_loss", "register_loss", "loss_labels", "DistillLoss", "check_inputs", "LossModule",
    "LossExample", "NonFiniteInputError", "set_finite_check", "vocabulary", "INPUTS", "TEACHER_INPUTS",
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


def loss_labels() -> dict[str, str]:
    """Registry name -> the papers' spelling (each class's ``label()``), e.g. "fitnet" -> "FitNet", plus
    "hcl" -> "ReviewKD" (ReviewKD's loss alone, as older configs name it); for method labels and tables."""
    return {**{name: cls.label() for name, cls in LOSS_REGISTRY.items()}, "hcl": LOSS_REGISTRY["reviewkd"].label()}


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
    """Class decorator adding a :class:`LossModule` subclass to :data:`LOSS_REGISTRY` (for extensions).

    The class needs ``NAME`` (= ``name``), ``INPUTS`` (vocabulary names, :mod:`.vocabulary`), a
    ``forward`` taking them, and an ``example_inputs()`` classmethod (the registry-wide tests
    in ``tests/losses`` run it on that).
    """

    def deco(cls):
        key = name.lower()
        if key in LOSS_REGISTRY and LOSS_REGISTRY[key] is not cls:
            raise ValueError(f"Loss name {name!r} is already registered to {LOSS_REGISTRY[key].__name__}.")
        if not (isinstance(cls, type) and issubclass(cls, LossModule)):
            raise ValueError(f"register_loss({name!r}) expects a LossModule subclass, got {cls!r}.")
        if cls.example_inputs.__func__ is LossModule.example_inputs.__func__:
            raise ValueError(f"register_loss({name!r}): {cls.__name__} has no example_inputs(); every registered "
                             "loss needs one (a classmethod returning a LossExample) for the registry-wide tests.")
        LOSS_REGISTRY[key] = cls
        return cls

    return deco
