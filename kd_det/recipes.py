"""Provenance of every config value: ``kd_det/data/recipes.csv`` and its rendering ``docs/recipes.md``.

Each row config is compared with its *stock recipe*, the nearest ``Base-*.yaml`` in its ``_BASE_``
chain (a method row of a COCO pair: ``Base-<pair>.yaml``; a pair's Base file:
``configs/Base-RCNN-FPN.yaml``, Detectron2's model-zoo recipe; a CIFAR-100 / ImageNet row:
``Base-CIFAR100.yaml`` / ``Base-ImageNet.yaml``; the shapes demo and the digits check alike).
Every hyper-parameter that differs needs one line ``config,key,value,source`` in the csv; the
two classification Base files, which have no stock recipe, need a line for every value they set
themselves. ``python tools/render_recipes.py``
rewrites ``docs/recipes.md`` from the csv; tests/test_recipes.py keeps configs, csv and doc in step.
"""
import csv
import functools
import glob
import json
import os

import yaml

from .config.schema import plain
from .config.yaml_chain import yaml_chain

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CSV = os.path.join(REPO, "kd_det", "data", "recipes.csv")
DOC = os.path.join(REPO, "docs", "recipes.md")
FIELDS = ["config", "key", "value", "source"]

# Not hyper-parameters: row labels, output folders, weights files, the teacher's config file,
# dataset names / folders / sizes, loader workers, evaluation and checkpoint cadence, the model
# class and the architectures (fixed by the row labels, checked by the config tests).
IGNORED_PREFIXES = ("KD.LABEL.", "KD.TEACHER.", "DATASETS.", "DATA.NAME", "DATA.ROOT", "DATA.NUM_CLASSES",
                    "DATA.NUM_WORKERS", "DATALOADER.NUM_WORKERS", "TEST.BATCH_SIZE", "TEST.EVAL_PERIOD", "OUTPUT_DIR",
                    "MODEL.WEIGHTS", "MODEL.ARCH", "MODEL.META_ARCHITECTURE", "MODEL.DEVICE",
                    "SOLVER.CHECKPOINT_PERIOD")
# Model configs shared with Detectron2's model zoo: their differences are recorded through the
# pair Base files that use them.
NOT_ROWS = ("configs/Base-RCNN-FPN.yaml", "configs/Base-RetinaNet.yaml", "configs/COCO-Detection/faster_rcnn_*.yaml",
            "configs/COCO-Detection/retinanet_*.yaml",
            "configs/COCO-InstanceSegmentation/mask_rcnn_*.yaml")
# Sections of docs/recipes.md: (folder prefix, title), in this order.
GROUPS = [
    ("configs/COCO-Detection/distill/R101-R18/", "COCO detection: R-101 -> R-18"),
    ("configs/COCO-Detection/distill/R101-R50/", "COCO detection: R-101 -> R-50"),
    ("configs/COCO-Detection/distill/R50-MV2/", "COCO detection: R-50 -> MobileNetV2"),
    ("configs/COCO-Detection/distill/RT101-RT50/", "COCO detection (RetinaNet): R-101 -> R-50"),
    ("configs/COCO-InstanceSegmentation/distill/R101-R18/", "COCO instance segmentation (Mask R-CNN): R-101 -> R-18"),
    ("configs/COCO-InstanceSegmentation/distill/R101-R50/", "COCO instance segmentation (Mask R-CNN): R-101 -> R-50"),
    ("configs/COCO-InstanceSegmentation/distill/R50-MV2/",
     "COCO instance segmentation (Mask R-CNN): R-50 -> MobileNetV2"),
    ("configs/shapes/", "Shapes (CPU demo, not a paper row)"),
    ("configs/classification/Base-CIFAR100.yaml", "CIFAR-100 recipe (Base-CIFAR100.yaml)"),
    ("configs/classification/cifar100/", "CIFAR-100: {pair}"),
    ("configs/classification/Base-ImageNet.yaml", "ImageNet recipe (Base-ImageNet.yaml)"),
    ("configs/classification/imagenet/", "ImageNet: {pair}"),
    ("configs/classification/digits/", "Digits (CPU check, not a paper row)"),
]


def row_configs():
    """Every config with provenance entries, repository-relative."""
    skip = {os.path.relpath(p, REPO) for pat in NOT_ROWS for p in glob.glob(os.path.join(REPO, pat))}
    paths = (os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "configs", "**", "*.yaml"),
                                                         recursive=True))
    return sorted(p for p in paths if p not in skip)


def _base_chain(path):
    """The ``_BASE_`` files of ``path``, nearest first, repository-relative."""
    return [os.path.relpath(p, REPO) for p, _ in yaml_chain(os.path.join(REPO, path))[1:]]


def stock_of(path):
    """The stock recipe ``path`` is compared with; None for a recipe with no Base of its own."""
    return next((b for b in _base_chain(path) if os.path.basename(b).startswith("Base-")), None)


@functools.lru_cache(maxsize=None)
def _flat(path):
    return flatten(_load(path))


def _load(path):
    full = os.path.join(REPO, path)
    if path.startswith("configs/classification/"):
        from .config.classification import load_cls_config
        return load_cls_config(full)
    from .config.detection import load_config
    return load_config(full)


def fmt(value):
    """Canonical text of a config value, as the csv's value column holds it."""
    return value if isinstance(value, str) else json.dumps(plain(value))


