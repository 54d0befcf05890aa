"""The reliability core both engines share (detection: kd_det.detection.engine; classification:
kd_det.classification). It never imports Detectron2.

* :func:`atomic_write`, :func:`atomic_save`, :func:`atomic_write_text`: files that are never half-written;
* :func:`get_rng_state`, :func:`set_rng_state`, :func:`isolated_rng`, :func:`seed_all`: random states
  of Python, NumPy, torch (CPU) and CUDA;
* :func:`resolve_amp` -> :class:`AmpMode`: autocast dtype and GradScaler from the device and the precision;
* :func:`non_finite_term`: the NaN/Inf check of the loss terms, agreed by every process;
* :func:`write_run_info`, :func:`read_run_info`: ``run_info.json``, how each launch of a run ran;
* :class:`ResumableSampler`: a sampler that starts where a checkpoint left its stream;
* :class:`FrozenTeacherMixin`, :func:`freeze_`: a frozen teacher held outside the owner's module tree;
  :func:`resolve_teacher_mode` -> :class:`TeacherMode`: the teacher's own precision and memory format;
* :class:`DistillContract`: the distillation contract of every wrapper (provided inputs and teacher parts as
  data, the DistillLoss built and checked once);
* :func:`import_custom_modules`: the user modules a config names in ``KD.CUSTOM_IMPORTS``, imported
  before the config is merged.
"""
from .amp import AmpMode, resolve_amp
from .contract import DistillContract
from .atomic import atomic_save, atomic_write, atomic_write_text
from .finite import non_finite_term
from .frozen import TEACHER_PRECISIONS, FrozenTeacherMixin, TeacherMode, freeze_, resolve_teacher_mode
from .imports import import_custom_modules
from .rng import get_rng_state, isolated_rng, seed_all, set_rng_state
from .run_info import read_run_info, write_run_info
from .sampler import ResumableSampler

__all__ = ["AmpMode", "resolve_amp", "atomic_save", "atomic_write", "atomic_write_text", "non_finite_term",
           "get_rng_state", "isolated_rng", "seed_all", "set_rng_state", "ResumableSampler", "FrozenTeacherMixin",
           "freeze_", "TeacherMode", "resolve_teacher_mode", "TEACHER_PRECISIONS", "import_custom_modules",
           "DistillContract", "write_run_info", "read_run_info"]
