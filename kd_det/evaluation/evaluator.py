"""Detectron2 evaluator that collects box (and mask) predictions and scores them with :func:`evaluate_coco`."""
import itertools
import json
import os

from detectron2.data import MetadataCatalog
from detectron2.data.datasets.coco import convert_to_coco_dict
from detectron2.evaluation import DatasetEvaluator
from detectron2.evaluation.coco_evaluation import instances_to_coco_json
from detectron2.utils import comm

from .coco_eval import check_backend, evaluate_coco

__all__ = ["COCOBoxEvaluator"]


class COCOBoxEvaluator(DatasetEvaluator):
    """COCO box AP of a registered COCO-format dataset, gathered over all processes, and mask (segm) AP
    beside it when the model predicts masks (a Mask R-CNN: ``pred_masks``, RLE-encoded per instance).

    Args:
        dataset_name: a registered dataset; its metadata's ``json_file`` is the ground truth, or without one
            the COCO dict Detectron2's ``convert_to_coco_dict`` builds from its dataset dicts.
        backend: "faster_coco_eval" (default) or "pycocotools".
        output_dir: if given, ``coco_instances_results.json`` is written there.
    """

    def __init__(self, dataset_name, backend="faster_coco_eval", output_dir=None):
        check_backend(backend)  # fail now on a bad name, not after inference
        self._meta = MetadataCatalog.get(dataset_name)
        # a dataset without a json file (YOLO labels, one registered in Python): its ground truth built in memory
        self._json = getattr(self._meta, "json_file", None) or convert_to_coco_dict(dataset_name)
        self._backend = backend
        self._output_dir = output_dir
        self.reset()

    def reset(self):
        self._predictions = []
        self._masks = False  # any output with pred_masks (even with no instance): segm is scored too

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            inst = out["instances"].to("cpu")
            self._masks = self._masks or inst.has("pred_masks")
            self._predictions.append((inp["image_id"], instances_to_coco_json(inst, inp["image_id"])))

    def evaluate(self):
        preds, masks = comm.gather(self._predictions, dst=0), any(comm.gather(self._masks, dst=0))
        if not comm.is_main_process():
            return {}
        preds = list(itertools.chain(*preds))
        img_ids = [i for i, _ in preds]
        results = list(itertools.chain(*[r for _, r in preds]))
        # Detectron2 maps dataset category ids to contiguous [0, K); map them back.
        inv = {v: k for k, v in getattr(self._meta, "thing_dataset_id_to_contiguous_id", {}).items()}
        for r in results:
            r["category_id"] = inv.get(r["category_id"], r["category_id"])
        if self._output_dir:
            os.makedirs(self._output_dir, exist_ok=True)
            with open(os.path.join(self._output_dir, "coco_instances_results.json"), "w") as f:
                json.dump(results, f)
        out = {"bbox": evaluate_coco(self._json, results, self._backend, img_ids=img_ids)[0]}
        if masks:
            out["segm"] = evaluate_coco(self._json, results, self._backend, img_ids=img_ids, iou_type="segm")[0]
        return out
