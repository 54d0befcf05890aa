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
   when a loss reads any teacher tensor, its head's class branch (``cls_subnet`` + ``cls_score`` per level) only when
   a loss reads ``anchor_logits_t`` or ``cross_logits_s``, its box branch (``bbox_subnet`` + ``bbox_pred``) only
   when a loss reads ``anchor_boxes_t`` or ``cross_boxes_s``;
4. CrossKD's cross-head pass, only when a loss reads ``cross_logits_s`` / ``cross_boxes_s``: the student's head runs
   branch by branch (the same operations as its ``forward``), keeping each branch's features at
   ``KD.CROSS_HEAD_LAYER``; those are scale-aligned to the teacher's features of the same layer
   (:func:`kd_det.losses.align_scale`) and run through the teacher's remaining layers with gradients (the
   student's precision, not the teacher's);
5. the tensors the configured losses need (:attr:`DenseDistillDetector.PROVIDED_INPUTS`):

   ===================== =======================================================================================
   ``anchor_logits_s/t``  (A, K) sigmoid class logits of every anchor (FCOS: location) of the batch, in
                          Detectron2's order (per image the levels concatenated, each H*W*A_l location-major as
                          ``permute_to_N_HWA_K``; then image after image); no background column
   ``anchor_labels``      (A,) int64 class from the student's matching, K = background, -1 = ignored
   ``anchor_boxes_t``     (A, 4) xyxy boxes of the teacher's box branch, decoded at the teacher's anchors
   ``cross_logits_s``     (A, K) cross-head class logits (CrossKD; gradients reach the student)
   ``cross_boxes_s``      (A, 4) cross-head xyxy boxes, decoded as ``anchor_boxes_t``
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
from ...losses import align_scale
from .fcos import FCOS
from .wrapper import DistillDetector, register_distill_arch, teacher_readers

__all__ = ["DenseDistillDetector", "DistillRetinaNet", "DistillFCOS"]


def anchors_per_location(model):
    """List, per head level, of the anchors a dense detector scores at each location (FCOS: 1)."""
    generator = getattr(model, "anchor_generator", None)
    return list(generator.num_cell_anchors) if generator is not None else [1] * len(model.head_in_features)


def _relus(subnet):
    """Positions of the ReLUs of a head branch (``nn.Sequential`` of conv, [norm], ReLU blocks)."""
    return [i for i, m in enumerate(subnet) if isinstance(m, torch.nn.ReLU)]


def _branch(subnet, x, layer):
    """A head branch on one level: (its output, its features after ``layer`` convs before that block's ReLU; ``x``
    itself for layer 0), by the same modules in the same order as ``subnet(x)``."""
    stop = _relus(subnet)[layer - 1] if layer else None
    hold = x if layer == 0 else None
    for i, module in enumerate(subnet):
        if i == stop:
            hold = x
        x = module(x)
    return x, hold


def _branch_from(subnet, x, layer):
    """The rest of a head branch from block ``layer``'s ReLU on (the whole branch for layer 0)."""
    return subnet(x) if layer == 0 else subnet[_relus(subnet)[layer - 1]:](x)


def branch_widths(subnet, in_channels):
    """Channels of a head branch's features after 0, 1, ... convs (index = ``KD.CROSS_HEAD_LAYER``)."""
    return [in_channels] + [m.out_channels for m in subnet if isinstance(m, torch.nn.Conv2d)]


def _flat_logits(per_level, k):
    """Per level (N, A*K, H, W) -> (N * sum(H*W*A), K): image-major, levels concatenated per image."""
    return torch.cat([permute_to_N_HWA_K(x, k) for x in per_level], dim=1).flatten(0, 1)


