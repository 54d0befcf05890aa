"""A frozen teacher held by a trainable module, outside its module tree.

Both engines use it: ``DistillRCNN`` (detection) and ``Distiller`` (classification) subclass
:class:`FrozenTeacherMixin` and write ``self.teacher = model``. Never imports Detectron2.
"""
from typing import Optional

from torch import nn

__all__ = ["FrozenTeacherMixin", "freeze_"]


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
