"""DistillRCNN: a trainable Faster R-CNN FPN student distilled from a frozen Faster R-CNN FPN teacher.

The model *is* the student (a :class:`GeneralizedRCNN` subclass), so ``MODEL.WEIGHTS``
initialises the student exactly as for a plain detector, inference returns the student's
predictions, and ``tools/export_student.py`` only has to drop ``distill.*`` keys.

Per training step (no work done twice):

1. student backbone + RPN, proposals sampled once (``label_and_sample_proposals``);
2. student box head once on the sampled RoIs -> class logits (R, K+1), background last;
3. teacher (under ``torch.no_grad``, in eval mode, not a submodule) backbone once, and its box
   head on the *same* sampled RoIs over its own FPN features -> teacher logits (R, K+1); only the
   parts whose outputs a configured loss consumes run (:data:`TEACHER_PARTS`, decided at build);
4. the tensors the configured losses need are handed to :class:`kd_det.losses.DistillLoss`
   (:attr:`DistillRCNN.PROVIDED_INPUTS`; a loss needing anything else is refused at build):

   ============== =====================================================================
   ``logits_s/t``  (R, K+1) box-head class logits of student / teacher
   ``target``      (R,) assigned class of each RoI, background = K
   ``emb_s/t``     (R, D_s) / (R, D_t) box-head features (input of the predictor)
   ``feats_s/t``   ordered dict level -> (B, C, H, W) over ``KD.FEATURE_LEVELS``
   ``anchors``     dict level -> (H*W*A, 4) student anchors (only if a loss asks)
   ``gt_boxes``    list of (G_i, 4) ground-truth boxes per image (only if a loss asks)
   ``object_id``   (R,) GT box each RoI is matched to, unique over the batch, -1 = background
                   (only if a loss asks: DCD / CKD use it to treat RoIs of one object)
   ============== =====================================================================

No method names appear here: adding a loss is a registry entry plus a config.
"""
import logging
from collections import OrderedDict

import torch
from detectron2.config import configurable
from detectron2.layers import get_norm
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN
from detectron2.modeling.roi_heads import StandardROIHeads
from detectron2.utils.events import get_event_storage

from ...core import FrozenTeacherMixin, TeacherMode, isolated_rng, resolve_teacher_mode
from ...errors import ConfigError
from ...config.schema import legacy_specs
from ...config.schema import loss_specs as kd_loss_specs
from ...losses import DistillLoss, check_inputs
from .teacher import build_teacher, select_teacher_logits, teacher_logit_columns

__all__ = ["DistillRCNN", "DISTILL_PREFIX", "TEACHER_PARTS", "loss_specs", "student_config"]

#: State-dict prefix of the learnable distillation parts (``DistillRCNN.distill``); the rest is the student.
DISTILL_PREFIX = "distill."

logger = logging.getLogger(__name__)


def loss_specs(cfg):
    """``cfg.KD.LOSSES`` -> validated DistillLoss specs (:func:`kd_det.config.schema.loss_specs`; a config still in
    the old detection form, e.g. edited after loading, is converted first)."""
    legacy = legacy_specs(cfg.KD)
    return kd_loss_specs(cfg.KD.LOSSES if legacy is None else legacy, "detection")


def student_config(cfg):
    """``cfg`` for its student alone: a DistillRCNN config becomes a copy with MODEL.META_ARCHITECTURE
    "GeneralizedRCNN" (no teacher built or loaded; KD.* stay, unused), with ``cfg``'s frozen state;
    any other config is returned as it is. Scoring or exporting a student needs nothing more."""
    if cfg.MODEL.META_ARCHITECTURE != "DistillRCNN":
        return cfg
    out = cfg.clone()
    out.defrost()
    out.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
    if cfg.is_frozen():
        out.freeze()
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


def _object_ids(proposals, gt, num_classes):
    """Sampled proposals + GT instances per image -> (R,) int64: the index of the GT box each
    foreground RoI is matched to, offset so that ids are unique over the batch; -1 for background.

    Detectron2's sampler copies the matched GT box into ``proposal.gt_boxes``; matching it back
    against the image's GT boxes recovers the index (boxes with identical coordinates share one id).
    """
    ids, offset = [], 0
    for p, g in zip(proposals, gt):
        obj = torch.full_like(p.gt_classes, -1)
        fg = p.gt_classes < num_classes
        if fg.any():
            same = (p.gt_boxes.tensor[fg, None, :] == g.gt_boxes.tensor[None, :, :]).all(dim=2)   # (F, G)
            obj[fg] = same.to(torch.uint8).argmax(dim=1) + offset
        ids.append(obj)
        offset += len(g)
    return torch.cat(ids)


def _check_box_head(roi_heads, name):
    """``roi_heads`` if it is a StandardROIHeads-style head with a box head, else one sentence naming ``name``."""
    if not isinstance(roi_heads, StandardROIHeads) or getattr(roi_heads, "box_head", None) is None:
        raise ConfigError(f"MODEL.ROI_HEADS.NAME {name!r}: DistillRCNN needs a StandardROIHeads-style head with a "
                          "box head (Faster R-CNN).")
    return roi_heads


