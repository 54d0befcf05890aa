"""A frozen teacher held by a trainable module, outside its module tree.

Both engines use it: ``DistillRCNN`` (detection) and ``Distiller`` (classification) subclass
:class:`FrozenTeacherMixin` and write ``self.teacher = model``. Never imports Detectron2.
"""
from contextlib import ExitStack, contextmanager
from typing import Any, NamedTuple, Optional

import torch
from torch import nn

from ..errors import ConfigError
from .amp import AmpMode

__all__ = ["FrozenTeacherMixin", "freeze_", "TeacherMode", "resolve_teacher_mode", "TEACHER_PRECISIONS"]

#: ``KD.TEACHER.PRECISION`` values: "" runs the teacher in whatever autocast the student's step is in
#: (float32 without ``SOLVER.AMP``); the others fix the teacher's own precision, whatever the student's.
TEACHER_PRECISIONS = ("", "float32", "bfloat16", "float16")


class TeacherMode(NamedTuple):
    """How a frozen teacher runs: its autocast precision and memory format (the student keeps its own).

    ``precision`` "" = inherit the caller's autocast (the default); "float32" = autocast off for the
    teacher even when the student's step is under AMP; "bfloat16" / "float16" = the teacher's forward under
    autocast in that dtype, its floating outputs cast back to float32 (:meth:`outputs`), so losses and the
    student see float32 teacher tensors. ``channels_last``: the teacher's weights (hence its convolutions'
    outputs) in NHWC, the layout oneDNN and cuDNN prefer.
    """

    device_type: str = "cpu"  # "cuda" or "cpu"
    precision: str = ""
    channels_last: bool = False

    @property
    def dtype(self) -> Optional[torch.dtype]:
        """The teacher's autocast dtype; None when it follows the caller ("") or runs float32."""
        return getattr(torch, self.precision) if self.precision in ("bfloat16", "float16") else None

    @contextmanager
    def context(self):
        """``torch.no_grad()`` plus the teacher's autocast (none for "": the caller's stays in force)."""
        with ExitStack() as stack:
            stack.enter_context(torch.no_grad())
            if self.precision:  # "float32": a disabled autocast, so the caller's does not reach the teacher
                stack.enter_context(AmpMode(self.device_type, self.dtype).autocast())
            yield

    def prepare(self, module: nn.Module) -> nn.Module:
        """``module`` in this mode's memory format (in place; returns it)."""
        return module.to(memory_format=torch.channels_last) if self.channels_last else module

    def outputs(self, value: Any) -> Any:
        """``value`` (a tensor, or dicts / lists / tuples of them) with low-precision floating tensors as float32."""
        if self.dtype is None:
            return value
        if isinstance(value, torch.Tensor):
            return value.float() if value.dtype in (torch.float16, torch.bfloat16) else value
        if isinstance(value, dict):
            return type(value)((k, self.outputs(v)) for k, v in value.items())
        if isinstance(value, (list, tuple)):
            return type(value)(self.outputs(v) for v in value)
        return value


def resolve_teacher_mode(device, precision: str = "", channels_last: bool = False,
                         key: str = "KD.TEACHER.PRECISION") -> TeacherMode:
    """The :class:`TeacherMode` for ``device`` ("cuda:0", "cpu", a ``torch.device``).

    Raises:
        ConfigError: ``precision`` is not one of :data:`TEACHER_PRECISIONS`, or float16 on a CPU (the sentence
            names ``key``).
    """
    device_type = "cuda" if str(device).startswith("cuda") else "cpu"
    precision = str(precision or "")
    if precision not in TEACHER_PRECISIONS:
        raise ConfigError(f"{key} is {precision!r}; use \"float32\", \"bfloat16\", \"float16\" or \"\" (the "
                          "student's autocast).")
    if precision == "float16" and device_type == "cpu":
        raise ConfigError(f"{key} is 'float16' but the teacher runs on the CPU, where float16 is slow; use "
                          "'bfloat16' there.")
    return TeacherMode(device_type, precision, bool(channels_last))


def freeze_(module: nn.Module) -> nn.Module:
    """requires_grad off and eval mode for every parameter of ``module``; returns it."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


class FrozenTeacherMixin(nn.Module):
    """Base class (first in the MRO) of a module that owns a frozen teacher: ``self.teacher = model``.

    Assigning ``self.teacher`` (a module, or None) keeps it out of the module tree: it is not in
    ``state_dict()`` (it comes from its own weights file), ``parameters()`` (no optimizer or
    DistributedDataParallel sees it) or ``modules()``. It is frozen: requires_grad is turned off
    when it is assigned, it is put back in eval mode whenever the owner's ``train()`` / ``eval()``
    runs, and ``.to()`` / ``.cuda()`` / ``.half()`` / ``.float()`` on the owner move / cast it too.
    The owner runs it under ``torch.no_grad()``, and only the parts whose outputs a loss consumes.
    """

    _TEACHER_KEY = "_frozen_teacher"  # the instance __dict__ entry that holds it (not _modules)

    @property
    def teacher(self) -> Optional[nn.Module]:
        """The frozen teacher, or None."""
        return self.__dict__.get(self._TEACHER_KEY)

    def __setattr__(self, name, value):
        if name == "teacher":
            self.__dict__[self._TEACHER_KEY] = None if value is None else freeze_(value)
        else:
            super().__setattr__(name, value)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        if self.teacher is not None:
            self.teacher._apply(fn, *args, **kwargs)
        return self
