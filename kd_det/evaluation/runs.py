"""Read a run directory's own outputs into one summary dict per run.

Two kinds of runs are understood; their ``config.yaml`` says which (:func:`config_task`: the keys only
one task's schema has, e.g. ``KD.TEACHER.CONFIG_FILE`` vs ``KD.TEACHER.ARCH``), and both keep their
labels in ``KD.LABEL.*`` (an older run's keys are moved there first, :func:`kd_det.config.migration.upgrade_dict`):

* detection (``tools/train_net.py``, a Detectron2 OUTPUT_DIR): ``config.yaml``, ``evaluation.json``
  (``results: {dataset: {"bbox": {AP...}[, "segm": {AP...}]}}``, segm for Mask R-CNN runs) and ``metrics.json``
  (one JSON object per line: ``iteration``, ``total_loss``, ``loss_*``);
* classification (``tools/train_cls.py``): ``config.yaml`` and ``metrics.json`` (one record per
  epoch: ``epoch``, ``train/loss_*``, ``val/top1``, ``val/top5``, ``val/best_top1``).

A run is never dropped: whatever is wrong with it ends up in its ``status`` ("complete",
"incomplete" or "missing") and a one-sentence ``note``.
"""
import json
import os

from ..config.migration import upgrade_dict
from ..core.run_info import RUN_INFO, read_run_info, write_run_info  # noqa: F401  (read by the reports)
from ..config.schema import method_label

__all__ = ["COMPLETE", "INCOMPLETE", "MISSING", "DET_METRICS", "SEGM_METRICS", "CLS_METRICS", "RUN_INFO",
           "read_run", "read_metrics", "loss_curves", "write_run_info", "read_run_info", "scale_label",
           "config_task", "config_labels"]

COMPLETE, INCOMPLETE, MISSING = "complete", "incomplete", "missing"
# Usual metrics per task, in table order (percent). A detection run's metrics are whatever its evaluation.json
# holds (COCO: these six; VOC: AP, AP50, AP75); the report orders these first and adds any others after them.
DET_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
# Mask AP of a Mask R-CNN run (evaluation.json's "segm"), read as "mask_<name of DET_METRICS>".
SEGM_METRICS = tuple(f"mask_{m}" for m in DET_METRICS)
CLS_METRICS = ("top1", "top5", "best_top1")
# Detectron2 dataset name -> the dataset column of kd_det/data/paper_results.csv.
DATASET_ALIASES = {"coco_2017_val": "coco2017_val", "coco_2017_test-dev": "coco2017_test-dev"}


def scale_label(info):
    """"<processes> x <images per process>" of every distinct launch of a run ("-" when unknown), e.g. "4 x 2"."""
    if not info:
        return "-"
    launches = info.get("launches") or [info]
    seen = dict.fromkeys(f"{x.get('world_size', '?')} x {x.get('images_per_process', '?')}" for x in launches)
    return ", then ".join(seen)


def read_metrics(path):
    """Records of a ``metrics.json`` (one JSON object per line); unparsable lines are skipped.

    Returns:
        (list of dict, int): the records and how many lines could not be parsed (e.g. a
        line cut short by a killed run).
    """
    records, bad = [], 0
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                bad += 1
                continue
            if isinstance(rec, dict):
                records.append(rec)
            else:
                bad += 1
    return records, bad


def loss_curves(run):
    """Training curves of a run: {name: ([x...], [y...])} for the total loss and each loss term.

    Detection: ``total_loss`` and every ``loss_*`` against ``iteration``; a later record of the
    same iteration (a resumed run) replaces the earlier one. Classification: every
    ``train/loss_*`` (``loss_total`` included) against ``epoch``.
    """
    xkey, prefix = ("epoch", "train/") if run.get("task") == "classification" else ("iteration", "")
    by_x = {}
    for rec in run.get("records") or []:
        if xkey not in rec:
            continue
        vals = {k[len(prefix):]: float(v) for k, v in rec.items()
                if k.startswith(prefix) and isinstance(v, (int, float))
                and (k[len(prefix):] == "total_loss" or k[len(prefix):].startswith("loss_"))}
        if vals:
            by_x.setdefault(rec[xkey], {}).update(vals)
    curves = {}
    for x in sorted(by_x):
        for name, v in by_x[x].items():
            xs, ys = curves.setdefault(name, ([], []))
            xs.append(x)
            ys.append(v)
    return curves


def _load_yaml(path):
    import yaml

    with open(path) as f:
        data = yaml.safe_load(f)
    return data if isinstance(data, dict) else {}


def _get(cfg, dotted, default=None):
    node = cfg
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return default
        node = node[key]
    return node


