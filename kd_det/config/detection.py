"""The detection config: Detectron2's defaults plus kd_det's keys, in three groups.

* :func:`add_run_config` — how a run reads data, evaluates and logs (``DATASETS.*``, ``TEST.*``, ``SOLVER.*``);
* :func:`kd_det.config.schema.add_kd_config` + :func:`add_detector_distill_config` — the ``KD.*`` keys both
  tasks share, then detection's own (teacher config file, feature levels, KD.NORM);
* :func:`add_mobilenet_config` — the MobileNetV2-FPN backbone's ``MODEL.MOBILENET.*``;
* :func:`add_fcos_config` — ``MODEL.FCOS.*``: Detectron2 0.6 ships FCOS for LazyConfig only, kd_det builds it
  from these keys (:mod:`kd_det.detection.modeling.fcos`).

:func:`num_classes_key` is the one place that says which key holds a config's class count.

``get_cfg()`` is what every tool uses; ``load_config(file, opts)`` merges a file and overrides into it. Later
features only add keys, each with a one-line comment above it.
"""
from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg as _d2_get_cfg

from .schema import add_kd_config, load_kd_config

__all__ = ["get_cfg", "load_config", "add_run_config", "add_detector_distill_config", "add_mobilenet_config",
           "add_fcos_config", "num_classes_key", "num_classes", "NUM_CLASSES_KEYS"]


def add_run_config(cfg):
    """Add how a run reads data, evaluates and logs (datasets, evaluation, log period, AMP dtype), in place."""
    # COCO-format datasets to register before training, each (name, json_file, image_root);
    # the name can then be used in DATASETS.TRAIN / DATASETS.TEST.
    cfg.DATASETS.COCO_FORMAT = []
    # Pascal VOC-layout datasets to register, each (name, dirname, split, [class, ...]); dirname holds
    # Annotations/, ImageSets/Main/<split>.txt and JPEGImages/ (docs/own-data.md).
    cfg.DATASETS.VOC_FORMAT = []
    # YOLO-format datasets to register, each (name, image_dir, label_dir, [class, ...]); label_dir holds one
    # <image stem>.txt per image, a "class cx cy w h" line (normalised to [0, 1]) per box (docs/own-data.md).
    cfg.DATASETS.YOLO_FORMAT = []
    # COCO evaluation backend: "faster_coco_eval" (C++, fast) or "pycocotools" (the reference).
    cfg.TEST.EVAL_BACKEND = "faster_coco_eval"
    # Iterations between console lines / metrics.json rows / TensorBoard points (Detectron2: 20).
    cfg.SOLVER.LOG_PERIOD = 20
    # Logged losses are medians over this many iterations (Detectron2: 20); 1 logs each step's raw value.
    cfg.SOLVER.LOG_WINDOW = 20
    cfg.SOLVER.WANDB = CN()
    # Log metrics.json's scalars to Weights & Biases too (main process; needs pip install -e ".[wandb]").
    cfg.SOLVER.WANDB.ENABLED = False
    # W&B project of the runs (each run is named after its OUTPUT_DIR folder).
    cfg.SOLVER.WANDB.PROJECT = "kd_det"
    # Autocast dtype when SOLVER.AMP.ENABLED (name as in later Detectron2): "float16" (with a GradScaler)
    # or "bfloat16"; "" = float16 on CUDA, bfloat16 on CPU.
    cfg.SOLVER.AMP.PRECISION = ""
    return cfg


def add_detector_distill_config(cfg):
    """Detection's own ``KD.*`` keys, in place (after :func:`kd_det.config.schema.add_kd_config`)."""
    # Teacher's own Detectron2 config file (a meta-architecture the distillation wrapper reads); "" = no teacher.
    cfg.KD.TEACHER.CONFIG_FILE = ""
    # Teacher class of each student class (K_s ints; [] = the same classes): the teacher logits handed to the
    # losses are its columns [CLASS_MAP..., background]; --eval-teacher scores the teacher through it
    # (docs/own-data.md).
    cfg.KD.TEACHER.CLASS_MAP = []
    # Refuse a teacher checkpoint that matches fewer than this fraction of the teacher's keys.
    cfg.KD.TEACHER.MIN_MATCHED_FRACTION = 0.95
    # Norm of BatchNorm2d layers inside learnable distillation parts (ReviewKD's fusion modules): ""
    # keeps per-process BatchNorm2d (ReviewKD's code); "naiveSyncBN" / "SyncBN" sync statistics across processes.
    cfg.KD.NORM = ""
    # FPN levels handed to feature losses (ReviewKD, FitNet, FGFI, MSD), finest first; both sides need them.
    cfg.KD.FEATURE_LEVELS = ["p2", "p3", "p4", "p5", "p6"]
    # CrossKD (dense students): the student's head features after this many convs of each branch enter the teacher's
    # head (the authors' reused_teacher_head_idx: 3 in their RetinaNet configs, 2 in FCOS); read only by crosskd.
    cfg.KD.CROSS_HEAD_LAYER = 3
    return cfg


