"""The loss-input vocabulary: the one list of tensor names a loss ``forward`` may take.

Every registered loss names its ``forward`` arguments (``INPUTS``) from :data:`INPUTS`; the
detection meta-architecture and the classification distiller provide tensors under these
names, and DistillLoss specs may remap a loss argument to another provided name (key
``inputs``, e.g. ReviewKD's ``feats_s`` -> ``stage_feats_s``). Import from here, never repeat
the names.

``shapes`` (for ``shape_params`` / ``DistillLoss``): input name -> int (vector dim, e.g.
``shapes["emb_s"] = 64``, ``shapes["logits_t"] = 81``) or list of ints (channels per level,
``shapes["feats_s"] = [64, 128, 256, 512]``), plus the :data:`SHAPE_KEYS` ``"num_samples"``
(dataset size, CRD) and ``"num_classes"``.
"""
from __future__ import annotations

__all__ = ["INPUTS", "TEACHER_INPUTS", "STUDENT_INPUTS", "FEATURE_INPUTS", "SHAPE_KEYS"]

#: name -> one-line description with shapes, in table order (student / teacher pairs together).
INPUTS: dict[str, str] = {
    "logits_s": "(N, C) student class logits (detection: R x (K+1), background LAST column)",
    "logits_t": "(N, C) teacher class logits on the same samples / RoIs",
    "target": "(N,) int64 class index (detection: assigned class, background = K)",
    "emb_s": "(N, D_s) student embeddings (classification: penultimate features; detection: box-head features)",
    "emb_t": "(N, D_t) teacher embeddings",
    "feats_s": "list of (B, C_l, H_l, W_l) maps, or ordered dict level -> map (FPN p2..p6), finest first",
    "feats_t": "teacher maps, same structure as feats_s",
    "stage_feats_s": "classification: list of (B, C_l, H_l, W_l) student stage maps (post-activation)",
    "stage_feats_t": "classification: teacher stage maps, same structure as stage_feats_s",
    "preact_feats_s": "classification: student stage maps before their final activation",
    "preact_feats_t": "classification: teacher stage maps before their final activation",
    "index": "(N,) int64 dataset indices (CRD memory bank)",
    "contrast_index": "(N, K+1) int64 CRD negative indices, column 0 = index (optional)",
    "teacher_classifier": "callable (M, D_t) -> (M, num_classes) teacher logits (MSD cell labels)",
    "anchors": "per FPN level (list, or dict keyed like the features) of (H_l*W_l*A, 4) xyxy anchors, "
               "Detectron2's order (FGFI)",
    "gt_boxes": "per image, list of (G_i, 4) xyxy GT boxes in the padded input batch's pixels (FGFI, FGD)",
    "object_id": "(N,) int64 object each sample shows (detection: matched GT box, unique over the batch, "
                 "-1 = background); optional for DCD / CKD",
    # dense detectors (RetinaNet, FCOS): one row per anchor (FCOS: per location) over the batch
    "anchor_logits_s": "(A, K) student sigmoid class logits of every anchor (FCOS: location) of the batch, "
                       "Detectron2's order: per image the levels concatenated, each (H_l*W_l*A_l) location-major "
                       "(permute_to_N_HWA_K), then the images one after another; no background column",
    "anchor_logits_t": "(A, K) teacher sigmoid class logits on the same anchors",
    "anchor_labels": "(A,) int64 class of each anchor from the student's own matching, K = background, "
                     "-1 = ignored (RetinaNet's IoU band; FCOS ignores none)",
    "anchor_boxes_t": "(A, 4) xyxy boxes the teacher's box branch predicts at the same anchors (decoded with the "
                      "teacher's box transform), same order as anchor_logits_t",
    # CrossKD: the teacher's head layers from KD.CROSS_HEAD_LAYER on, run on the student's head features of that layer
    "cross_logits_s": "(A, K) CrossKD cross-head class logits: the student's class-branch features after "
                      "KD.CROSS_HEAD_LAYER convs, scale-aligned to the teacher's, through the frozen teacher's "
                      "remaining class branch (gradients reach the student); order as anchor_logits_s",
    "cross_boxes_s": "(A, 4) xyxy boxes of the same cross-head pass through the teacher's box branch, decoded at "
                     "the anchors as anchor_boxes_t",
}

#: Inputs computed by (or from) the teacher: they never need gradients.
TEACHER_INPUTS: tuple[str, ...] = tuple(k for k in INPUTS if k.endswith("_t")) + ("teacher_classifier",)
#: Inputs computed by the student (the ones gradients flow through).
STUDENT_INPUTS: tuple[str, ...] = tuple(k for k in INPUTS if k.endswith("_s"))
#: Inputs that are lists / ordered dicts of (B, C, H, W) maps (``shapes`` gives channels per level).
FEATURE_INPUTS: tuple[str, ...] = tuple(k for k in INPUTS if "feats_" in k)
#: ``shapes`` keys that are not input names.
SHAPE_KEYS: dict[str, str] = {
    "num_samples": "dataset size (CRD memory bank)",
    "num_classes": "width of the class logits (classification: classes; detection: K + 1, background included)",
}
