"""What every detection distillation wrapper shares, and the registry of wrappers.

A wrapper (:class:`~kd_det.detection.modeling.distill_rcnn.DistillRCNN`, :class:`~kd_det.detection.modeling.dense.
DistillRetinaNet`, :class:`~kd_det.detection.modeling.dense.DistillFCOS`) *is* its student: a subclass of
the student's Detectron2 meta-architecture, registered with :func:`register_distill_arch`, which says as data

* ``STUDENT_ARCH`` — the Detectron2 meta-architecture of the student alone (:func:`student_config` swaps to it,
  so scoring or exporting a student builds no teacher);
* ``TEACHER_ARCHS`` — the teacher meta-architectures it can read (:meth:`DistillDetector.check_teacher_config`); a
  teacher of another family than ``STUDENT_ARCH`` serves feature losses only (:meth:`DistillDetector.check_teacher_family`);
* ``PROVIDED_INPUTS`` / ``TEACHER_PARTS`` — the distillation contract (:class:`kd_det.core.DistillContract`),

and checks the heads it reads on both sides. :func:`check_distill_arch` refuses a config whose
``KD.LOSSES`` the meta-architecture cannot honour: never a run trained without the losses it names.
"""
import logging
from collections import OrderedDict

import torch
from detectron2.layers import get_norm
from detectron2.modeling import META_ARCH_REGISTRY

from ...core import DistillContract, FrozenTeacherMixin, TeacherMode, isolated_rng, resolve_teacher_mode
from ...errors import ConfigError
from .teacher import build_teacher

__all__ = ["DISTILL_ARCHS", "register_distill_arch", "student_config", "check_distill_arch", "DistillDetector",
           "DISTILL_PREFIX", "teacher_readers"]

logger = logging.getLogger(__name__)

#: State-dict prefix of the learnable distillation parts (``self.distill``); the rest is the student.
DISTILL_PREFIX = "distill."

#: Distillation meta-architecture name -> its class (filled by :func:`register_distill_arch`).
DISTILL_ARCHS = {}


def register_distill_arch(cls):
    """Class decorator: register ``cls`` as a Detectron2 meta-architecture and as a distillation wrapper."""
    META_ARCH_REGISTRY.register(cls)
    DISTILL_ARCHS[cls.__name__] = cls
    return cls


def student_config(cfg):
    """``cfg`` for its student alone: a distillation config becomes a copy whose MODEL.META_ARCHITECTURE is the
    wrapper's ``STUDENT_ARCH`` (no teacher built or loaded; KD.* stay, unused), with ``cfg``'s frozen state; any
    other config is returned as it is. Scoring or exporting a student needs nothing more."""
    wrapper = DISTILL_ARCHS.get(cfg.MODEL.META_ARCHITECTURE)
    if wrapper is None:
        return cfg
    out = cfg.clone()
    out.defrost()
    out.MODEL.META_ARCHITECTURE = wrapper.STUDENT_ARCH
    if cfg.is_frozen():
        out.freeze()
    return out


def check_distill_arch(cfg):
    """Refuse ``KD.LOSSES`` on a meta-architecture that is no distillation wrapper (it would train undistilled).

    Raises:
        ConfigError: naming the losses, the meta-architecture and the supported wrappers.
    """
    if cfg.KD.LOSSES and cfg.MODEL.META_ARCHITECTURE not in DISTILL_ARCHS:
        tags = ", ".join(str(s.get("tag") or s.get("name")) for s in cfg.KD.LOSSES)
        supported = ", ".join(f"{name} (student {cls.STUDENT_ARCH})" for name, cls in DISTILL_ARCHS.items())
        raise ConfigError(f"KD.LOSSES configures {tags} but MODEL.META_ARCHITECTURE {cfg.MODEL.META_ARCHITECTURE!r} "
                          f"is not a distillation meta-architecture, so nothing would be distilled; set it to one of "
                          f"{supported}, or remove KD.LOSSES for a plain run.")


