"""The distillation contract every wrapper follows (each detection family, the classification distiller).

A wrapper says, as data, which loss inputs its training step provides (``PROVIDED_INPUTS``, names of
:data:`kd_det.losses.vocabulary.INPUTS`) and which teacher part produces which of them (``TEACHER_PARTS``).
From the configured losses it then knows, once, at build:

* :meth:`DistillContract.build_distill` — the :class:`kd_det.losses.DistillLoss` of ``KD.LOSSES`` (specs already
  validated by the config loader) and checked once against ``PROVIDED_INPUTS``; a loss needing an input the task
  does not provide, or a bad parameter, is one :class:`~kd_det.errors.ConfigError` sentence;
* :meth:`DistillContract.attach_distill` — ``self.distill``, the inputs the losses read (``self.needs``) and the
  teacher parts that run (``self.teacher_parts``; none when no loss reads a teacher output); a DistillLoss built
  elsewhere (by a Python user) is checked here.

The term schedule (``start_iter``, warm-up) is DistillLoss's: a wrapper hands it the training progress and never
scales a term itself. Never imports Detectron2.
"""
from typing import Dict, Mapping, Sequence, Tuple

from ..errors import ConfigError

__all__ = ["DistillContract"]


class DistillContract:
    """Mixin: provided inputs and teacher parts as data; the DistillLoss built and checked once.

    Class attributes a wrapper sets:
        TASK: "detection" / "classification" (named in sentences).
        PROVIDED_INPUTS: the loss inputs its training step provides.
        TEACHER_PARTS: teacher part -> the provided inputs whose computation runs it, in running order
            (e.g. ``{"backbone": ("feats_t", "logits_t"), "box_predictor": ("logits_t",)}``).
    """

    TASK: str = ""
    PROVIDED_INPUTS: Tuple[str, ...] = ()
    TEACHER_PARTS: Mapping[str, Tuple[str, ...]] = {}

    @classmethod
    def build_distill(cls, specs: Sequence[Mapping], shapes: Mapping, **schedule):
        """``KD.LOSSES`` specs + the inputs' sizes -> DistillLoss.

        Args:
            specs: the validated spec list (``cfg.KD.LOSSES`` after loading).
            shapes: input name -> size (see :class:`kd_det.losses.DistillLoss`).
            **schedule: DistillLoss's term-schedule arguments (``warmup``).

        Raises:
            ConfigError: a bad spec (:func:`kd_det.config.schema.loss_specs`, e.g. ``start_iter`` in classification),
                a loss needing an input this task does not provide (that sentence first: it is the real fault), or
                a loss refusing its parameters ("KD.LOSSES: ...").
        """
        from ..config.schema import loss_specs
        from ..losses import DistillLoss, check_inputs

        specs = loss_specs(specs, cls.TASK)  # idempotent on loaded specs; the config's sentences for direct callers
        try:
            distill = DistillLoss(specs, shapes, **schedule)
        except ValueError as e:
            if isinstance(e, ConfigError):
                raise
            check_inputs(specs, cls.PROVIDED_INPUTS, cls.TASK)  # e.g. CRD's num_samples in detection: say why
            raise ConfigError(f"KD.LOSSES: {e}") from None
        check_inputs(distill, cls.PROVIDED_INPUTS, cls.TASK)
        distill.checked_inputs = frozenset(cls.PROVIDED_INPUTS)  # attach_distill need not check it again
        return distill

    def attach_distill(self, distill) -> None:
        """Hold ``distill`` and derive, once, what the step computes.

        Sets ``self.distill``, ``self.needs`` (the provided inputs the losses read, after ``inputs`` remaps) and
        ``self.teacher_parts`` (the parts of :attr:`TEACHER_PARTS` some needed input comes from, in order).

        Raises:
            ConfigError: a loss needs an input this task does not provide.
        """
        from ..losses import check_inputs

        self.distill = distill
        if distill is None:
            self.needs, self.teacher_parts = set(), ()
            return
        if getattr(distill, "checked_inputs", None) != frozenset(self.PROVIDED_INPUTS):  # built elsewhere
            check_inputs(distill, self.PROVIDED_INPUTS, self.TASK)
        self.needs = distill.used_inputs() & set(self.PROVIDED_INPUTS)
        self.teacher_parts = tuple(p for p, inputs in self.TEACHER_PARTS.items() if self.needs & set(inputs))

    def learnable_summary(self) -> Dict[str, int]:
        """Term tag -> number of learnable parameters of its loss (for the build log line)."""
        if self.distill is None:
            return {}
        return {k: sum(p.numel() for p in m.parameters()) for k, m in self.distill.losses.items()}