def get_cfg():
    """Detectron2 defaults + every kd_det key. Returns a mutable CfgNode."""
    cfg = _d2_get_cfg()
    add_run_config(cfg)
    add_mobilenet_config(cfg)
    add_fcos_config(cfg)
    add_kd_config(cfg)
    add_detector_distill_config(cfg)
    return cfg


def add_mobilenet_config(cfg):
    """``MODEL.MOBILENET.*`` keys."""
    cfg.MODEL.MOBILENET = CN()
    # Normalisation of the MobileNetV2 backbone: "FrozenBN" (fine-tuning) or "BN" (from scratch).
    cfg.MODEL.MOBILENET.NORM = "FrozenBN"
    # Stages returned to the FPN (subset of res2..res5).
    cfg.MODEL.MOBILENET.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    return cfg


def add_fcos_config(cfg):
    """``MODEL.FCOS.*`` keys (names and defaults as d2go's yacs FCOS, ``d2go/modeling/meta_arch/fcos.py``; values of
    Detectron2's LazyConfig ``configs/common/models/fcos.py`` and ``FCOS.__init__``)."""
    cfg.MODEL.FCOS = CN()
    # Number of foreground classes (the FCOS counterpart of MODEL.RETINANET.NUM_CLASSES).
    cfg.MODEL.FCOS.NUM_CLASSES = 80
    # Backbone levels the head reads, finest first (one anchor point per location).
    cfg.MODEL.FCOS.IN_FEATURES = ["p3", "p4", "p5", "p6", "p7"]
    # Convolutions of each head branch (class / box + centerness).
    cfg.MODEL.FCOS.NUM_CONVS = 4
    # Norm of the head's convolutions ("GN" in Detectron2's FCOS config; "" none).
    cfg.MODEL.FCOS.HEAD_NORM = "GN"
    # Prior probability of the class logits' bias initialisation.
    cfg.MODEL.FCOS.PRIOR_PROB = 0.01
    # Radius (in strides) around a GT centre within which locations may be positive (center sampling).
    cfg.MODEL.FCOS.CENTER_SAMPLING_RADIUS = 1.5
    # Focal loss of the class logits.
    cfg.MODEL.FCOS.FOCAL_LOSS_ALPHA = 0.25
    cfg.MODEL.FCOS.FOCAL_LOSS_GAMMA = 2.0
    # Inference: threshold on sqrt(class score x centerness), candidates per level before NMS, NMS IoU.
    cfg.MODEL.FCOS.SCORE_THRESH_TEST = 0.2
    cfg.MODEL.FCOS.TOPK_CANDIDATES_TEST = 1000
    cfg.MODEL.FCOS.NMS_THRESH_TEST = 0.6
    return cfg


#: Detectron2 meta-architecture -> the key holding its class count (any other: MODEL.ROI_HEADS.NUM_CLASSES).
NUM_CLASSES_KEYS = {"RetinaNet": "MODEL.RETINANET.NUM_CLASSES", "FCOS": "MODEL.FCOS.NUM_CLASSES"}


def num_classes_key(cfg):
    """The config key of ``cfg``'s class count, e.g. "MODEL.RETINANET.NUM_CLASSES"; a distillation wrapper reads its
    student's (``STUDENT_ARCH``) key."""
    from ..detection.modeling.wrapper import DISTILL_ARCHS

    arch = cfg.MODEL.META_ARCHITECTURE
    arch = getattr(DISTILL_ARCHS.get(arch), "STUDENT_ARCH", arch)
    return NUM_CLASSES_KEYS.get(arch, "MODEL.ROI_HEADS.NUM_CLASSES")


def num_classes(cfg):
    """(key, value) of ``cfg``'s class count (:func:`num_classes_key`)."""
    key = num_classes_key(cfg)
    node = cfg
    for part in key.split("."):
        node = node[part]
    return key, node


def load_config(config_file, opts=()):
    """``get_cfg()`` merged with ``config_file`` and ``KEY VALUE`` overrides; errors name the file/key.

    ``KD.LOSSES.<tag>.weight 2.0`` and the like change one loss entry (:func:`kd_det.config.schema.load_kd_config`).
    """
    from ..detection import modeling  # noqa: F401  (registers the meta-architectures and backbones configs name)

    return load_kd_config(get_cfg, config_file, opts, "detection")
