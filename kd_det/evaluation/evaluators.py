"""Evaluators chosen by a dataset's ``evaluator_type``, as Detectron2's train_net does, through one registry.

``EVALUATORS`` maps a type to ``builder(cfg, dataset_name, output_dir) -> DatasetEvaluator``:

* ``coco``: kd_det's :class:`~kd_det.evaluation.evaluator.COCOBoxEvaluator` (``TEST.EVAL_BACKEND``);
* ``pascal_voc``: :class:`~kd_det.evaluation.voc_evaluator.VOCBoxEvaluator`;
* ``lvis``: :class:`~kd_det.evaluation.lvis_evaluator.LVISBoxEvaluator` (Detectron2's ``LVISEvaluator``: LVIS's
  federated rules and 300 detections per image), which needs the ``lvis`` package (``requirements/lvis.txt``).

:func:`evaluator_type` reads the type from the metadata (an explicit ``evaluator_type``; else a
``json_file`` means coco; else ``dirname`` / ``split`` / ``year`` mean pascal_voc, what
``register_pascal_voc`` sets). :func:`check_evaluator_types` runs in ``setup_datasets``, before the
first step, so a test set kd_det cannot score stops the run at start rather than after training;
:func:`check_packages` refuses there a dataset whose loader or evaluator needs a package that cannot be
imported (LVIS without ``lvis``), for training sets too.
A new type is one ``@register_evaluator("name")`` function.
"""
import importlib

from detectron2.data import MetadataCatalog

from ..errors import DatasetError

__all__ = ["EVALUATORS", "build_evaluator", "check_evaluator_types", "check_packages", "evaluator_type",
           "register_evaluator"]

EVALUATORS = {}
# The package a type's loader and evaluator import, and how to install it. `lvis` goes in without its
# declared dependencies: the ones it imports (NumPy, pycocotools, matplotlib, cv2) are kd_det's own, and
# its opencv-python would overwrite opencv-python-headless's cv2 with a build that needs libGL.
_PACKAGES = {"lvis": ("lvis", "pip install --no-deps -r requirements/lvis.txt")}


def register_evaluator(name):
    """Decorator: register ``builder(cfg, dataset_name, output_dir)`` for ``evaluator_type == name``."""
    def deco(builder):
        EVALUATORS[name] = builder
        return builder
    return deco


def evaluator_type(dataset_name):
    """The evaluator type of a registered dataset (see module doc); None if nothing says."""
    meta = MetadataCatalog.get(dataset_name)
    explicit = getattr(meta, "evaluator_type", None)
    if explicit:
        return explicit
    if getattr(meta, "json_file", None):
        return "coco"
    if any(hasattr(meta, k) for k in ("dirname", "split", "year")):
        return "pascal_voc"
    return None


def check_packages(names):
    """Refuse, in one sentence naming the package, a dataset whose type needs a package that cannot be imported."""
    for name in names:
        kind = evaluator_type(name)
        if kind not in _PACKAGES:
            continue
        module, install = _PACKAGES[kind]
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise DatasetError(f"Dataset '{name}' has evaluator type {kind!r}, whose loader and evaluator need the "
                               f"`{module}` package, which cannot be imported ({e}); install it with "
                               f"`{install}`.") from None


def check_evaluator_types(names):
    """Refuse, in one sentence, a test set whose evaluator kd_det cannot build (or whose package is missing)."""
    supported = sorted(EVALUATORS)
    listed = ", ".join(supported[:-1]) + " and " + supported[-1] if len(supported) > 1 else supported[0]
    for name in names:
        kind = evaluator_type(name)
        if kind not in EVALUATORS:
            said = f"evaluator type {kind!r}" if kind else "no evaluator type (neither json_file nor VOC metadata)"
            raise DatasetError(f"Dataset '{name}' has {said}; kd_det evaluates {listed} datasets.")
    check_packages(names)


def build_evaluator(cfg, dataset_name, output_dir):
    """The evaluator of ``dataset_name`` by its type (checked earlier by :func:`check_evaluator_types`)."""
    check_evaluator_types([dataset_name])
    return EVALUATORS[evaluator_type(dataset_name)](cfg, dataset_name, output_dir)


@register_evaluator("coco")
def _coco(cfg, dataset_name, output_dir):
    from .evaluator import COCOBoxEvaluator

    return COCOBoxEvaluator(dataset_name, cfg.TEST.EVAL_BACKEND, output_dir)


@register_evaluator("pascal_voc")
def _pascal_voc(cfg, dataset_name, output_dir):
    from .voc_evaluator import VOCBoxEvaluator

    return VOCBoxEvaluator(dataset_name)


@register_evaluator("lvis")
def _lvis(cfg, dataset_name, output_dir):
    from .lvis_evaluator import LVISBoxEvaluator

    return LVISBoxEvaluator(dataset_name, output_dir=output_dir)
