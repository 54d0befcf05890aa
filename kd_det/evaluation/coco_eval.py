"""COCO box and mask (segm) evaluation with two interchangeable backends.

* ``"faster_coco_eval"`` (default): the C++ ``faster-coco-eval`` package, the fast path.
* ``"pycocotools"``: the official ``pycocotools.COCOeval``, kept as the reference.

Detectron2 0.6's own fast path (``COCOeval_opt``) needs the missing ``detectron2._C``
and is never used here. :func:`evaluate_coco` is plain (no Detectron2); the
Detectron2 evaluator (:mod:`kd_det.evaluation.evaluator`) only collects predictions.
"""
import contextlib
import io
import logging
import numpy as np

__all__ = ["BACKENDS", "IOU_TYPES", "STAT_NAMES", "check_backend", "evaluate_coco"]

BACKENDS = ("faster_coco_eval", "pycocotools")
#: What :func:`evaluate_coco` scores: boxes, or instance masks (RLE / polygons in "segmentation").
IOU_TYPES = ("bbox", "segm")
# Names of COCOeval.stats[0:6] (bbox and segm alike), in percent like Detectron2 reports them.
STAT_NAMES = ["AP", "AP50", "AP75", "APs", "APm", "APl"]

logger = logging.getLogger(__name__)


def check_backend(name):
    """Raise one sentence if ``name`` is not a known backend."""
    _backend(name)


def _backend(name):
    if name == "faster_coco_eval":
        from faster_coco_eval import COCO, COCOeval_faster as COCOeval
    elif name == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    else:
        raise ValueError(f"TEST.EVAL_BACKEND is {name!r}; expected one of {', '.join(BACKENDS)}.")
    return COCO, COCOeval


def _coco_from_dict(COCO, data):
    """A backend's COCO object over an in-memory COCO dict (both backends index ``dataset`` the same way)."""
    coco = COCO()
    coco.dataset = data
    coco.createIndex()
    return coco


def evaluate_coco(gt_json, results, backend="faster_coco_eval", img_ids=None, per_category=True, iou_type="bbox"):
    """Evaluate COCO-format box detections or instance masks.

    Args:
        gt_json: path of the ground-truth COCO json, or the COCO dict itself (for "segm": with "segmentation"
            polygons or RLE).
        results: list of {"image_id", "category_id", "bbox" [x, y, w, h], "score"}; for "segm" each also
            has "segmentation" (an RLE dict, as Detectron2's ``instances_to_coco_json`` writes it) and its
            "bbox" is ignored (the mask's own box and area are used, as Detectron2's COCOEvaluator does).
        backend: one of :data:`BACKENDS`.
        img_ids: evaluate only these image ids (default: all images of the json).
        per_category: also return "AP-<name>" per category.
        iou_type: one of :data:`IOU_TYPES`.

    Returns:
        (dict, np.ndarray): {"AP", "AP50", "AP75", "APs", "APm", "APl"[, "AP-<cat>"...]} in
        percent (NaN where undefined), and the raw 12 COCO stats (fractions).
    """
    if iou_type not in IOU_TYPES:
        raise ValueError(f"iou_type is {iou_type!r}; expected one of {', '.join(IOU_TYPES)}.")
    COCO, COCOeval = _backend(backend)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(gt_json) if isinstance(gt_json, str) else _coco_from_dict(COCO, gt_json)
        names = {c["id"]: c["name"] for c in coco_gt.dataset["categories"]}
        if not results:
            logger.warning("No detections to evaluate: every AP is 0.")
            out = {k: 0.0 for k in STAT_NAMES}
            if per_category:
                out.update({f"AP-{n}": 0.0 for n in names.values()})
            return out, np.zeros(12)
        if iou_type == "segm":  # loadRes reads "bbox" first when present: drop it so the mask is scored
            results = [{k: v for k, v in r.items() if k != "bbox"} for r in results]
        coco_dt = coco_gt.loadRes(results)
        ev = COCOeval(coco_gt, coco_dt, iou_type)
        if img_ids is not None:
            ev.params.imgIds = sorted(img_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = np.asarray(ev.stats[:12], dtype=np.float64)
    out = {k: float(v * 100 if v >= 0 else "nan") for k, v in zip(STAT_NAMES, stats[:6])}
    logger.info("COCO %s (%s): %s", iou_type, backend, ", ".join(f"{k} {v:.2f}" for k, v in out.items()))
    if per_category:
        # precision: [T IoU thresholds, R recall, K categories, A areas, M max dets]
        precision = np.asarray(ev.eval["precision"])
        for k, cat_id in enumerate(ev.params.catIds):
            p = precision[:, :, k, 0, -1]
            p = p[p > -1]
            out[f"AP-{names[cat_id]}"] = float(p.mean() * 100) if p.size else float("nan")
    return out, stats