def teacher_readers(specs, exclude=()):
    """Tag -> the teacher inputs (vocabulary names after ``inputs`` remaps, ``exclude`` left out) each loss spec of
    ``specs`` (``KD.LOSSES``, loaded) always reads; specs reading none are left out. Decided from the loss classes,
    before any loss is built."""
    from ...losses import LOSS_REGISTRY, TEACHER_INPUTS
    from ...losses.combine import spec_tag

    out = {}
    for spec in specs:
        loss = LOSS_REGISTRY.get(str(spec.get("name", "")).lower())
        if loss is None:
            continue
        remap = dict(spec.get("inputs") or {})
        got = [remap.get(a, a) for a in loss.INPUTS if a not in loss.OPTIONAL_INPUTS]
        got = [g for g in got if g in TEACHER_INPUTS and g not in exclude]
        if got:
            out[spec_tag(spec)] = got
    return out


def _convert_batchnorm(module, norm):
    """Replace every ``nn.BatchNorm2d`` under ``module`` by Detectron2's ``get_norm(norm, C)`` (KD.NORM)."""
    for name, child in module.named_children():
        if type(child) is torch.nn.BatchNorm2d:
            try:
                setattr(module, name, get_norm(norm, child.num_features))
            except KeyError:
                raise ConfigError(f"KD.NORM {norm!r} is not a Detectron2 norm; use \"\", \"BN\", \"naiveSyncBN\" "
                                  "or \"SyncBN\".") from None
        else:
            _convert_batchnorm(child, norm)


