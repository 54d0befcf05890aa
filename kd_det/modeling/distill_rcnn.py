"""DistillRCNN: a trainable Faster R-CNN FPN student distilled from a frozen Faster R-CNN FPN teacher.

The model *is* the student (a :class:`GeneralizedRCNN` subclass), so ``MODEL.WEIGHTS``
initialises the student exactly as for a plain detector, inference returns the student's
predictions, and ``tools/export_student.py`` only has to drop ``distill.*`` keys.

Per training step (no work done twice):

1. student backbone + RPN, proposals sampled once (``label_and_sample_proposals``);
2. student box head once on the sampled RoIs -> class logits (R, K+1), background last;
3. teacher (under ``torch.no_grad``, in eval mode, not a submodule) backbone once, and its box
   head on the *same* sampled RoIs over its own FPN features -> teacher logits (R, K+1);
4. the tensors the configured losses need are handed to :class:`kd_det.losses.DistillLoss`:

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
from detectron2.layers import get_norm
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN
from detectron2.modeling.roi_heads import StandardROIHeads
from detectron2.utils.events import get_event_storage

from ..core import isolated_rng
from ..errors import ConfigError
from ..losses import LOSS_REGISTRY, DistillLoss, build_loss
from .teacher import build_teacher

__all__ = ["DistillRCNN", "DISTILL_PREFIX", "loss_specs", "student_config"]

#: State-dict prefix of the learnable distillation parts (``DistillRCNN.distill``); the rest is the student.
DISTILL_PREFIX = "distill."

logger = logging.getLogger(__name__)


def _plain(node):
    """CfgNode (possibly nested) -> plain dict with lists instead of tuples."""
    if hasattr(node, "items"):
        return {k: _plain(v) for k, v in node.items()}
    return list(node) if isinstance(node, tuple) else node


def loss_specs(cfg):
    """``KD.LOSSES`` / ``LOSS_WEIGHTS`` / ``LOSS_START_ITERS`` / ``PARAMS`` / ``INPUTS`` -> DistillLoss specs."""
    names = [str(n).lower() for n in cfg.KD.LOSSES]
    weights = list(cfg.KD.LOSS_WEIGHTS) or [1.0] * len(names)
    if len(weights) != len(names):
        raise ConfigError(f"KD.LOSS_WEIGHTS has {len(weights)} entries but KD.LOSSES has {len(names)} "
                          f"({', '.join(names)}); give one weight per loss.")
    starts = list(cfg.KD.LOSS_START_ITERS) or [0] * len(names)
    if len(starts) != len(names):
        raise ConfigError(f"KD.LOSS_START_ITERS has {len(starts)} entries but KD.LOSSES has {len(names)} "
                          f"({', '.join(names)}); give one start iteration per loss.")
    for n, it in zip(names, starts):
        if isinstance(it, bool) or not isinstance(it, int) or it < 0:
            raise ConfigError(f"KD.LOSS_START_ITERS entry {it!r} (for {n}) must be an int >= 0.")
    for n in names:
        if n not in LOSS_REGISTRY:  # a typo: name it and the known losses, not the PARAMS it orphans
            try:
                build_loss(n)
            except ValueError as e:
                raise ConfigError(f"KD.LOSSES: {e}") from None
    for key in ("PARAMS", "INPUTS"):
        extra = sorted(set(cfg.KD[key]) - set(names))
        if extra:
            raise ConfigError(f"KD.{key} has entries {extra} for losses not in KD.LOSSES {names}.")
    return [{"name": n, "weight": float(w), "start_iter": int(it), "params": _plain(cfg.KD.PARAMS.get(n, {})),
             "inputs": _plain(cfg.KD.INPUTS.get(n, {}))} for n, w, it in zip(names, weights, starts)]


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


@META_ARCH_REGISTRY.register()
class DistillRCNN(GeneralizedRCNN):
    """Student GeneralizedRCNN + frozen teacher + the learnable distillation parts (``self.distill``)."""

    def __init__(self, cfg):
        if cfg.MODEL.MASK_ON:
            raise ConfigError("MODEL.MASK_ON True: DistillRCNN distils Faster R-CNN box heads only; mask heads are "
                              "not supported yet (set MODEL.MASK_ON False).")
        super().__init__(**GeneralizedRCNN.from_config(cfg))
        if not isinstance(self.roi_heads, StandardROIHeads) or getattr(self.roi_heads, "box_head", None) is None:
            raise ConfigError(f"MODEL.ROI_HEADS.NAME {cfg.MODEL.ROI_HEADS.NAME!r}: DistillRCNN needs a "
                              "StandardROIHeads-style head with a box head (Faster R-CNN).")
        teacher, tcfg, self.teacher_identity = build_teacher(cfg)
        self.__dict__["teacher"] = teacher.to(self.device)  # not a submodule: not in state_dict, DDP, optimizer
        self._flip_for_teacher = tcfg.INPUT.FORMAT != cfg.INPUT.FORMAT
        self.feature_levels = list(cfg.KD.FEATURE_LEVELS)
        shapes = {"logits_s": self.roi_heads.num_classes + 1, "logits_t": teacher.roi_heads.num_classes + 1,
                  "emb_s": self.roi_heads.box_head.output_shape.channels,
                  "emb_t": teacher.roi_heads.box_head.output_shape.channels,
                  "num_classes": self.roi_heads.num_classes + 1}
        for side, model, config_file in (("s", self, "the student config"),
                                         ("t", teacher, cfg.KD.TEACHER.CONFIG_FILE)):
            out = model.backbone.output_shape()
            missing = [lv for lv in self.feature_levels if lv not in out]
            if missing:
                raise ConfigError(f"KD.FEATURE_LEVELS names {missing}, which the backbone of {config_file} lacks "
                                  f"(it has {', '.join(out)}).")
            shapes[f"feats_{side}"] = [out[lv].channels for lv in self.feature_levels]
        try:
            with isolated_rng():  # drawn after the student: must not shift the loader's / sampler's seeds
                self.distill = DistillLoss(loss_specs(cfg), shapes)
        except ValueError as e:
            if isinstance(e, ConfigError):
                raise
            raise ConfigError(f"KD.LOSSES: {e}") from None
        if cfg.KD.NORM:
            _convert_batchnorm(self.distill, cfg.KD.NORM)
        self._needs = self.distill.required_inputs() | self.distill.optional_inputs()
        parts = {k: sum(p.numel() for p in m.parameters()) for k, m in self.distill.losses.items()}
        logger.info(f"Distillation losses: {self.distill.extra_repr() or 'none'}; inputs {sorted(self._needs)}; "
                    "learnable parameters: " + (", ".join(f"{k} {n:,}" for k, n in parts.items()) or "none"))

    # -- the teacher is frozen three ways: requires_grad off, eval() always, no_grad forward --
    def train(self, mode=True):
        super().train(mode)
        self.teacher.eval()
        return self

    def _apply(self, fn, *args, **kwargs):  # .to() / .cuda() / .half() move the teacher too
        super()._apply(fn, *args, **kwargs)
        if "teacher" in self.__dict__:
            self.teacher._apply(fn, *args, **kwargs)
        return self

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

        t_features, logits_t, emb_t = self._teacher_forward(batched_inputs, boxes)
        tensors = {"logits_s": predictions[0], "logits_t": logits_t, "emb_s": emb_s, "emb_t": emb_t,
                   "target": torch.cat([p.gt_classes for p in proposals]),
                   "feats_s": OrderedDict((lv, features[lv]) for lv in self.feature_levels),
                   "feats_t": OrderedDict((lv, t_features[lv]) for lv in self.feature_levels)}
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

    @torch.no_grad()
    def _teacher_forward(self, batched_inputs, boxes):
        """Teacher backbone once, its box head on the student's sampled RoIs; no RPN, no grad."""
        t = self.teacher
        if self._flip_for_teacher:  # RGB <-> BGR when the two configs read images differently
            batched_inputs = [dict(x, image=x["image"].flip(0)) for x in batched_inputs]
        feats = t.backbone(t.preprocess_image(batched_inputs).tensor)
        trh = t.roi_heads
        emb_t = trh.box_head(trh.box_pooler([feats[f] for f in trh.box_in_features], boxes))
        logits_t, _ = trh.box_predictor(emb_t)
        return feats, logits_t, emb_t
