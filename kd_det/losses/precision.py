"""The loss library's precision policy: every loss computes in float32, even under ``torch.autocast``.

:func:`fp32_math` turns autocast off for the duration of the call and :func:`cast` lifts half-precision inputs
to float32. float64 inputs stay float64 (that is what lets ``torch.autograd.gradcheck`` run on the losses); a
module loss casts its inputs to the dtype of its own parameters (float32 normally, float64 after ``.double()``).
Nothing here imports Detectron2.
"""
from __future__ import annotations

import functools
from contextlib import ExitStack
from typing import Callable, Mapping

import torch
from torch import Tensor, nn

__all__ = ['fp32_math', 'compute_dtype', 'module_dtype', 'cast', 'graph_zero']

_AUTOCAST_DEVICES = ("cpu", "cuda", "xpu", "mps")


def fp32_math(fn: Callable) -> Callable:
    """Decorator: run ``fn`` with autocast disabled on every device type where it is enabled."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with ExitStack() as stack:
            for device in _AUTOCAST_DEVICES:
                try:
                    enabled = torch.is_autocast_enabled(device)
                except (RuntimeError, TypeError):  # device type unknown to this build
                    continue
                if enabled:
                    stack.enter_context(torch.autocast(device_type=device, enabled=False))
            return fn(*args, **kwargs)

    return wrapper


def compute_dtype(*tensors: Tensor | None) -> torch.dtype:
    """float64 if any floating input is float64, else float32."""
    for t in tensors:
        if isinstance(t, Tensor) and t.dtype == torch.float64:
            return torch.float64
    return torch.float32


def module_dtype(module: nn.Module) -> torch.dtype:
    """The floating dtype a module loss computes in: that of its first floating parameter/buffer."""
    for t in list(module.parameters()) + list(module.buffers()):
        if t.is_floating_point():
            return torch.float64 if t.dtype == torch.float64 else torch.float32
    return torch.float32


def cast(x: Tensor, dtype: torch.dtype) -> Tensor:
    """Cast a floating tensor to ``dtype`` (no copy when it already has it)."""
    return x.to(dtype) if x.dtype != dtype else x


def graph_zero(*things) -> Tensor:
    """A 0-dim zero connected to the autograd graph of every tensor / module given.

    Used for empty batches (no foreground RoIs, no GT boxes): the value is exactly 0, the
    gradients are exactly 0, and every learnable part still takes part in backward (which
    keeps DistributedDataParallel from reporting unused parameters).
    """
    tensors = []
    for thing in things:
        if isinstance(thing, nn.Module):
            tensors += [p for p in thing.parameters() if p.requires_grad]
        elif isinstance(thing, Tensor):
            tensors.append(thing)
        elif isinstance(thing, Mapping):
            tensors += [t for t in thing.values() if isinstance(t, Tensor)]
        elif isinstance(thing, (list, tuple)):
            tensors += [t for t in thing if isinstance(t, Tensor)]
    tensors = [t for t in tensors if t.is_floating_point()]
    dtype = compute_dtype(*tensors)
    total = torch.zeros((), dtype=dtype, device=tensors[0].device if tensors else None)
    for t in tensors:
        total = total + cast(t.sum(), dtype) * 0.0
    return total