class DistillDetector(DistillContract, FrozenTeacherMixin):
    """Mixin of every detection wrapper: the teacher, the feature levels and the DistillLoss, built and held alike.

    A wrapper subclasses this mixin and its student's meta-architecture, sets the class attributes below, builds
    its student's parts and the input sizes (``shapes``) in ``from_config``, then calls
    :meth:`build_distillation`, and calls :meth:`setup_distillation` in ``__init__``.
    """

    TASK = "detection"
    #: The Detectron2 meta-architecture of the student alone.
    STUDENT_ARCH = ""
    #: Teacher meta-architectures the wrapper reads.
    TEACHER_ARCHS = ()

    @classmethod
    def check_teacher_config(cls, tcfg, path):
        """Refuse a teacher config whose meta-architecture the wrapper does not read."""
        if tcfg.MODEL.META_ARCHITECTURE not in cls.TEACHER_ARCHS:
            raise ConfigError(f"KD.TEACHER.CONFIG_FILE {path} has MODEL.META_ARCHITECTURE "
                              f"{tcfg.MODEL.META_ARCHITECTURE!r}; {cls.__name__} reads a teacher of "
                              f"{' / '.join(cls.TEACHER_ARCHS)}.")

    @classmethod
    def build_distillation(cls, cfg, student_backbone, shapes):
        """The teacher and the DistillLoss of ``cfg`` for a student whose input sizes are ``shapes``.

        Args:
            cfg: the distillation config (KD.*).
            student_backbone: the student's backbone (its ``output_shape()`` gives ``feats_s``).
            shapes: the wrapper's own input sizes (e.g. logits / embeddings), completed here with
                ``feats_s`` / ``feats_t`` and passed to :meth:`teacher_shapes` for the teacher's.

        Returns:
            the ``__init__`` keyword arguments ``teacher``, ``distill``, ``feature_levels``,
            ``teacher_identity`` and ``teacher_mode``.
        """
        teacher, tcfg, identity = build_teacher(cfg, check=cls.check_teacher_config)
        cls.check_teacher_family(cfg, tcfg)
        levels = list(cfg.KD.FEATURE_LEVELS)
        shapes = {**shapes, **cls.teacher_shapes(cfg, teacher)}
        for side, backbone, config_file in (("s", student_backbone, "the student config"),
                                            ("t", teacher.backbone, cfg.KD.TEACHER.CONFIG_FILE)):
            out = backbone.output_shape()
            missing = [lv for lv in levels if lv not in out]
            if missing:
                raise ConfigError(f"KD.FEATURE_LEVELS names {missing}, which the backbone of {config_file} lacks "
                                  f"(it has {', '.join(out)}).")
            shapes[f"feats_{side}"] = [out[lv].channels for lv in levels]
        with isolated_rng():  # drawn after the student: must not shift the loader's / sampler's seeds
            distill = cls.build_distill(cfg.KD.LOSSES, shapes)
        if cfg.KD.NORM:
            _convert_batchnorm(distill, cfg.KD.NORM)
        mode = resolve_teacher_mode(cfg.MODEL.DEVICE, cfg.KD.TEACHER.PRECISION, cfg.KD.TEACHER.CHANNELS_LAST)
        return {"teacher": teacher, "distill": distill, "feature_levels": levels, "teacher_identity": identity,
                "teacher_mode": mode}

    @classmethod
    def check_teacher_family(cls, cfg, tcfg):
        """Refuse a teacher of another family (``TEACHER_ARCHS`` beyond ``STUDENT_ARCH``) when a configured loss reads
        a teacher input other than its FPN levels (``feats_t``): only features exist on both sides of two families."""
        arch = tcfg.MODEL.META_ARCHITECTURE
        if arch == cls.STUDENT_ARCH:
            return
        readers = teacher_readers(cfg.KD.LOSSES, exclude=("feats_t",))
        if readers:
            tags = ", ".join(readers)
            inputs = ", ".join(sorted({i for got in readers.values() for i in got}))
            raise ConfigError(f"KD.LOSSES {tags} read the teacher's {inputs}, which {cls.__name__} takes only from a "
                              f"{cls.STUDENT_ARCH} teacher, but KD.TEACHER.CONFIG_FILE {cfg.KD.TEACHER.CONFIG_FILE} is "
                              f"a {arch}; across detector families only feature losses (feats_t) can be distilled.")

    def check_teacher(self, teacher):
        """Refuse a teacher whose parts the configured losses read but the wrapper cannot run; a no-op here."""

    @classmethod
    def teacher_shapes(cls, cfg, teacher):
        """The teacher's input sizes besides its FPN levels (e.g. ``logits_t``) under ``cfg``; none here."""
        return {}

    def setup_distillation(self, teacher, distill, feature_levels, teacher_identity=None, teacher_mode=None):
        """Hold the frozen teacher (outside the module tree) and the DistillLoss; derive what each step computes."""
        self.teacher_mode = teacher_mode or TeacherMode(self.device.type)
        # frozen, not a submodule: not in state_dict, DDP or the optimizer
        self.teacher = self.teacher_mode.prepare(teacher.to(self.device))
        self.teacher_identity = teacher_identity
        self._flip_for_teacher = teacher.input_format != self.input_format
        self.feature_levels = list(feature_levels)
        self.attach_distill(distill)
        self.check_teacher(teacher)
        parts = ", ".join(f"{k} {n:,}" for k, n in self.learnable_summary().items()) or "none"
        logger.info(f"Distillation losses: {distill.extra_repr() or 'none'}; inputs {sorted(self.needs)}; teacher runs "
                    f"{', '.join(self.teacher_parts) or 'nothing'}; learnable parameters: {parts}")

    def teacher_inputs(self, batched_inputs):
        """``batched_inputs`` as the teacher reads them (RGB <-> BGR when the two configs read images differently)."""
        if self._flip_for_teacher:
            return [dict(x, image=x["image"].flip(0)) for x in batched_inputs]
        return batched_inputs

    def levels(self, features):
        """dict level -> (B, C, H, W) of ``KD.FEATURE_LEVELS``, finest first."""
        return OrderedDict((lv, features[lv]) for lv in self.feature_levels)