def _flatten(node, prefix=""):
    out = {}
    for k, v in node.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def flatten(cfg):
    """``{dotted key: value}`` of a loaded config, each ``KD.LOSSES`` entry keyed by its tag (both tasks):
    ``KD.LOSSES.<tag>.weight``, ``KD.LOSSES.<tag>.params.<param>``, ``KD.LOSSES.<tag>.inputs.<arg>`` and
    ``KD.LOSSES.<tag>.start_iter`` (only when > 0). ``cfg`` is loaded, so its specs are normalised.
    """
    flat = _flatten(plain(cfg))
    for spec in flat.pop("KD.LOSSES", []):
        entry = {k: spec[k] for k in ("weight", "params", "inputs")}
        entry.update({"start_iter": spec["start_iter"]} if spec["start_iter"] else {})
        flat.update(_flatten(entry, f"KD.LOSSES.{spec['tag']}."))
    return flat


def _own_keys(path):
    with open(os.path.join(REPO, path)) as f:
        raw = yaml.safe_load(f) or {}
    raw.pop("_BASE_", None)
    return set(_flatten(raw))


def differences(path):
    """``{key: canonical value}`` of the hyper-parameters of ``path`` that need an entry."""
    flat = _flat(path)
    stock = stock_of(path)
    if stock is None:
        keys = _own_keys(path)
    else:
        ref = _flat(stock)
        keys = {k for k, v in flat.items() if k not in ref or fmt(ref[k]) != fmt(v)}
    return {k: fmt(flat[k]) for k in sorted(keys) if not k.startswith(IGNORED_PREFIXES)}


def read_entries(path=CSV):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_entries(entries, path=CSV):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, FIELDS, lineterminator="\n")
        w.writeheader()
        w.writerows(entries)


def problems(entries, configs=None):
    """What keeps the csv from matching the configs, one line each (empty: all good).

    Each of ``entries`` must name a row config and a key that differs there from the stock recipe,
    with the config's value and a non-empty source; each differing key of ``configs`` (default:
    every row config) needs an entry.
    """
    rows, seen, out = set(row_configs()), set(), []
    for e in entries:
        where = f"{e['config']}: {e['key']}"
        if (e["config"], e["key"]) in seen:
            out.append(f"{where}: listed twice")
        seen.add((e["config"], e["key"]))
        value = differences(e["config"]).get(e["key"]) if e["config"] in rows else None
        if e["config"] not in rows:
            out.append(f"{where}: no such row config")
        elif value is None:
            out.append(f"{where}: stale, the config has no such key or it equals the stock recipe "
                       f"({stock_of(e['config']) or 'none'}); remove the entry")
        elif value != e["value"]:
            out.append(f"{where}: the config has {value}, the csv {e['value']}")
        if not (e.get("source") or "").strip():
            out.append(f"{where}: empty source")
    for config in sorted(rows) if configs is None else configs:
        out += [f"{config}: {key}: {value} has no entry" for key, value in differences(config).items()
                if (config, key) not in seen]
    return out


def _section(config):
    """(order, title, name of the config in its section)."""
    for i, (prefix, title) in enumerate(GROUPS):
        if config.startswith(prefix):
            if "{pair}" in title:
                pair, name = config[len(prefix):].split("/", 1)
                return i, title.format(pair=pair), name
            return i, title, config[len(prefix):] or os.path.basename(config)
    raise ValueError(f"{config}: no section of docs/recipes.md (kd_det/recipes.py GROUPS)")


def _cell(text):
    return text.replace("|", "\\|").replace("\n", " ")


def render(entries):
    """The text of docs/recipes.md for the csv entries."""
    lines = [
        "# Recipes: every configured value and its source",
        "",
        "<!-- Generated from kd_det/data/recipes.csv by `python tools/render_recipes.py`; do not edit. -->",
        "",
        "Each row config is compared with its stock recipe, the nearest `Base-*.yaml` in its `_BASE_`",
        "chain: a COCO method row with `Base-<pair>.yaml` (model, teacher and schedule of the pair), a",
        "pair's Base file with `configs/Base-RCNN-FPN.yaml` (Detectron2's model-zoo recipe), a",
        "CIFAR-100 / ImageNet row with `Base-CIFAR100.yaml` / `Base-ImageNet.yaml`, whose own values are",
        "listed once in their sections (the shapes demo and the digits check alike). Every value that",
        "differs is listed with its source: a paper",
        "(section, equation, table), a reference repository and file, or \"our choice\" with the reason.",
        "Row labels, output folders, weights files, dataset names and the architectures (named by the",
        "row labels) are not listed. Losses are keyed by the tag of their `KD.LOSSES` entry (its loss name",
        "unless the entry sets `tag`): `KD.LOSSES.<tag>.weight` / `.params.<p>` / `.inputs.<arg>` /",
        "`.start_iter`, the same keys that override one entry on the command line.",
        "",
        "Papers: CKD = Zhu et al., \"CKD: Contrastive Knowledge Distillation from A Sample-wise",
        "Perspective\"; DCD = Giakoumoglou & Stathaki, \"Discriminative and Consistent Representation",
        "Distillation\" (v2, with COCO); MSD = Wang et al., \"Contrastive Representation Distillation via",
        "Multi-Scale Feature Decoupling\". Reference code: megvii-research/mdistiller (DKD),",
        "dvlab-research/ReviewKD, HobbitLong/RepDistiller (CRD), giakoumoglou/distillers (DCD),",
        "twangnh/Distilling-Object-Detectors (FGFI).",
    ]
    current = None
    for e in sorted(entries, key=lambda e: (_section(e["config"]), e["key"])):
        _, title, name = _section(e["config"])
        if title != current:
            current = title
            lines += ["", f"## {title}", "", "| Config | Key | Value | Source |", "|---|---|---|---|"]
        lines.append(f"| {_cell(name)} | `{e['key']}` | `{_cell(e['value'])}` | {_cell(e['source'])} |")
    return "\n".join(lines) + "\n"
