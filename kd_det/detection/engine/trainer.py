"""Detectron2 ``DefaultTrainer`` with kd_det's training step, checkpointer, evaluators and log settings."""
import json
import logging
import os
import time
import weakref

import torch
from detectron2.data import build_detection_test_loader, build_detection_train_loader
from detectron2.data.build import _train_loader_from_config
from detectron2.engine import DefaultTrainer, TrainerBase, hooks
from detectron2.utils import comm
from detectron2.utils.events import (CommonMetricPrinter, EventWriter, JSONWriter, TensorboardXWriter,
                                     get_event_storage)
from torch.utils.data import DataLoader

from ..modeling import check_distill_arch  # (importing it registers DistillRCNN and the extra backbones)
from ...config.detection import num_classes_key
from ...core import ResumableSampler, atomic_write_text, resolve_teacher_mode, write_run_info
from ...core.wandb_log import WandbRun
from ..data import CheckedDatasetMapper, check_masks, check_num_classes
from ...errors import NonFiniteLossError, UserError
from ...evaluation.evaluators import build_evaluator
from .checkpoint import KDCheckpointer
from .launch import create_ddp_model
from .train_loop import KDTrainLoop, amp_mode

__all__ = ["Trainer", "evaluate_teacher", "write_evaluation"]


def write_evaluation(cfg, results, path=None):
    """Write ``OUTPUT_DIR/evaluation.json``: {dataset: {"bbox": {AP...}[, "segm": {AP...}]}} plus what was evaluated."""
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
    return atomic_write_text(path or os.path.join(cfg.OUTPUT_DIR, "evaluation.json"), json.dumps(record, indent=2))


class _UserErrorsWithoutTraceback(logging.Filter):
    """TrainerBase.train logs every exception with its traceback; a UserError gets its sentence only."""

    def filter(self, record):
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, UserError):
            record.msg, record.args, record.exc_info, record.exc_text = f"Training stopped: {error}", (), None, None
        return True


def _log_user_errors_without_traceback():
    """Install :class:`_UserErrorsWithoutTraceback` on TrainerBase.train's logger (once per process)."""
    log = logging.getLogger("detectron2.engine.train_loop")
    if not any(isinstance(f, _UserErrorsWithoutTraceback) for f in log.filters):
        log.addFilter(_UserErrorsWithoutTraceback())


class WandbWriter(EventWriter):
    """Writes what Detectron2's :class:`JSONWriter` writes to metrics.json (same scalars, same smoothing, one record
    per iteration, each once) to a W&B run (:class:`kd_det.core.wandb_log.WandbRun`)."""

    def __init__(self, cfg, window_size=20):
        self._window_size, self._last_write = window_size, -1
        self._run = WandbRun(cfg, "detection")

    def write(self):
        per_iter = {}
        for k, (v, it) in get_event_storage().latest_with_smoothing_hint(self._window_size).items():
            if it > self._last_write:
                per_iter.setdefault(it, {})[k] = v
        for it in sorted(per_iter):
            self._run.log(per_iter[it], step=it)
        if per_iter:
            self._last_write = max(per_iter)

    def close(self):
        self._run.close()


