"""DistillRCNN: a trainable Faster / Mask R-CNN FPN student distilled from a frozen Faster / Mask R-CNN FPN teacher
(or, for feature losses only, a RetinaNet / FCOS teacher).

The model *is* the student (a :class:`GeneralizedRCNN` subclass), so ``MODEL.WEIGHTS``
initialises the student exactly as for a plain detector, inference returns the student's
predictions, and ``tools/export_student.py`` only has to drop ``distill.*`` keys. What it shares with
every detection wrapper (teacher, feature levels, DistillLoss, the contract) is
:class:`~kd_det.detection.modeling.wrapper.DistillDetector`.

Per training step (no work done twice):

1. student backbone + RPN, proposals sampled once (``label_and_sample_proposals``);
2. student box head once on the sampled RoIs -> class logits (R, K+1), background last; a Mask R-CNN
   student (``MODEL.MASK_ON``) also runs its mask head once, on the sampled foreground RoIs
   (``StandardROIHeads._forward_mask``) -> ``loss_mask``;
3. teacher (under ``torch.no_grad``, in eval mode, not a submodule) backbone once, and its box
   head on the *same* sampled RoIs over its own FPN features -> teacher logits (R, K+1); only the
   parts whose outputs a configured loss consumes run (:attr:`DistillRCNN.TEACHER_PARTS`, decided at build);
   a Mask R-CNN teacher's mask head never runs (no loss reads mask logits yet);
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
import torch
from detectron2.config import configurable
from detectron2.modeling import GeneralizedRCNN
from detectron2.modeling.roi_heads import StandardROIHeads
from detectron2.utils.events import get_event_storage
from torch import nn

from ...errors import ConfigError
from .teacher import select_teacher_logits, teacher_logit_columns
from .wrapper import DISTILL_PREFIX, DistillDetector, register_distill_arch, student_config

__all__ = ["DistillRCNN", "DISTILL_PREFIX", "student_config"]


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


def _check_box_head(roi_heads, where):
    """``roi_heads`` if it is a StandardROIHeads-style head with one box head, else one sentence naming ``where``
    (Cascade R-CNN's heads hold one box head per stage; C4's ``Res5ROIHeads`` has none)."""
    box_head = getattr(roi_heads, "box_head", None)
    if not isinstance(roi_heads, StandardROIHeads) or box_head is None or isinstance(box_head, nn.ModuleList):
        raise ConfigError(f"{where} has ROI heads {type(roi_heads).__name__}; DistillRCNN reads a StandardROIHeads-"
                          "style head with one box head (Faster R-CNN FPN); Cascade R-CNN and C4 heads are not "
                          "supported.")
    return roi_heads


@register_distill_arch
class DistillRCNN(DistillDetector, GeneralizedRCNN):
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

    STUDENT_ARCH = "GeneralizedRCNN"
    #: A RetinaNet / FCOS teacher serves feature losses only (DistillDetector.check_teacher_family).
    TEACHER_ARCHS = ("GeneralizedRCNN", "RetinaNet", "FCOS")
    #: The loss inputs a detection training step provides (names of kd_det.losses.vocabulary.INPUTS).
    PROVIDED_INPUTS = ("logits_s", "logits_t", "target", "emb_s", "emb_t", "feats_s", "feats_t", "anchors",
                       "gt_boxes", "object_id")
    #: Teacher part -> the loss inputs whose computation runs it (``emb_t`` is the box head's output, the input of
    #: the box predictor; ``logits_t`` the predictor's class scores on it). A part no configured loss needs never runs.
    TEACHER_PARTS = {"backbone": ("feats_t", "emb_t", "logits_t"), "box_head": ("emb_t", "logits_t"),
                     "box_predictor": ("logits_t",)}

    @configurable
    def __init__(self, *, teacher, distill, feature_levels, teacher_identity=None, teacher_mode=None,
                 teacher_columns=None, **kwargs):
        super().__init__(**kwargs)
        _check_box_head(self.roi_heads, "The student")
        self.teacher_columns = teacher_columns  # KD.TEACHER.CLASS_MAP's teacher logit columns (None: all)
        self.setup_distillation(teacher, distill, feature_levels, teacher_identity, teacher_mode)

    @classmethod
    def from_config(cls, cfg):
        if cfg.MODEL.KEYPOINT_ON:
            raise ConfigError("MODEL.KEYPOINT_ON True: DistillRCNN trains Faster / Mask R-CNN students only; keypoint "
                              "heads are not supported (set MODEL.KEYPOINT_ON False).")
        student = GeneralizedRCNN.from_config(cfg)  # first: the student draws the global RNG as a plain detector does
        rh = _check_box_head(student["roi_heads"], f"The student (MODEL.ROI_HEADS.NAME {cfg.MODEL.ROI_HEADS.NAME})")
        shapes = {"logits_s": rh.num_classes + 1, "emb_s": rh.box_head.output_shape.channels,
                  "num_classes": rh.num_classes + 1}
        built = cls.build_distillation(cfg, student["backbone"], shapes)
        distill, teacher = built["distill"], built["teacher"]
        readers = distill.readers("logits_t")  # the terms that read the teacher's class logits
        k_t = teacher.roi_heads.num_classes if hasattr(teacher, "roi_heads") else None  # None: another family, no readers
        columns = teacher_logit_columns(cfg.KD.TEACHER.CLASS_MAP, rh.num_classes, k_t, readers,
                                        cfg.KD.TEACHER.CONFIG_FILE)
        return {**student, **built, "teacher_columns": columns}

    @classmethod
    def teacher_shapes(cls, cfg, teacher):
        rh = getattr(teacher, "roi_heads", None)  # None: a dense teacher (feature losses only)
        box_head = getattr(rh, "box_head", None)
        if box_head is None or isinstance(box_head, nn.ModuleList):
            return {}  # no single box head: refused by check_teacher if a loss reads it
        return {"logits_t": (len(cfg.KD.TEACHER.CLASS_MAP) or rh.num_classes) + 1,
                "emb_t": box_head.output_shape.channels}

    def check_teacher(self, teacher):
        if "box_head" in self.teacher_parts:
            _check_box_head(teacher.roi_heads, "The teacher")

    def forward(self, batched_inputs):
        """Training: the student's detection losses + one ``loss_<tag>`` per distillation term.
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
        if rh.mask_on:  # loss_mask on the sampled foreground RoIs, as StandardROIHeads.forward computes it
            losses.update(rh._forward_mask(features, proposals))

        tensors = {"logits_s": predictions[0], "emb_s": emb_s, "target": torch.cat([p.gt_classes for p in proposals]),
                   "feats_s": self.levels(features), **self._teacher_forward(batched_inputs, boxes)}
        if "gt_boxes" in self.needs:
            tensors["gt_boxes"] = [g.gt_boxes.tensor for g in gt]
        if "object_id" in self.needs:
            tensors["object_id"] = _object_ids(proposals, gt, rh.num_classes)
        if "anchors" in self.needs:
            pg = self.proposal_generator
            anchors = pg.anchor_generator([features[f] for f in pg.in_features])
            tensors["anchors"] = {lv: a.tensor for lv, a in zip(pg.in_features, anchors)}
        losses.update(self.distill(step=get_event_storage().iter, **tensors))  # step: the terms' start_iter
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
        feats = t.backbone(t.preprocess_image(self.teacher_inputs(batched_inputs)).tensor)
        if "feats_t" in self.needs:
            out["feats_t"] = self.levels(feats)
        if "box_head" in self.teacher_parts:
            trh = t.roi_heads
            out["emb_t"] = trh.box_head(trh.box_pooler([feats[f] for f in trh.box_in_features], boxes))
            if "box_predictor" in self.teacher_parts:
                out["logits_t"] = select_teacher_logits(trh.box_predictor(out["emb_t"])[0], self.teacher_columns)
        return out
