"""Detectron2 ``DefaultTrainer`` with kd_det's COCO evaluator and an evaluation.json per run."""
import json
import os
import time

from detectron2.engine import DefaultTrainer
from detectron2.utils import comm
from detectron2.utils.events import get_event_storage

from .. import modeling  # noqa: F401  (registers DistillRCNN and the extra backbones)
from ..evaluation.evaluator import COCOBoxEvaluator
from .checkpoint import KDCheckpointer

__all__ = ["Trainer", "evaluate_teacher", "write_evaluation"]


def write_evaluation(cfg, results, path=None):
    """Write ``OUTPUT_DIR/evaluation.json``: {dataset: {"bbox": {AP...}}} plus what was evaluated."""
    if not comm.is_main_process() or not results:
        return None
    try:
        iteration, mode = get_event_storage().iter, "train"
    except AssertionError:  # no EventStorage: --eval-only
        iteration, mode = None, "eval-only"
    record = {
        "mode": mode,
        "iteration": iteration,
        "weights": cfg.MODEL.WEIGHTS if mode == "eval-only" else "final model of this run",
        "meta_architecture": cfg.MODEL.META_ARCHITECTURE,
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
        "results": results,
    }
    path = path or os.path.join(cfg.OUTPUT_DIR, "evaluation.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(record, f, indent=2)
    os.replace(tmp, path)
    return path


class Trainer(DefaultTrainer):
    """Train/evaluate any Faster R-CNN FPN config; evaluation is COCO box AP on each test set.

    Checkpoints are written atomically and record the teacher's identity (:class:`KDCheckpointer`).
    """

    def build_hooks(self):
        # DefaultTrainer.__init__ builds a DetectionCheckpointer just before calling build_hooks,
        # whose PeriodicCheckpointer must use ours: swap it here, same arguments.
        old = self.checkpointer
        self.checkpointer = KDCheckpointer(old.model, old.save_dir, **old.checkpointables)
        return super().build_hooks()

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        out = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return COCOBoxEvaluator(dataset_name, cfg.TEST.EVAL_BACKEND, out)

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        results = super().test(cfg, model, evaluators)
        # DefaultTrainer.test unwraps a single dataset's results; keep them keyed by dataset.
        by_dataset = {cfg.DATASETS.TEST[0]: results} if len(cfg.DATASETS.TEST) == 1 else results
        write_evaluation(cfg, dict(by_dataset))
        return results


def evaluate_teacher(cfg):
    """Evaluate the teacher of ``cfg`` (KD.TEACHER.*) with the student's evaluator and test sets.

    Writes ``OUTPUT_DIR/teacher_eval/{config.yaml,evaluation.json}`` with KD.LABEL.METHOD "teacher",
    so reports carry a teacher row measured by the same code as the students.
    """
    from ..modeling.teacher import build_teacher

    teacher, tcfg, identity = build_teacher(cfg)
    tcfg = tcfg.clone()
    tcfg.defrost()
    tcfg.OUTPUT_DIR = os.path.join(cfg.OUTPUT_DIR, "teacher_eval")
    tcfg.DATASETS.TEST = cfg.DATASETS.TEST
    tcfg.TEST.EVAL_BACKEND = cfg.TEST.EVAL_BACKEND
    tcfg.KD.LABEL.TEACHER, tcfg.KD.LABEL.STUDENT = cfg.KD.LABEL.TEACHER, cfg.KD.LABEL.STUDENT
    tcfg.KD.LABEL.METHOD = "teacher"
    tcfg.freeze()
    if comm.is_main_process():
        os.makedirs(tcfg.OUTPUT_DIR, exist_ok=True)
        with open(os.path.join(tcfg.OUTPUT_DIR, "config.yaml"), "w") as f:
            f.write(tcfg.dump())
    return Trainer.test(tcfg, teacher)
