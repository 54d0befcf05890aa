"""DistillRetinaNet and DistillFCOS: a trainable dense (one-stage) student distilled from a frozen teacher.

Each wrapper *is* its student (a Detectron2 ``RetinaNet`` / ``FCOS`` subclass, both on ``DenseDetector``), so
``MODEL.WEIGHTS`` initialises the student as for a plain detector, inference is the student's own, and
``tools/export_student.py`` drops only ``distill.*`` keys. Teacher, feature levels, DistillLoss and the contract come
from :class:`~kd_det.detection.modeling.wrapper.DistillDetector`, as for DistillRCNN.

Per training step (no work done twice):

1. student backbone once, student head once on ``head_in_features`` -> per level class logits (N, A*K, H, W) and
   box regression (FCOS: + centerness);
2. the student's own losses exactly as the stock class computes them, from the same tensors: anchors
   (``anchor_generator``), the student's anchor matching (``label_anchors``: class, K = background, -1 = ignored),
   ``losses`` (RetinaNet: ``loss_cls``, ``loss_box_reg``; FCOS: ``loss_fcos_cls``, ``loss_fcos_loc``,
   ``loss_fcos_ctr``);
3. teacher (no grad, eval mode, not a submodule, ``KD.TEACHER.PRECISION`` / ``CHANNELS_LAST``): its backbone once
   when a loss reads ``feats_t`` or ``anchor_logits_t``, and its head's class branch (``cls_subnet`` +
   ``cls_score`` per level; the box branch never runs) only when a loss reads ``anchor_logits_t``;
4. the tensors the configured losses need (:attr:`DenseDistillDetector.PROVIDED_INPUTS`):

   ===================== =======================================================================================
   ``anchor_logits_s/t``  (A, K) sigmoid class logits of every anchor (FCOS: location) of the batch, in
                          Detectron2's order (per image the levels concatenated, each H*W*A_l location-major as
                          ``permute_to_N_HWA_K``; then image after image); no background column
   ``anchor_labels``      (A,) int64 class from the student's matching, K = background, -1 = ignored
   ``feats_s/t``          ordered dict level -> (B, C, H, W) over ``KD.FEATURE_LEVELS`` (p3..p7 here)
   ``anchors``            dict level -> (H*W*A, 4) student anchors (FCOS: one stride-sized box per location)
   ``gt_boxes``           list of (G_i, 4) ground-truth boxes per image
   ===================== =======================================================================================

A teacher of another family (a Faster R-CNN for a RetinaNet student, an FCOS for a RetinaNet student, ...) serves
feature losses only (:meth:`DistillDetector.check_teacher_family`); ``anchor_logits_t`` needs a teacher of the
student's family with the same classes, anchors per location and head levels (:meth:`check_teacher`).
"""
import torch
from detectron2.config import configurable
from detectron2.modeling.meta_arch.dense_detector import DenseDetector, permute_to_N_HWA_K
from detectron2.modeling.meta_arch.retinanet import RetinaNet
from detectron2.utils.events import get_event_storage

from ...config.detection import NUM_CLASSES_KEYS
from ...errors import ConfigError
from .fcos import FCOS
from .wrapper import DistillDetector, register_distill_arch, teacher_readers

__all__ = ["DenseDistillDetector", "DistillRetinaNet", "DistillFCOS"]


def anchors_per_location(model):
    """List, per head level, of the anchors a dense detector scores at each location (FCOS: 1)."""
    generator = getattr(model, "anchor_generator", None)
    return list(generator.num_cell_anchors) if generator is not None else [1] * len(model.head_in_features)


def _class_logits(head, features):
    """The class branch of a RetinaNet / FCOS head alone: list of (N, A*K, H, W), one per level of ``features``
    (the head's ``forward`` minus its box / centerness branch, level by level as it runs them)."""
    return [head.cls_score(head.cls_subnet(f)) for f in features]


def _flat_logits(per_level, k):
    """Per level (N, A*K, H, W) -> (N * sum(H*W*A), K): image-major, levels concatenated per image."""
    return torch.cat([permute_to_N_HWA_K(x, k) for x in per_level], dim=1).flatten(0, 1)