def config_task(cfg):
    """"detection" or "classification" from the keys only that task's config has (KD.TEACHER.CONFIG_FILE /
    DATASETS vs KD.TEACHER.ARCH / DATA), for a loaded config's dump or a raw yaml chain; None if it has neither."""
    teacher = _get(cfg, "KD.TEACHER") or {}
    if "ARCH" in teacher or "DATA" in cfg:
        return "classification"
    if "CONFIG_FILE" in teacher or "DATASETS" in cfg:
        return "detection"
    return None


def config_labels(cfg, task):
    """(dataset, teacher, student, method, derived?) of a config dict, in the papers' vocabulary.

    Every label is ``KD.LABEL.*``; an empty one is derived ("derived?" is then True): the dataset from
    DATASETS.TEST[0] (detection) / DATA.NAME (classification), the student from the backbone / MODEL.ARCH,
    the teacher from KD.TEACHER.CONFIG_FILE / KD.TEACHER.ARCH, the method from KD.LOSSES ("student" without).
    """
    dataset, teacher, student, method = (_get(cfg, f"KD.LABEL.{k}", "") or ""
                                         for k in ("DATASET", "TEACHER", "STUDENT", "METHOD"))
    derived = not (method and (teacher if method == "teacher" else student))
    if task == "classification":
        dataset = dataset or _cls_dataset(cfg)
        student = student or _get(cfg, "MODEL.ARCH", "") or ""
        teacher = teacher or _get(cfg, "KD.TEACHER.ARCH", "") or ""
    else:
        tests = _get(cfg, "DATASETS.TEST") or [""]
        dataset = dataset or DATASET_ALIASES.get(tests[0], tests[0])
        if not student:
            backbone = str(_get(cfg, "MODEL.BACKBONE.NAME", ""))
            student = "MV2" if "mobilenet" in backbone.lower() else f"R{_get(cfg, 'MODEL.RESNETS.DEPTH', '')}"
        if not teacher and _get(cfg, "KD.TEACHER.CONFIG_FILE"):
            teacher = os.path.splitext(os.path.basename(_get(cfg, "KD.TEACHER.CONFIG_FILE")))[0]
    if not method:
        losses = _get(cfg, "KD.LOSSES") or []
        method = method_label(losses) if losses else "student"
    return dataset, teacher, student, method, derived


def _read_detection(out, cfg, run_dir):
    out["dataset"] = ((_get(cfg, "DATASETS.TEST") or [None])[0]) or ""
    max_iter = _get(cfg, "SOLVER.MAX_ITER")
    out["max_iter"] = max_iter
    trained = max((r["iteration"] for r in out["records"] if "iteration" in r and "total_loss" in r), default=None)
    ev_path = os.path.join(run_dir, "evaluation.json")
    if not os.path.isfile(ev_path):
        done = f"trained to iteration {trained + 1} of {max_iter}" if trained is not None else "not trained"
        return INCOMPLETE, f"{done}; no evaluation.json (not evaluated yet)"
    try:
        with open(ev_path) as f:
            ev = json.load(f)
        results = ev["results"]
    except (ValueError, KeyError, TypeError):
        return INCOMPLETE, f"{ev_path} is not a valid evaluation record"
    dataset = out["dataset"] if out["dataset"] in results else (sorted(results)[0] if results else "")
    bbox = (results.get(dataset) or {}).get("bbox") or {}
    if not bbox:
        return INCOMPLETE, f"{ev_path} holds no bbox results"
    out["dataset"] = dataset
    out["iteration"] = ev.get("iteration")
    segm = results[dataset].get("segm") or {}
    out["metrics"] = {k: v for k, v in bbox.items() if not k.startswith("AP-") and isinstance(v, (int, float))}
    out["metrics"].update({f"mask_{k}": v for k, v in segm.items()
                           if not k.startswith("AP-") and isinstance(v, (int, float))})
    out["per_category"] = {k[3:]: v for k, v in bbox.items() if k.startswith("AP-")}
    if ev.get("mode") == "eval-only":
        return COMPLETE, f"evaluation only of {ev.get('weights')}"
    it = out["iteration"]
    if isinstance(it, int) and isinstance(max_iter, int) and it + 1 < max_iter:
        return INCOMPLETE, f"evaluated at iteration {it} of {max_iter} (training did not finish)"
    return COMPLETE, ""


def _cls_dataset(cfg):
    """DATA.NAME, unless the class count shows other data in that format (e.g. digits as CIFAR pickles)."""
    name, classes = _get(cfg, "DATA.NAME") or "", _get(cfg, "DATA.NUM_CLASSES")
    known = {"cifar100": 100, "imagenet": 1000}
    if name in known and classes not in (None, known[name]):
        return f"{name}-format data, {classes} classes"
    return name