class Trainer(DefaultTrainer):
    """Train/evaluate any Faster R-CNN FPN config; each test set is scored by the evaluator of its
    ``evaluator_type`` (:mod:`kd_det.evaluation.evaluators`: COCO or VOC box AP).

    Differences from ``DefaultTrainer`` (same hooks, same command line):

    * the step is :class:`KDTrainLoop`: ``SOLVER.AMP.ENABLED`` works on CUDA (float16) and CPU
      (bfloat16), and a NaN/Inf loss term stops every rank with one sentence before the update;
    * checkpoints are written atomically, record the teacher's identity (:class:`KDCheckpointer`)
      and hold the optimizer / GradScaler / random states that Detectron2 0.6 leaves out;
    * ``SOLVER.LOG_PERIOD`` / ``SOLVER.LOG_WINDOW`` set the writers' period and smoothing window
      (Detectron2 hard-codes 20 / 20);
    * the datasets' category count is checked against ``MODEL.ROI_HEADS.NUM_CLASSES`` (or the family's key);
    * ``--resume`` continues the sample stream and the random states where the checkpoint left
      them: with one process and ``DATALOADER.NUM_WORKERS 0`` the losses after a resume equal an
      uninterrupted run's (with loader workers, their augmentation randomness restarts; with several
      processes, ranks > 0 keep fresh random states).
    """

    def __init__(self, cfg):
        # DefaultTrainer.__init__, with KDTrainLoop and KDCheckpointer in place of its two classes.
        TrainerBase.__init__(self)
        _log_user_errors_without_traceback()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        check_distill_arch(cfg)  # never train undistilled a config whose KD.LOSSES name losses
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        self._sampler = getattr(data_loader, "resumable_sampler", None)
        model = create_ddp_model(model, broadcast_buffers=False)
        self._trainer = KDTrainLoop(model, data_loader, optimizer, amp=amp_mode(cfg),
                                    last_checkpoint=lambda: self.checkpointer.get_checkpoint_file())
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = KDCheckpointer(model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        self.start_iter, self.max_iter, self.cfg = 0, cfg.SOLVER.MAX_ITER, cfg
        self._stopped_early = False  # set by a NaN stop (run_step), read by after_train
        self.register_hooks(self.build_hooks())

    # Detectron2 0.6's DefaultTrainer leaves the step's state out of its checkpoints (fixed upstream
    # after 0.6): without these two methods a resume would restart SGD momentum, the LR in the
    # optimizer, the GradScaler and the random states.
    def state_dict(self):
        ret = super().state_dict()
        ret["_trainer"] = self._trainer.state_dict()
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        if "_trainer" in state_dict:
            self._trainer.load_state_dict(state_dict["_trainer"])
        else:
            logging.getLogger(__name__).warning(
                "The checkpoint has no optimizer state (written by Detectron2's own trainer?): SGD momentum "
                "restarts from zero.")

    def run_step(self):
        self._trainer.iter = self.iter
        try:
            self._trainer.run_step()
        except NonFiniteLossError:
            self._stopped_early = True
            raise

    def after_train(self):
        # A NaN stop in the last iteration must not be followed by the final evaluation that
        # EvalHook.after_train runs when ``iter + 1 >= max_iter`` (true after a failure there too).
        self.storage.iter = self.iter
        skip = hooks.EvalHook if self._stopped_early else ()
        for h in self._hooks:
            if not isinstance(h, skip):
                h.after_train()

    def train(self):
        self.write_run_info()
        return super().train()

    def write_run_info(self):
        """``OUTPUT_DIR/run_info.json``: processes, images and RoIs per process of this launch (main process).

        Contrastive losses draw their negatives from each process's own RoIs, so a run's setting includes
        them: the papers' COCO runs had 4 processes x 2 images x 512 RoIs = 1,024 RoIs per process.
        """
        if not comm.is_main_process():
            return None
        cfg, world = self.cfg, comm.get_world_size()
        per_proc = cfg.SOLVER.IMS_PER_BATCH // world
        return write_run_info(cfg.OUTPUT_DIR, {
            "task": "detection", "world_size": world, "processes_per_machine": comm.get_local_size(),
            "images_per_process": per_proc, "ims_per_batch": cfg.SOLVER.IMS_PER_BATCH,
            "rois_per_image": cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE,
            "rois_per_process": per_proc * cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE,
            "seed": cfg.SEED, "device": str(next(self.model.parameters()).device),
            "torch_threads": torch.get_num_threads(), "start_iter": self.start_iter, "max_iter": self.max_iter,
            "time": time.strftime("%Y-%m-%d %H:%M:%S")})

    def resume_or_load(self, resume=True):
        super().resume_or_load(resume)
        if self._sampler is not None:
            self._sampler.start = self.start_iter * self.cfg.SOLVER.IMS_PER_BATCH // comm.get_world_size()
        self._trainer.start()

    def build_hooks(self):
        # DefaultTrainer builds its PeriodicWriter with a literal period of 20: build it again with
        # SOLVER.LOG_PERIOD around the same writers (build_writers ran once, inside super().build_hooks()).
        return [hooks.PeriodicWriter(self._writers, period=self.cfg.SOLVER.LOG_PERIOD)
                if isinstance(hook, hooks.PeriodicWriter) else hook for hook in super().build_hooks()]

    def build_writers(self):
        window, out = self.cfg.SOLVER.LOG_WINDOW, self.cfg.OUTPUT_DIR
        self._writers = [CommonMetricPrinter(self.max_iter, window_size=window),
                         JSONWriter(os.path.join(out, "metrics.json"), window_size=window),
                         TensorboardXWriter(out, window_size=window)]
        if self.cfg.SOLVER.WANDB.ENABLED:  # build_writers runs on the main process only
            self._writers.append(WandbWriter(self.cfg, window_size=window))
        return self._writers

    @classmethod
    def build_train_loader(cls, cfg):
        """Detectron2's train loader (same config keys) over a :class:`ResumableSampler`."""
        kwargs = _train_loader_from_config(cfg)  # loads the dataset dicts, which sets thing_classes
        kwargs["mapper"] = CheckedDatasetMapper(cfg, True)  # an undecodable image named in one sentence
        check_num_classes(cfg, cfg.DATASETS.TRAIN)
        check_masks(cfg, kwargs["dataset"], cfg.DATASETS.TRAIN)
        kwargs["sampler"] = sampler = ResumableSampler(kwargs["sampler"])
        loader = build_detection_train_loader(**kwargs)
        loader.resumable_sampler = sampler
        # A torch DataLoader draws its workers' base seed from the global RNG when its iterator is
        # created, which with aspect-ratio grouping happens at the first batch: give it its own
        # generator (seeded now, from the seeded global RNG) so a resumed run's restored random
        # stream is not shifted by that draw.
        inner = loader if isinstance(loader, DataLoader) else getattr(loader, "dataset", None)
        if isinstance(inner, DataLoader) and inner.generator is None:
            inner.generator = torch.Generator().manual_seed(int(torch.randint(2**62, ())))
        return loader

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        loader = build_detection_test_loader(cfg, dataset_name, mapper=CheckedDatasetMapper(cfg, False))
        check_num_classes(cfg, [dataset_name])
        return loader

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        out = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return build_evaluator(cfg, dataset_name, out)  # by the dataset's evaluator_type

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
    so reports carry a teacher row measured by the same code as the students. The teacher runs as it
    does during distillation: in ``KD.TEACHER.PRECISION`` and ``KD.TEACHER.CHANNELS_LAST``.
    """
    from ..modeling import DISTILL_ARCHS, build_teacher
    from ..modeling.teacher import teacher_for_eval

    wrapper = DISTILL_ARCHS.get(cfg.MODEL.META_ARCHITECTURE)  # the teacher its wrapper reads, checked alike
    teacher, tcfg, identity = build_teacher(cfg, check=wrapper and wrapper.check_teacher_config)
    mode = resolve_teacher_mode(teacher.device, cfg.KD.TEACHER.PRECISION, cfg.KD.TEACHER.CHANNELS_LAST)
    model, num_classes = teacher_for_eval(cfg, mode.prepare(teacher), tcfg)  # through KD.TEACHER.CLASS_MAP if set
    tcfg = tcfg.clone()
    tcfg.defrost()
    tcfg.KD.TEACHER.PRECISION, tcfg.KD.TEACHER.CHANNELS_LAST = mode.precision, mode.channels_last
    tcfg.OUTPUT_DIR = os.path.join(cfg.OUTPUT_DIR, "teacher_eval")
    tcfg.DATASETS.TEST = cfg.DATASETS.TEST
    tcfg.TEST.EVAL_BACKEND = cfg.TEST.EVAL_BACKEND
    tcfg.KD.LABEL.TEACHER, tcfg.KD.LABEL.STUDENT = cfg.KD.LABEL.TEACHER, cfg.KD.LABEL.STUDENT
    tcfg.KD.LABEL.METHOD = "teacher"
    tcfg.KD.TEACHER.CLASS_MAP = cfg.KD.TEACHER.CLASS_MAP
    tcfg.merge_from_list([num_classes_key(tcfg), num_classes])  # the teacher family's key
    tcfg.freeze()
    if comm.is_main_process():
        os.makedirs(tcfg.OUTPUT_DIR, exist_ok=True)
        with open(os.path.join(tcfg.OUTPUT_DIR, "config.yaml"), "w") as f:
            f.write(tcfg.dump())
    with mode.context():
        return Trainer.test(tcfg, model)
