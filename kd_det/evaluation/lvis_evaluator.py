"""LVIS box AP: Detectron2's ``LVISEvaluator``, with LVIS's "no data" sentinel written as NaN.

Detectron2's evaluator scores with the ``lvis`` package's ``LVISEval``: the federated rules (a detection of
a category neither annotated in its image nor listed in its ``neg_category_ids`` is not counted; one in
``not_exhaustive_category_ids`` is not counted as a false positive) and 300 detections per image, LVIS's
default. Results are ``{"bbox": {"AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf"}}`` in
percent. ``LVISEval`` gives -1 for an area range or frequency group without ground truth, which Detectron2
writes as -100; it is written as NaN here, as kd_det's COCO evaluator does, so the report shows "-" rather
than a number. ``lvis`` needs ``np.float``, which :mod:`kd_det.compat` restores on NumPy 2.
"""
import math

from detectron2.evaluation.lvis_evaluation import LVISEvaluator

__all__ = ["LVISBoxEvaluator"]


class LVISBoxEvaluator(LVISEvaluator):
    """LVIS AP (box, and mask when the model predicts masks) of a dataset with an LVIS ``json_file``.

    Args:
        dataset_name: a registered dataset (Detectron2's ``lvis_v1_*`` or one registered with
            ``register_lvis_instances``).
        output_dir: if given, ``lvis_instances_results.json`` is written there.
    """

    def __init__(self, dataset_name, output_dir=None):
        super().__init__(dataset_name, output_dir=output_dir, max_dets_per_image=300)

    def evaluate(self):
        results = super().evaluate()
        if not results:  # not the main process, or no predictions
            return {}
        return {task: {k: (v if v >= 0 or math.isnan(v) else float("nan")) for k, v in metrics.items()}
                for task, metrics in results.items()}