def _read_classification(out, cfg):
    epochs = _get(cfg, "SOLVER.EPOCHS")
    out["max_iter"] = epochs
    evals = [r for r in out["records"] if "val/top1" in r]
    last_epoch = max((r.get("epoch", 0) for r in out["records"]), default=0)
    if not evals:
        return INCOMPLETE, f"trained {last_epoch} of {epochs} epochs; no validation top-1 in metrics.json"
    last = evals[-1]
    out["iteration"] = last.get("epoch")
    out["metrics"] = {"top1": last["val/top1"], "top5": last.get("val/top5"),
                      "best_top1": last.get("val/best_top1", last["val/top1"])}
    out["metrics"] = {k: v for k, v in out["metrics"].items() if v is not None}
    if isinstance(epochs, int) and last_epoch < epochs:
        return INCOMPLETE, f"trained {last_epoch} of {epochs} epochs (last evaluation at epoch {out['iteration']})"
    return COMPLETE, ""


def read_run(run_dir, name=None):
    """Summary of one run directory.

    Args:
        run_dir: a detection OUTPUT_DIR or a classification OUTPUT_DIR.
        name: display name (default: the directory's base name).

    Returns:
        dict with "run", "dir", "status" (complete / incomplete / missing), "note", "task",
        "dataset", "paper_dataset", "teacher", "student", "method", "labels_derived",
        "iteration", "max_iter", "metrics" ({AP...} or {top1, top5, best_top1}),
        "per_category" ({category: AP}), "records" (metrics.json), "config", "seed" (the config's
        SEED, None without one), "run_info" (``run_info.json``, None without one), "world_size",
        "images_per_process" (its latest launch) and "scale" (e.g. "4 x 2": processes x images per
        process of each distinct launch, "-" when unknown).
        ``bbox`` mirrors "metrics" for detection runs (kept for older callers).
    """
    out = {"run": name or os.path.basename(os.path.normpath(run_dir)), "dir": run_dir, "status": MISSING,
           "note": "", "task": None, "dataset": "", "teacher": "", "student": "", "method": "",
           "labels_derived": False, "iteration": None, "max_iter": None, "metrics": {}, "per_category": {},
           "records": [], "config": {}, "bbox": {}, "seed": None, "run_info": None, "world_size": None,
           "images_per_process": None, "scale": "-"}
    if not os.path.isdir(run_dir):
        out["note"] = f"{run_dir} is not a directory"
        return out
    files = set(os.listdir(run_dir))
    if not files & {"config.yaml", "metrics.json", "evaluation.json"}:
        out["note"] = f"{run_dir} holds no config.yaml, metrics.json or evaluation.json"
        return out
    notes = []
    if "config.yaml" in files:
        try:
            out["config"] = _load_yaml(os.path.join(run_dir, "config.yaml"))
        except Exception as e:  # noqa: BLE001 - any unreadable yaml is reported, not raised
            notes.append(f"config.yaml is unreadable ({type(e).__name__})")
    if "metrics.json" in files:
        out["records"], bad = read_metrics(os.path.join(run_dir, "metrics.json"))
        if bad:
            notes.append(f"{bad} unparsable line(s) in metrics.json skipped")
    cfg = out["config"] = upgrade_dict(out["config"])
    seed = cfg.get("SEED")
    out["seed"] = seed if isinstance(seed, int) and not isinstance(seed, bool) else None
    if RUN_INFO in files:
        out["run_info"] = read_run_info(os.path.join(run_dir, RUN_INFO))
        if out["run_info"] is None:
            notes.append(f"{RUN_INFO} is unreadable")
    info = out["run_info"] or {}
    out["world_size"], out["images_per_process"] = info.get("world_size"), info.get("images_per_process")
    out["scale"] = scale_label(out["run_info"])
    out["task"] = config_task(cfg) or ("classification" if any("epoch" in r for r in out["records"])
                                       else "detection")  # no config.yaml: the records say
    paper_dataset, out["teacher"], out["student"], out["method"], out["labels_derived"] = config_labels(
        cfg, out["task"])
    if out["task"] == "classification":
        out["dataset"] = paper_dataset
        status, note = _read_classification(out, cfg)
    else:
        status, note = _read_detection(out, cfg, run_dir)
        out["bbox"] = dict(out["metrics"], **{f"AP-{k}": v for k, v in out["per_category"].items()})
    if not cfg:  # Detectron2 and train_cls.py always write one: without it the run cannot be placed
        out["teacher"] = out["student"] = out["method"] = ""
        status, note = INCOMPLETE, "; ".join(n for n in (note, "no readable config.yaml: labels unknown") if n)
    out["status"] = status
    out["note"] = "; ".join([n for n in [note] + notes if n])
    label = _get(cfg, "KD.LABEL.DATASET") or out["dataset"]
    out["paper_dataset"] = DATASET_ALIASES.get(label, label)
    return out