#: Teacher part -> the loss inputs whose computation runs it (``emb_t`` is the box head's output, the input of
#: the box predictor; ``logits_t`` the predictor's class scores on it). A part no configured loss needs never runs.
TEACHER_PARTS = {"backbone": ("feats_t", "emb_t", "logits_t"), "box_head": ("emb_t", "logits_t"),
                 "box_predictor": ("logits_t",)}


@META_ARCH_REGISTRY.register()
class DistillRCNN(FrozenTeacherMixin, GeneralizedRCNN):
    """Student GeneralizedRCNN + frozen teacher + the learnable distillation parts (``self.distill``).

    Built from a config (``DistillRCNN(cfg)``, what ``build_model`` does) or from explicit arguments
    (Detectron2's ``@configurable``): ``DistillRCNN(teacher=..., distill=..., feature_levels=[...],
    backbone=..., proposal_generator=..., roi_heads=..., pixel_mean=..., pixel_std=...)``.

    Args:
        teacher: the teacher, a GeneralizedRCNN whose class logits / box-head features / FPN levels
            the losses read; held frozen outside the module tree (:class:`kd_det.core.FrozenTeacherMixin`).
        distill: the :class:`kd_det.losses.DistillLoss` of the configured losses; it may only need
            inputs of :attr:`PROVIDED_INPUTS`.
        feature_levels: FPN levels handed over as ``feats_s`` / ``feats_t``, finest first.
        teacher_identity: what the teacher was loaded from ({"config_file", "weights", "sha256",
            "matched_fraction"}); checkpoints record it and refuse to resume with another teacher.
        teacher_mode: the teacher's own precision and memory format (:class:`kd_det.core.TeacherMode`;
            ``KD.TEACHER.PRECISION`` / ``CHANNELS_LAST``); default: the student's precision, NCHW.
        **kwargs: the student's :class:`GeneralizedRCNN` arguments (backbone, proposal_generator,
            roi_heads, pixel_mean, pixel_std, input_format, vis_period).
    """

    #: The loss inputs a detection training step provides (names of kd_det.losses.vocabulary.INPUTS).
    PROVIDED_INPUTS = ("logits_s", "logits_t", "target", "emb_s", "emb_t", "feats_s", "feats_t", "anchors",
                       "gt_boxes", "object_id")

    @configurable
    def __init__(self, *, teacher, distill, feature_levels, teacher_identity=None, teacher_mode=None,
                 teacher_columns=None, **kwargs):
        super().__init__(**kwargs)
        self.teacher_columns = teacher_columns  # KD.TEACHER.CLASS_MAP's teacher logit columns (None: all)
        _check_box_head(self.roi_heads, type(self.roi_heads).__name__)
        self.teacher_mode = teacher_mode or TeacherMode(self.device.type)
        # frozen, not a submodule: not in state_dict, DDP or the optimizer
        self.teacher = self.teacher_mode.prepare(teacher.to(self.device))
        self.teacher_identity = teacher_identity
        self._flip_for_teacher = teacher.input_format != self.input_format
        self.feature_levels = list(feature_levels)
        self.distill = distill
        check_inputs(distill, self.PROVIDED_INPUTS, "detection")
        self._needs = distill.used_inputs() & set(self.PROVIDED_INPUTS)
        #: the teacher parts run per step (a subset of TEACHER_PARTS, in order; empty = the teacher never runs)
        self.teacher_parts = tuple(p for p, inputs in TEACHER_PARTS.items() if self._needs & set(inputs))
        parts = {k: sum(p.numel() for p in m.parameters()) for k, m in distill.losses.items()}
        logger.info(f"Distillation losses: {distill.extra_repr() or 'none'}; inputs {sorted(self._needs)}; teacher "
                    f"runs {', '.join(self.teacher_parts) or 'nothing'}; learnable parameters: "
                    + (", ".join(f"{k} {n:,}" for k, n in parts.items()) or "none"))

    @classmethod
    def from_config(cls, cfg):
        if cfg.MODEL.MASK_ON:
            raise ConfigError("MODEL.MASK_ON True: DistillRCNN distils Faster R-CNN box heads only; mask heads are "
                              "not supported yet (set MODEL.MASK_ON False).")
        student = GeneralizedRCNN.from_config(cfg)  # first: the student draws the global RNG as a plain detector does
        rh = _check_box_head(student["roi_heads"], cfg.MODEL.ROI_HEADS.NAME)
        teacher, _, identity = build_teacher(cfg)
        levels = list(cfg.KD.FEATURE_LEVELS)
        shapes = {"logits_s": rh.num_classes + 1,
                  "logits_t": (len(cfg.KD.TEACHER.CLASS_MAP) or teacher.roi_heads.num_classes) + 1,
                  "emb_s": rh.box_head.output_shape.channels,
                  "emb_t": teacher.roi_heads.box_head.output_shape.channels,
                  "num_classes": rh.num_classes + 1}
        for side, backbone, config_file in (("s", student["backbone"], "the student config"),
                                            ("t", teacher.backbone, cfg.KD.TEACHER.CONFIG_FILE)):
            out = backbone.output_shape()
            missing = [lv for lv in levels if lv not in out]
            if missing:
                raise ConfigError(f"KD.FEATURE_LEVELS names {missing}, which the backbone of {config_file} lacks "
                                  f"(it has {', '.join(out)}).")
            shapes[f"feats_{side}"] = [out[lv].channels for lv in levels]
        specs = loss_specs(cfg)
        check_inputs(specs, cls.PROVIDED_INPUTS, "detection")  # before a parameter error of a loss that cannot run
        try:
            with isolated_rng():  # drawn after the student: must not shift the loader's / sampler's seeds
                distill = DistillLoss(specs, shapes)
        except ValueError as e:
            if isinstance(e, ConfigError):
                raise
            raise ConfigError(f"KD.LOSSES: {e}") from None
        readers = [k for k, loss in distill.losses.items()
                   if any(distill.input_maps[k][a] == "logits_t" for a in loss.used_inputs())]
        columns = teacher_logit_columns(cfg.KD.TEACHER.CLASS_MAP, rh.num_classes, teacher.roi_heads.num_classes,
                                        readers, cfg.KD.TEACHER.CONFIG_FILE)
        if cfg.KD.NORM:
            _convert_batchnorm(distill, cfg.KD.NORM)
        mode = resolve_teacher_mode(cfg.MODEL.DEVICE, cfg.KD.TEACHER.PRECISION, cfg.KD.TEACHER.CHANNELS_LAST)
        return {**student, "teacher": teacher, "distill": distill, "feature_levels": levels,
                "teacher_identity": identity, "teacher_mode": mode, "teacher_columns": columns}

    def forward(self, batched_inputs):
        """Training: the student's detection losses + one ``loss_<name>`` per distillation loss.
        Inference: the student's predictions (``GeneralizedRCNN.inference``)."""
        if not self.training:
            return self.inference(batched_inputs)
        images = self.preprocess_image(batched_inputs)
        gt = [x["instances"].to(self.device) for x in batched_inputs]
        features = self.backbone(images.tensor)
        proposals, losses = self.proposal_generator(images, features, gt)
        rh = self.roi_heads
        proposals = rh.label_and_sample_proposals(proposals, gt)
        boxes = [p.proposal_boxes for p in proposals]
        emb_s = rh.box_head(rh.box_pooler([features[f] for f in rh.box_in_features], boxes))
        predictions = rh.box_predictor(emb_s)
        losses.update(rh.box_predictor.losses(predictions, proposals))

        tensors = {"logits_s": predictions[0], "emb_s": emb_s, "target": torch.cat([p.gt_classes for p in proposals]),
                   "feats_s": OrderedDict((lv, features[lv]) for lv in self.feature_levels),
                   **self._teacher_forward(batched_inputs, boxes)}
        if "gt_boxes" in self._needs:
            tensors["gt_boxes"] = [g.gt_boxes.tensor for g in gt]
        if "object_id" in self._needs:
            tensors["object_id"] = _object_ids(proposals, gt, rh.num_classes)
        if "anchors" in self._needs:
            pg = self.proposal_generator
            anchors = pg.anchor_generator([features[f] for f in pg.in_features])
            tensors["anchors"] = {lv: a.tensor for lv, a in zip(pg.in_features, anchors)}
        losses.update(self.distill(iteration=get_event_storage().iter, **tensors))  # iteration: KD.LOSS_START_ITERS
        return losses

    def _teacher_forward(self, batched_inputs, boxes):
        """The teacher tensors the losses consume, running only ``self.teacher_parts``: the backbone once
        (-> ``feats_t``, dict level -> (B, C, H, W)), the box pooler + head on the student's sampled RoIs
        (-> ``emb_t``, (R, D_t)), the box predictor on them (-> ``logits_t``, (R, K+1)); no RPN, no grad,
        in ``self.teacher_mode``'s precision (low-precision outputs come back as float32)."""
        if not self.teacher_parts:
            return {}
        with self.teacher_mode.context():
            return self.teacher_mode.outputs(self._teacher_parts_forward(batched_inputs, boxes))

    def _teacher_parts_forward(self, batched_inputs, boxes):
        t, out = self.teacher, {}
        if self._flip_for_teacher:  # RGB <-> BGR when the two configs read images differently
            batched_inputs = [dict(x, image=x["image"].flip(0)) for x in batched_inputs]
        feats = t.backbone(t.preprocess_image(batched_inputs).tensor)
        if "feats_t" in self._needs:
            out["feats_t"] = OrderedDict((lv, feats[lv]) for lv in self.feature_levels)
        if "box_head" in self.teacher_parts:
            trh = t.roi_heads
            out["emb_t"] = trh.box_head(trh.box_pooler([feats[f] for f in trh.box_in_features], boxes))
            if "box_predictor" in self.teacher_parts:
                out["logits_t"] = select_teacher_logits(trh.box_predictor(out["emb_t"])[0], self.teacher_columns)
        return out
