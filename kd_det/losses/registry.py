"""The one list of loss names: :data:`LOSS_REGISTRY`, filled by the :func:`register_loss` decorator.

Every shipped loss registers itself in its own module (``@register_loss`` over the class, the name given once,
in the class's ``NAME``); a user's package does the same and is imported by ``KD.CUSTOM_IMPORTS``
(docs/extending.md). Tests, reports and benchmarks iterate this registry. No Detectron2.
"""
from __future__ import annotations

from .base import LossModule

__all__ = ["LOSS_REGISTRY", "register_loss", "build_loss", "loss_labels"]

#: name -> nn.Module class, in registration order (kd_det.losses imports the shipped losses in a fixed order).
LOSS_REGISTRY: dict[str, type[LossModule]] = {}


def register_loss(name_or_cls=None):
    """Class decorator adding a :class:`LossModule` subclass to :data:`LOSS_REGISTRY`.

    ``@register_loss`` registers the class under its ``NAME``; ``@register_loss("name")`` under ``name`` (which
    the class's ``NAME`` takes when it has none of its own). The class needs ``INPUTS`` (vocabulary names,
    :mod:`.vocabulary`), a ``forward`` taking them and an ``example_inputs()`` classmethod (the registry-wide tests
    in ``tests/losses`` run it on that).

    Raises:
        ValueError: the name is taken by another class, the class is no LossModule, or it has no example_inputs().
    """
    def deco(cls, name=None):
        if not (isinstance(cls, type) and issubclass(cls, LossModule)):
            raise ValueError(f"register_loss({name!r}) expects a LossModule subclass, got {cls!r}.")
        key = str(name or cls.NAME).lower()
        if name and cls.NAME == LossModule.NAME:
            cls.NAME = key
        if key in LOSS_REGISTRY and LOSS_REGISTRY[key] is not cls:
            raise ValueError(f"Loss name {key!r} is already registered to {LOSS_REGISTRY[key].__name__}.")
        if cls.example_inputs.__func__ is LossModule.example_inputs.__func__:
            raise ValueError(f"register_loss({key!r}): {cls.__name__} has no example_inputs(); every registered "
                             "loss needs one (a classmethod returning a LossExample) for the registry-wide tests.")
        LOSS_REGISTRY[key] = cls
        return cls

    if isinstance(name_or_cls, type):
        return deco(name_or_cls)
    return lambda cls: deco(cls, name_or_cls)


def build_loss(name: str, **params) -> LossModule:
    """Instantiate a registered loss: ``build_loss("dkd", alpha=1.0, beta=0.25, temperature=1.0)``.

    Raises:
        ValueError: unknown name (one sentence listing the known ones).
    """
    key = str(name).lower()
    if key not in LOSS_REGISTRY:
        raise ValueError(f"Unknown loss {name!r}; known losses: {', '.join(sorted(LOSS_REGISTRY))}.")
    return LOSS_REGISTRY[key](**params)


def loss_labels() -> dict[str, str]:
    """Registry name -> the papers' spelling (each class's ``label()``), e.g. "fitnet" -> "FitNet"; for method
    labels and tables."""
    return {name: cls.label() for name, cls in LOSS_REGISTRY.items()}
