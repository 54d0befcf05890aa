"""Pascal VOC box AP of a VOC-layout dataset, reading the XML exactly as the training loader does.

Detectron2's ``PascalVOCDetectionEvaluator`` re-reads the annotations with ``parse_rec``, which
``int()``s the coordinates and requires ``<pose>`` / ``<truncated>`` / ``<difficult>``; XML from
annotation tools often has float coordinates and lacks those tags. This evaluator reads the ground
truth with :func:`kd_det.detection.data.voc.read_voc_xml` (the loader's reader) and otherwise follows
the devkit: greedy matching by score per class, ``difficult`` objects neither counted nor penalised,
the 11-point AP for year 2007 and the all-point AP otherwise (Detectron2's ``voc_ap``). Results are
``{"bbox": {"AP", "AP50", "AP75"}}`` in percent, AP the mean over IoU 0.50:0.95:0.05; a class without
ground truth is left out of the class mean.
"""
import itertools
import os
from collections import defaultdict

import numpy as np
from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.evaluation.pascal_voc_evaluation import voc_ap
from detectron2.utils import comm

__all__ = ["VOCBoxEvaluator", "voc_ap_at"]


def _iou(box, boxes):
    """IoU of one box (4,) with boxes (N, 4), continuous XYXY coordinates."""
    lt = np.maximum(box[:2], boxes[:, :2])
    rb = np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    return inter / (area(box) + area(boxes) - inter)


def voc_ap_at(gt, dets, thresh, use_07_metric):
    """AP of one class at one IoU threshold.

    Args:
        gt: {image_id: (boxes (G, 4) float array, difficult (G,) bool array)} of this class.
        dets: list of (image_id, score, box (4,)) of this class.
        thresh: IoU threshold.
        use_07_metric: 11-point AP (VOC 2007) instead of the all-point AP.

    Returns:
        AP in [0, 1], or NaN if the class has no non-difficult ground truth.
    """
    npos = sum(int((~d).sum()) for _, d in gt.values())
    if npos == 0:
        return float("nan")
    used = {k: np.zeros(len(b), bool) for k, (b, _) in gt.items()}
    tp, fp = np.zeros(len(dets)), np.zeros(len(dets))
    for i, (img, _, box) in enumerate(sorted(dets, key=lambda d: -d[1])):
        boxes, difficult = gt.get(img, (np.zeros((0, 4)), np.zeros(0, bool)))
        if len(boxes):
            ious = _iou(np.asarray(box, float), boxes)
            j = int(ious.argmax())
            if ious[j] > thresh:
                if difficult[j]:
                    continue
                if not used[img][j]:
                    tp[i] = used[img][j] = 1
                    continue
        fp[i] = 1
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    rec = tp / npos
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return float(voc_ap(rec, prec, use_07_metric))


class VOCBoxEvaluator(DatasetEvaluator):
    """VOC box AP of a dataset registered with VOC metadata (``dirname``, ``split``, ``thing_classes``, ``year``).

    Args:
        dataset_name: the registered dataset.
    """

    def __init__(self, dataset_name):
        meta = MetadataCatalog.get(dataset_name)
        self._dirname, self._split, self._classes = meta.dirname, meta.split, list(meta.thing_classes)
        self._use_07 = getattr(meta, "year", None) == 2007
        self._predictions = []

    def reset(self):
        self._predictions = []

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            inst = out["instances"].to("cpu")
            for box, score, cls in zip(inst.pred_boxes.tensor.numpy(), inst.scores.tolist(),
                                       inst.pred_classes.tolist()):
                self._predictions.append((cls, inp["image_id"], score, box))

    def evaluate(self):
        from ..detection.data.voc import read_voc_xml, voc_ids

        preds = comm.gather(self._predictions, dst=0)
        if not comm.is_main_process():
            return {}
        dets = defaultdict(list)
        for cls, img, score, box in itertools.chain(*preds):
            dets[cls].append((img, score, box))
        gt = defaultdict(dict)  # class -> image -> (boxes, difficult)
        for img in voc_ids(self._dirname, self._split):
            objs = read_voc_xml(os.path.join(self._dirname, "Annotations", img + ".xml"), self._classes)["objects"]
            for c in {o["category_id"] for o in objs}:
                mine = [o for o in objs if o["category_id"] == c]
                gt[c][img] = (np.array([o["bbox"] for o in mine], float), np.array([o["difficult"] for o in mine]))
        thresholds = np.arange(0.5, 0.96, 0.05)
        ap = np.array([[voc_ap_at(gt[c], dets[c], t, self._use_07) for t in thresholds]
                       for c in range(len(self._classes))])  # (K, 10)
        with np.errstate(invalid="ignore"):
            per_thresh = 100 * np.nanmean(ap, axis=0) if np.isfinite(ap).any() else np.full(len(thresholds), np.nan)
        return {"bbox": {"AP": float(np.mean(per_thresh)), "AP50": float(per_thresh[0]),
                         "AP75": float(per_thresh[5])}}