class DenseDistillDetector(DistillDetector):
    """What DistillRetinaNet and DistillFCOS share: the build, the training step and the teacher's forward.

    A subclass sets ``STUDENT_CLASS`` (the Detectron2 meta-architecture class it also subclasses, whose
    ``from_config`` builds the student) and ``PRED_DIMS`` (the width of each head output after the class logits).

    Args (``@configurable``: ``DistillRetinaNet(cfg)`` or explicit arguments):
        teacher: the frozen teacher (RetinaNet / FCOS / GeneralizedRCNN), held outside the module tree.
        distill: the :class:`kd_det.losses.DistillLoss`; it may only need :attr:`PROVIDED_INPUTS`.
        feature_levels: FPN levels handed over as ``feats_s`` / ``feats_t``, finest first.
        teacher_identity, teacher_mode: as for :class:`~kd_det.detection.modeling.distill_rcnn.DistillRCNN`.
        **kwargs: the student's own constructor arguments (backbone, head, head_in_features, num_classes, ...).
    """

    STUDENT_CLASS = DenseDetector
    PRED_DIMS = (4,)
    TEACHER_ARCHS = ("RetinaNet", "FCOS", "GeneralizedRCNN")
    PROVIDED_INPUTS = ("anchor_logits_s", "anchor_logits_t", "anchor_labels", "feats_s", "feats_t", "anchors",
                       "gt_boxes")
    #: Teacher part -> the inputs whose computation runs it; ``head`` is its class branch only.
    TEACHER_PARTS = {"backbone": ("feats_t", "anchor_logits_t"), "head": ("anchor_logits_t",)}

    @configurable
    def __init__(self, *, teacher, distill, feature_levels, teacher_identity=None, teacher_mode=None, **kwargs):
        super().__init__(**kwargs)
        self.setup_distillation(teacher, distill, feature_levels, teacher_identity, teacher_mode)

    @classmethod
    def from_config(cls, cfg):
        for key, part in (("MASK_ON", "mask"), ("KEYPOINT_ON", "keypoint")):
            if cfg.MODEL[key]:
                raise ConfigError(f"MODEL.{key} True: {cls.__name__} trains {cls.STUDENT_ARCH} students, which have no "
                                  f"{part} head (set MODEL.{key} False, or distill a Mask R-CNN with DistillRCNN).")
        if cfg.KD.TEACHER.CLASS_MAP:
            raise ConfigError(f"KD.TEACHER.CLASS_MAP is {list(cfg.KD.TEACHER.CLASS_MAP)} but {cls.__name__} maps no "
                              "teacher classes; dense logit losses need a teacher of the student's classes (remove the "
                              "map).")
        student = cls.STUDENT_CLASS.from_config(cfg)  # first: the student draws the global RNG as a plain one does
        built = cls.build_distillation(cfg, student["backbone"], {"anchor_logits_s": student["num_classes"]})
        return {**student, **built}

    @classmethod
    def teacher_shapes(cls, cfg, teacher):
        return {"anchor_logits_t": teacher.num_classes} if isinstance(teacher, DenseDetector) else {}

    def check_teacher(self, teacher):
        """Refuse, when a loss reads ``anchor_logits_t``, a teacher whose anchors do not pair one to one with the
        student's: other classes, anchors per location or head levels (one sentence naming the key)."""
        if "head" not in self.teacher_parts:
            return
        readers = ", ".join(self.distill.readers("anchor_logits_t"))
        where = f"The teacher ({(self.teacher_identity or {}).get('config_file', 'given')})"
        key = NUM_CLASSES_KEYS[self.STUDENT_ARCH]
        differ = [(key, teacher.num_classes, self.num_classes)] if teacher.num_classes != self.num_classes else []
        if list(teacher.head_in_features) != list(self.head_in_features):
            differ.append((f"MODEL.{key.split('.')[1]}.IN_FEATURES", list(teacher.head_in_features),
                           list(self.head_in_features)))
        if anchors_per_location(teacher) != anchors_per_location(self):
            differ.append(("anchors per location (MODEL.ANCHOR_GENERATOR)", anchors_per_location(teacher),
                           anchors_per_location(self)))
        if differ:
            what, t, s = differ[0]
            raise ConfigError(f"{where} has {what} {t} but the student has {s}, and KD.LOSSES {readers} read the "
                              "teacher's anchor logits (anchor_logits_t), which pair teacher and student anchors one "
                              "to one; use a teacher with the student's classes, anchors and levels, or distill "
                              "features only.")

    def forward(self, batched_inputs):
        """Training: the student's detection losses + one ``loss_<tag>`` per distillation term.
        Inference: the student's predictions (``DenseDetector.forward``)."""
        if not self.training:
            return DenseDetector.forward(self, batched_inputs)
        images = self.preprocess_image(batched_inputs)
        gt = [x["instances"].to(self.device) for x in batched_inputs]
        features = self.backbone(images.tensor)
        head_in = [features[f] for f in self.head_in_features]
        logits, *others = self._transpose_dense_predictions(self.head(head_in), [self.num_classes, *self.PRED_DIMS])
        anchors = self.anchor_generator(head_in)
        gt_labels, gt_boxes = self.label_anchors(anchors, gt)
        # RetinaNet.losses(anchors, logits, labels, deltas, boxes) / FCOS.losses(..., boxes, centerness)
        losses = self.losses(anchors, logits, gt_labels, others[0], gt_boxes, *others[1:])

        tensors = {"feats_s": self.levels(features), **self._teacher_forward(batched_inputs)}
        if "anchor_logits_s" in self.needs:
            tensors["anchor_logits_s"] = torch.cat(logits, dim=1).flatten(0, 1)
        if "anchor_labels" in self.needs:
            tensors["anchor_labels"] = torch.stack(gt_labels).flatten()
        if "gt_boxes" in self.needs:
            tensors["gt_boxes"] = [g.gt_boxes.tensor for g in gt]
        if "anchors" in self.needs:
            tensors["anchors"] = {lv: a.tensor for lv, a in zip(self.head_in_features, anchors)}
        losses.update(self.distill(step=get_event_storage().iter, **tensors))  # step: the terms' start_iter
        return losses

    def _teacher_forward(self, batched_inputs):
        """The teacher tensors the losses consume, running only ``self.teacher_parts``: the backbone once
        (-> ``feats_t``, dict level -> (B, C, H, W)) and its head's class branch on its own head levels
        (-> ``anchor_logits_t``, (A, K)); no grad, in ``self.teacher_mode``'s precision (outputs float32)."""
        if not self.teacher_parts:
            return {}
        with self.teacher_mode.context():
            return self.teacher_mode.outputs(self._teacher_parts_forward(batched_inputs))

    def _teacher_parts_forward(self, batched_inputs):
        t, out = self.teacher, {}
        feats = t.backbone(t.preprocess_image(self.teacher_inputs(batched_inputs)).tensor)
        if "feats_t" in self.needs:
            out["feats_t"] = self.levels(feats)
        if "head" in self.teacher_parts:
            out["anchor_logits_t"] = _flat_logits(_class_logits(t.head, [feats[f] for f in t.head_in_features]),
                                                  t.num_classes)
        return out


@register_distill_arch
class DistillRetinaNet(DenseDistillDetector, RetinaNet):
    """Student RetinaNet + frozen teacher + the learnable distillation parts (``self.distill``); see the module
    docstring for the step and :class:`DenseDistillDetector` for the arguments."""

    STUDENT_ARCH = "RetinaNet"
    STUDENT_CLASS = RetinaNet
    PRED_DIMS = (4,)


@register_distill_arch
class DistillFCOS(DenseDistillDetector, FCOS):
    """Student FCOS (:class:`kd_det.detection.modeling.fcos.FCOS`, ``MODEL.FCOS.*``) + frozen teacher + the learnable
    distillation parts; anchors are FCOS's points (one per location), ``anchor_labels`` never -1."""

    STUDENT_ARCH = "FCOS"
    STUDENT_CLASS = FCOS
    PRED_DIMS = (4, 1)
