"""Evaluators chosen by a dataset's ``evaluator_type``, as Detectron2's train_net does, through one registry.

``EVALUATORS`` maps a type to ``builder(cfg, dataset_name, output_dir) -> DatasetEvaluator``:

* ``coco``: kd_det's :class:`~kd_det.evaluation.evaluator.COCOBoxEvaluator` (``TEST.EVAL_BACKEND``);
* ``pascal_voc``: :class:`~kd_det.evaluation.voc_evaluator.VOCBoxEvaluator`.

:func:`evaluator_type` reads the type from the metadata (an explicit ``evaluator_type``; else a
``json_file`` means coco; else ``dirname`` / ``split`` / ``year`` mean pascal_voc, what
``register_pascal_voc`` sets). :func:`check_evaluator_types` runs in ``setup_datasets``, before the
first step, so a test set kd_det cannot score stops the run at start rather than after training.
A new type is one ``@register_evaluator("name")`` function.
"""
from detectron2.data import MetadataCatalog

from ..errors import DatasetError

__all__ = ["EVALUATORS", "build_evaluator", "check_evaluator_types", "evaluator_type", "register_evaluator"]

EVALUATORS = {}
# Supported in Detectron2 but refused here, with the reason (one sentence ending each refusal).
_REFUSED = {"lvis": "LVIS AP needs the `lvis` package and its federated rules (neg_category_ids, "
                    "not_exhaustive_category_ids, 300 detections per image), which kd_det does not ship: "
                    "the COCO evaluator would give a wrong number"}


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


def check_evaluator_types(names):
    """Refuse, in one sentence, a test set whose evaluator kd_det cannot build."""
    supported = sorted(EVALUATORS)
    listed = ", ".join(supported[:-1]) + " and " + supported[-1] if len(supported) > 1 else supported[0]
    for name in names:
        kind = evaluator_type(name)
        if kind in EVALUATORS:
            continue
        why = f": {_REFUSED[kind]}" if kind in _REFUSED else ""
        said = f"evaluator type {kind!r}" if kind else "no evaluator type (neither json_file nor VOC metadata)"
        raise DatasetError(f"Dataset '{name}' has {said}; kd_det evaluates {listed} datasets{why}.")


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