def _decode(model, per_level, anchors):
    """Per level box regression (N, A*4, H, W) -> (N * sum(H*W*A), 4) xyxy boxes, decoded with ``model``'s box
    transform at ``anchors`` (list of Boxes per level, the same for every image); rows as :func:`_flat_logits`."""
    deltas = _flat_logits(per_level, 4)
    boxes = torch.cat([a.tensor for a in anchors]).to(deltas.dtype).repeat(per_level[0].shape[0], 1)
    return model.box2box_transform.apply_deltas(deltas, boxes)


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
                       "gt_boxes", "anchor_boxes_t", "cross_logits_s", "cross_boxes_s")
    #: Teacher part -> the inputs whose computation runs it (``cross_head``: the teacher's head layers from
    #: ``KD.CROSS_HEAD_LAYER`` on, run on the student's features).
    TEACHER_PARTS = {"backbone": ("feats_t", "anchor_logits_t", "anchor_boxes_t", "cross_logits_s", "cross_boxes_s"),
                     "cls_head": ("anchor_logits_t", "cross_logits_s"), "box_head": ("anchor_boxes_t", "cross_boxes_s"),
                     "cross_head": ("cross_logits_s", "cross_boxes_s")}
    #: Head outputs computed from the box branch's features, after ``bbox_pred`` (FCOS: ``ctrness``).
    BOX_PREDICTORS = ("bbox_pred",)

    @configurable
    def __init__(self, *, teacher, distill, feature_levels, teacher_identity=None, teacher_mode=None,
                 cross_head_layer=3, **kwargs):
        super().__init__(**kwargs)
        self.cross_head_layer = cross_head_layer
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
        layer = cfg.KD.CROSS_HEAD_LAYER
        if isinstance(layer, bool) or not isinstance(layer, int) or layer < 0:
            raise ConfigError(f"KD.CROSS_HEAD_LAYER is {layer!r}; it must be an int >= 0 (the head convs the student's "
                              "features pass before entering the teacher's head, CrossKD).")
        return {**student, **built, "cross_head_layer": layer}

    @classmethod
    def teacher_shapes(cls, cfg, teacher):
        return {"anchor_logits_t": teacher.num_classes} if isinstance(teacher, DenseDetector) else {}

    def check_teacher(self, teacher):
        """Refuse, when a loss reads the teacher's head, a teacher whose anchors do not pair one to one with the
        student's: other classes, anchors per location or head levels; for CrossKD also heads of other widths or
        fewer convs than ``KD.CROSS_HEAD_LAYER`` (one sentence naming the key)."""
        if not {"cls_head", "box_head"} & set(self.teacher_parts):
            return
        if "cross_head" in self.teacher_parts:
            self.check_cross_head(teacher)
        keys = [k for k in ("anchor_logits_t", "anchor_boxes_t", "cross_logits_s", "cross_boxes_s")
                if self.distill.readers(k)]
        readers = ", ".join(dict.fromkeys(tag for key in keys for tag in self.distill.readers(key)))
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
                              f"teacher's head outputs ({', '.join(keys)}), which pair teacher and "
                              "student anchors one to one; use a teacher with the student's classes, anchors and "
                              "levels, or distill features only.")

    def check_cross_head(self, teacher):
        """Refuse a CrossKD pair whose head branches differ in width at ``KD.CROSS_HEAD_LAYER`` or have fewer convs."""
        layer, readers = self.cross_head_layer, ", ".join(self.distill.readers("cross_logits_s")
                                                          or self.distill.readers("cross_boxes_s"))
        channels_s = self.backbone.output_shape()[self.head_in_features[0]].channels
        channels_t = teacher.backbone.output_shape()[teacher.head_in_features[0]].channels
        for branch in ("cls_subnet", "bbox_subnet"):
            w_s = branch_widths(getattr(self.head, branch), channels_s)
            w_t = branch_widths(getattr(teacher.head, branch), channels_t)
            if layer >= min(len(w_s), len(w_t)) or w_s[layer] != w_t[layer]:
                raise ConfigError(
                    f"KD.CROSS_HEAD_LAYER is {layer} and KD.LOSSES {readers} run the student's head features after "
                    f"{layer} convs through the teacher's head, but the student's {branch} has {len(w_s) - 1} convs of "
                    f"widths {w_s[1:]} (input {w_s[0]}) and the teacher's "
                    f"({(self.teacher_identity or {}).get('config_file', 'given')}) {len(w_t) - 1} of {w_t[1:]} "
                    f"(input {w_t[0]}); CrossKD needs heads of the same width at that layer with at least that many "
                    "convs.")

    def forward(self, batched_inputs):
        """Training: the student's detection losses + one ``loss_<tag>`` per distillation term.
        Inference: the student's predictions (``DenseDetector.forward``)."""
        if not self.training:
            return DenseDetector.forward(self, batched_inputs)
        images = self.preprocess_image(batched_inputs)
        gt = [x["instances"].to(self.device) for x in batched_inputs]
        features = self.backbone(images.tensor)
        head_in = [features[f] for f in self.head_in_features]
        if "cross_head" in self.teacher_parts:  # the same operations as self.head(head_in), keeping layer L
            outputs, holds = self._head_by_branch(self.head, head_in, self.cross_head_layer)
        else:
            outputs, holds = self.head(head_in), None
        logits, *others = self._transpose_dense_predictions(outputs, [self.num_classes, *self.PRED_DIMS])
        anchors = self.anchor_generator(head_in)
        gt_labels, gt_boxes = self.label_anchors(anchors, gt)
        # RetinaNet.losses(anchors, logits, labels, deltas, boxes) / FCOS.losses(..., boxes, centerness)
        losses = self.losses(anchors, logits, gt_labels, others[0], gt_boxes, *others[1:])

        tensors = {"feats_s": self.levels(features), **self._teacher_forward(batched_inputs)}
        if holds is not None:
            tensors.update(self._cross_head(holds, tensors.pop("holds_t"), tensors.pop("anchors_t", None)))
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

    def _head_by_branch(self, head, features, layer):
        """``head(features)`` branch by branch: (its outputs as its ``forward`` returns them, {"cls": [...],
        "box": [...]} the per-level features of each branch at ``layer``)."""
        cls = [_branch(head.cls_subnet, f, layer) for f in features]
        box = [_branch(head.bbox_subnet, f, layer) for f in features]
        outputs = ([head.cls_score(c) for c, _ in cls],
                   *([getattr(head, p)(b) for b, _ in box] for p in self.BOX_PREDICTORS))
        return outputs, {"cls": [h for _, h in cls], "box": [h for _, h in box]}

    def _teacher_forward(self, batched_inputs):
        """The teacher tensors the losses consume, running only ``self.teacher_parts``: the backbone once
        (-> ``feats_t``, dict level -> (B, C, H, W)), its head's class branch (-> ``anchor_logits_t``, (A, K)) and box
        branch (-> ``anchor_boxes_t``, (A, 4)) on its own head levels, plus for the cross-head pass its branch features
        at ``KD.CROSS_HEAD_LAYER`` (``holds_t``) and anchors (``anchors_t``); no grad, in ``self.teacher_mode``'s
        precision (outputs float32)."""
        if not self.teacher_parts:
            return {}
        with self.teacher_mode.context():
            return self.teacher_mode.outputs(self._teacher_parts_forward(batched_inputs))

    def _teacher_parts_forward(self, batched_inputs):
        t, out = self.teacher, {}
        layer = self.cross_head_layer if "cross_head" in self.teacher_parts else 0  # 0: no features kept
        feats = t.backbone(t.preprocess_image(self.teacher_inputs(batched_inputs)).tensor)
        if "feats_t" in self.needs:
            out["feats_t"] = self.levels(feats)
        head_in = [feats[f] for f in t.head_in_features] if {"cls_head", "box_head"} & set(self.teacher_parts) else []
        holds = {}
        if "cls_head" in self.teacher_parts:
            cls = [_branch(t.head.cls_subnet, f, layer) for f in head_in]
            out["anchor_logits_t"] = _flat_logits([t.head.cls_score(c) for c, _ in cls], t.num_classes)
            holds["cls"] = [h for _, h in cls]
        if "box_head" in self.teacher_parts:
            box = [_branch(t.head.bbox_subnet, f, layer) for f in head_in]
            out["anchors_t"] = t.anchor_generator(head_in)
            out["anchor_boxes_t"] = _decode(t, [t.head.bbox_pred(b) for b, _ in box], out["anchors_t"])
            holds["box"] = [h for _, h in box]
        if "cross_head" in self.teacher_parts:
            out["holds_t"] = holds
        else:
            out.pop("anchors_t", None)
        return out

    def _cross_head(self, holds_s, holds_t, anchors_t):
        """CrossKD's cross-head predictions: per level, the student's branch features at ``KD.CROSS_HEAD_LAYER``
        aligned to the teacher's (:func:`align_scale`) through the teacher's remaining layers, with gradients ->
        ``cross_logits_s`` (A, K) and ``cross_boxes_s`` (A, 4), rows as ``anchor_logits_s``."""
        t, layer, out = self.teacher, self.cross_head_layer, {}
        if "cross_logits_s" in self.needs:
            out["cross_logits_s"] = _flat_logits(
                [t.head.cls_score(_branch_from(t.head.cls_subnet, align_scale(s, h), layer))
                 for s, h in zip(holds_s["cls"], holds_t["cls"])], t.num_classes)
        if "cross_boxes_s" in self.needs:
            out["cross_boxes_s"] = _decode(
                t, [t.head.bbox_pred(_branch_from(t.head.bbox_subnet, align_scale(s, h), layer))
                    for s, h in zip(holds_s["box"], holds_t["box"])], anchors_t)
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
    BOX_PREDICTORS = ("bbox_pred", "ctrness")
