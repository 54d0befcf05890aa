"""Config of the classification path: ``get_cls_cfg()``, one comment above every key.

Dataset / row configs live in ``configs/classification/`` and inherit a base recipe with
``_BASE_``. Defaults are the CIFAR-100 recipe of CRD.
"""

from fvcore.common.config import CfgNode as CN

from ..errors import ConfigError
from .schema import add_kd_config, load_kd_config

__all__ = ["get_cls_cfg", "load_cls_config"]

_C = CN()
# Folder for checkpoints, metrics.json, TensorBoard events and the merged config
_C.OUTPUT_DIR = "./output/classification"
# Global seed; every epoch reseeds from (SEED, epoch, rank) so a resumed run repeats exactly
_C.SEED = 0
# "auto" (cuda:LOCAL_RANK when a GPU is visible, else cpu), "cpu" or "cuda"
_C.DEVICE = "auto"
# Deterministic cuDNN kernels (slower); seeds are always set
_C.CUDNN_DETERMINISTIC = False

_C.DATA = CN()
# "cifar100" (cifar-100-python pickles) or "imagenet" (train/ and val/ class folders)
_C.DATA.NAME = "cifar100"
# Folder holding cifar-100-python/ (CIFAR) or train/ and val/ (ImageNet)
_C.DATA.ROOT = "datasets"
# Number of classes (labels must lie in [0, NUM_CLASSES))
_C.DATA.NUM_CLASSES = 100
# DataLoader worker processes per training process
_C.DATA.NUM_WORKERS = 4
# Keep only the first N training samples (0 = all); for smoke runs
_C.DATA.TRAIN_LIMIT = 0
# Keep only the first N validation samples (0 = all); for smoke runs
_C.DATA.VAL_LIMIT = 0
# K > 0: training samples also carry CRD's contrast_index (own index + K indices of samples
# of other classes), as CRD's loader draws negatives; must equal the crd loss's nce_k
_C.DATA.CONTRAST_K = 0

_C.INPUT = CN()
# Crop size fed to the network (32 for CIFAR, 224 for ImageNet); CIFAR-format images are
# resized to it first when it is not 32
_C.INPUT.SIZE = 32
# Random horizontal flip in training
_C.INPUT.HFLIP = True
# Per-channel mean used to normalise [0, 1] RGB images
_C.INPUT.MEAN = [0.5071, 0.4867, 0.4408]
# Per-channel std used to normalise [0, 1] RGB images
_C.INPUT.STD = [0.2675, 0.2565, 0.2761]

_C.MODEL = CN()
# Architecture trained by this run (the student; the teacher itself in a "teacher" row);
# a key of kd_det.classification.models.MODEL_REGISTRY
_C.MODEL.ARCH = "resnet8x4"
# Optional local checkpoint initialising MODEL.ARCH (empty = random initialisation)
_C.MODEL.WEIGHTS = ""

# The shared distillation keys: KD.CUSTOM_IMPORTS, KD.TEACHER.WEIGHTS (a local teacher checkpoint, required with
# KD.TEACHER.ARCH: no weights can be downloaded), KD.TEACHER.PRECISION / CHANNELS_LAST (how the teacher runs),
# KD.LOSSES (loss specs) and the row labels KD.LABEL.*
add_kd_config(_C)
# Teacher architecture, a key of kd_det.classification.models.MODEL_REGISTRY; empty = no teacher (plain
# cross-entropy: "teacher" / "student" rows)
_C.KD.TEACHER.ARCH = ""
# Value column of the kd_det/data/paper_results.csv row this config reproduces: the published top-1 (%)
# (classification only: detection reports read the papers' AP from that csv by the row labels)
_C.KD.LABEL.PAPER_TOP1 = 0.0
# Weight of the cross-entropy on ground-truth labels
_C.KD.CE_WEIGHT = 1.0
# Linear warm-up (epochs) of all distillation terms, as DKD / ReviewKD train (0 = none)
_C.KD.WARMUP_EPOCHS = 0

_C.SOLVER = CN()
# Training epochs
_C.SOLVER.EPOCHS = 240
# Total batch size over all processes (each process takes BATCH_SIZE / world size)
_C.SOLVER.BATCH_SIZE = 64
# Initial learning rate of SGD
_C.SOLVER.BASE_LR = 0.05
# SGD momentum
_C.SOLVER.MOMENTUM = 0.9
# Weight decay (applied to every trainable parameter, learnable loss parts included)
_C.SOLVER.WEIGHT_DECAY = 5e-4
# Nesterov momentum
_C.SOLVER.NESTEROV = False
# "step" (x GAMMA at each epoch of STEPS) or "cosine" (to 0 at EPOCHS)
_C.SOLVER.SCHEDULER = "step"
# Epochs at which the step schedule multiplies the learning rate by GAMMA
_C.SOLVER.STEPS = (150, 180, 210)
# Step schedule factor
_C.SOLVER.GAMMA = 0.1
_C.SOLVER.AMP = CN()
# Mixed precision (float16 + GradScaler on CUDA, bfloat16 on CPU); losses compute in float32
_C.SOLVER.AMP.ENABLED = False
# Autocast dtype when SOLVER.AMP.ENABLED, as detection's key: "float16" (with a GradScaler) or "bfloat16";
# "" = float16 on CUDA, bfloat16 on CPU
_C.SOLVER.AMP.PRECISION = ""
# Save last_checkpoint.pth every this many epochs (and always after the last one)
_C.SOLVER.CHECKPOINT_PERIOD = 1
_C.SOLVER.WANDB = CN()
# Log metrics.json's per-epoch scalars to Weights & Biases too (main process; needs pip install -e ".[wandb]")
_C.SOLVER.WANDB.ENABLED = False
# W&B project of the runs (each run is named after its OUTPUT_DIR folder)
_C.SOLVER.WANDB.PROJECT = "kd_det"

_C.TEST = CN()
# Evaluation batch size per process
_C.TEST.BATCH_SIZE = 256
# Evaluate every this many epochs (and always after the last one)
_C.TEST.EVAL_PERIOD = 1


def get_cls_cfg() -> CN:
    """A fresh copy of the default classification config."""
    return _C.clone()


def load_cls_config(config_file: str = "", opts=()) -> CN:
    """``get_cls_cfg()`` merged with a yaml file and ``KEY VALUE`` overrides (``KD.LOSSES.<tag>.weight 2.0``
    and the like change one loss entry: :func:`kd_det.config.schema.prepare_kd`).

    Raises:
        ConfigError: naming the file or key at fault.
    """
    cfg = load_kd_config(get_cls_cfg, config_file, opts, "classification")
    _check(cfg)
    return cfg


def _check(cfg: CN) -> None:
    if cfg.KD.TEACHER.ARCH and not cfg.KD.TEACHER.WEIGHTS:
        raise ConfigError(f"KD.TEACHER.ARCH is {cfg.KD.TEACHER.ARCH!r} but KD.TEACHER.WEIGHTS is empty: "
                          "give a local teacher checkpoint (train one with the teacher row config).")
    if cfg.KD.LOSSES and not cfg.KD.TEACHER.ARCH:
        raise ConfigError("KD.LOSSES is set but KD.TEACHER.ARCH is empty; distillation needs a teacher.")
    if cfg.SOLVER.SCHEDULER not in ("step", "cosine"):
        raise ConfigError(f"SOLVER.SCHEDULER is {cfg.SOLVER.SCHEDULER!r}; use 'step' or 'cosine'.")
