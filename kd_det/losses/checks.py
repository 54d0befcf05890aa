"""Input and parameter checks of the loss library: one sentence naming the loss and the value at fault.

The non-finite check (:func:`check_finite`, :class:`NonFiniteInputError`) is one host sync per tensor; it can be
turned off with :func:`set_finite_check`. Nothing here imports Detectron2.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ['set_finite_check', 'NonFiniteInputError', 'check_finite', 'check_chunk', 'check_positive', 'check_nonnegative', 'check_logit_pair', 'check_same_rows']

_FINITE_CHECK = True


def set_finite_check(enabled: bool) -> bool:
    """Turn the non-finite input check on or off for every loss; returns the previous setting.

    The check (``torch.isfinite(x).all()``) costs one pass over each input and, on a GPU,
    one host-device synchronisation per input; the range checks of integer inputs (DKD
    ``target``, CRD ``index``) go with it. It is on by default.
    """
    global _FINITE_CHECK
    previous, _FINITE_CHECK = _FINITE_CHECK, bool(enabled)
    return previous


class NonFiniteInputError(ValueError):
    """An input of loss ``loss`` (argument ``key``) holds NaN or Inf; training loops catch it by type."""

    def __init__(self, loss: str, key: str):
        super().__init__(f"{loss}: input '{key}' contains non-finite values (NaN or Inf).")
        self.loss, self.key = loss, key


def check_finite(loss: str, key: str, x: Tensor) -> None:
    """Raise :class:`NonFiniteInputError` if ``x`` holds NaN or Inf (skipped when the check is turned off)."""
    if _FINITE_CHECK and x.numel() and x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise NonFiniteInputError(loss, key)


def check_chunk(loss: str, chunk_size) -> None:
    """Raise ``ValueError`` unless ``chunk_size`` is an int >= 0 (0 = never block)."""
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 0:
        raise ValueError(f"{loss}: parameter 'chunk_size' must be an int >= 0 (0 = never block), got {chunk_size!r}.")


def check_positive(loss: str, key: str, value) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite number > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{loss}: parameter '{key}' must be a finite number > 0, got {value!r}.")


def check_nonnegative(loss: str, key: str, value) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{loss}: parameter '{key}' must be a finite number >= 0, got {value!r}.")


def _is_float_tensor(x) -> bool:
    return isinstance(x, Tensor) and x.is_floating_point()


def check_logit_pair(loss: str, a: Tensor, b: Tensor, names=("logits_s", "logits_t")) -> None:
    """Two (N, C) floating tensors of identical shape, both finite."""
    for name, x in zip(names, (a, b)):
        if not _is_float_tensor(x) or x.dim() != 2:
            what = f"a {x.dim()}-dim {x.dtype} tensor" if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"{loss}: input '{name}' must be a 2-dim floating tensor (N, C), got {what}.")
    if a.shape != b.shape:
        raise ValueError(f"{loss}: '{names[0]}' has shape {tuple(a.shape)} but '{names[1]}' has shape "
                         f"{tuple(b.shape)}; they must match.")
    check_finite(loss, names[0], a)
    check_finite(loss, names[1], b)


def check_same_rows(loss: str, a: Tensor, b: Tensor, names=("emb_s", "emb_t")) -> None:
    """Two (N, D_a) / (N, D_b) floating tensors with the same N, both finite."""
    for name, x in zip(names, (a, b)):
        if not _is_float_tensor(x) or x.dim() != 2:
            what = f"a {x.dim()}-dim {x.dtype} tensor" if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"{loss}: input '{name}' must be a 2-dim floating tensor (N, D), got {what}.")
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"{loss}: '{names[0]}' has {a.shape[0]} rows but '{names[1]}' has {b.shape[0]}; "
                         "each student row must pair with one teacher row.")
    check_finite(loss, names[0], a)
    check_finite(loss, names[1], b)
