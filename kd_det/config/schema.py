"""The distillation config both tasks share: the ``KD.*`` keys, the loss-spec schema and its one validator.

:func:`add_kd_config` adds the keys detection (``kd_det/config/detection.py``) and classification
(``kd_det/config/classification.py``) share; each task then adds its own. ``KD.LOSSES`` is a list of
loss specs, in yaml one flow map per line with its source::

    KD:
      LOSSES:
        - {name: dcd, weight: 1.0, params: {alpha: 0.5, proj_dim: 128}}  # DCD paper, Sec. 4.1
        - {name: kd, weight: 1.0, params: {temperature: 1.0}}            # lambda 1 (Eq. 7)

Spec keys (:data:`kd_det.losses.combine.SPEC_KEYS`, checked by :func:`kd_det.losses.combine.check_spec`):
``name`` (required, a :data:`kd_det.losses.LOSS_REGISTRY` name), ``weight`` (>= 0, default 1.0), ``params``
(constructor parameters, default {}), ``inputs`` (loss argument -> provided tensor, default {}), ``tag`` (the
entry's unique name, default its loss name: the logged term is ``loss_<tag>``, so one loss can appear twice under
two tags) and ``start_iter`` (detection only, int >= 0, default 0: the term counts from that iteration on).

Both loaders (:func:`kd_det.config.detection.load_config`, :func:`kd_det.config.classification.load_cls_config`)
run: file merged -> :func:`prepare_kd` (``KD.LOSSES.<tag>.<field>`` overrides applied) -> the other overrides merged -> :func:`finish_kd` (:func:`loss_specs`
validates and normalises the specs; the method label). Nothing here imports Detectron2.
"""
import math
import os
import re
from collections.abc import Mapping

import yaml

from ..errors import ConfigError
from ..losses.combine import spec_tag
from .yaml_chain import chain_value, yaml_chain

__all__ = ["add_kd_config", "load_kd_config", "loss_specs", "method_label", "flow", "plain", "prepare_kd",
           "finish_kd", "old_key_error", "OLD_CLASSIFICATION_KEYS", "OLD_DETECTION_KEYS"]

#: The old detection form's parallel keys (removed in 0.2; tools/migrate_configs.py rewrites files that use them).
OLD_DETECTION_KEYS = ("KD.LOSS_WEIGHTS", "KD.LOSS_START_ITERS", "KD.PARAMS", "KD.INPUTS")
#: Method labels of the plain reference runs, which distil nothing.
ROLE_METHODS = ("student", "teacher")
#: Keys of the old classification config -> where they live now (tools/migrate_configs.py rewrites files).
OLD_CLASSIFICATION_KEYS = {"ROW.DATASET": "KD.LABEL.DATASET", "ROW.TEACHER": "KD.LABEL.TEACHER",
                           "ROW.STUDENT": "KD.LABEL.STUDENT", "ROW.METHOD": "KD.LABEL.METHOD",
                           "ROW.PAPER_TOP1": "KD.LABEL.PAPER_TOP1", "TEACHER.ARCH": "KD.TEACHER.ARCH",
                           "TEACHER.WEIGHTS": "KD.TEACHER.WEIGHTS", "SOLVER.AMP": "SOLVER.AMP.ENABLED"}
_EXAMPLE = "{name: dkd, weight: 1.0, params: {beta: 0.5}}"
_OVERRIDE_FORMS = "KD.LOSSES.<tag>.weight, .start_iter, .params.<param> or .inputs.<arg>"


def add_kd_config(cfg):
    """Add the distillation keys both tasks share (``KD.*``) to ``cfg`` (any fvcore / yacs CfgNode) in place."""
    node = type(cfg)
    cfg.KD = node()
    # Modules of the user's own packages to import before this config is merged, e.g. ["my_kd_ext.losses"]
    # (a module that calls kd_det.losses.register_loss adds a loss usable in KD.LOSSES; docs/extending.md).
    cfg.KD.CUSTOM_IMPORTS = []
    cfg.KD.TEACHER = node()
    # Teacher weights, a local file (detection: Detectron2 .pkl / .pth; classification: .pth); "" = no teacher.
    cfg.KD.TEACHER.WEIGHTS = ""
    # The teacher's own inference precision: "" = the student's (float32, or SOLVER.AMP's autocast); "float32";
    # "bfloat16" / "float16" (CUDA only) = autocast for the teacher alone, outputs cast back to float32. A choice
    # for speed, not from the papers (they run the teacher in the student's precision): docs/reliability.md.
    cfg.KD.TEACHER.PRECISION = ""
    # Teacher weights in channels_last (NHWC) memory format, which oneDNN / cuDNN convolutions prefer.
    cfg.KD.TEACHER.CHANNELS_LAST = False
    # Distillation terms: a list of specs {name, weight, params, inputs, tag, start_iter} (kd_det/config/schema.py),
    # in yaml one flow map per line, e.g. - {name: dkd, weight: 1.0, params: {beta: 0.5}}.
    cfg.KD.LOSSES = []
    # Labels of the paper-table row a run reproduces (dataset x teacher x student x method), used by the reports.
    cfg.KD.LABEL = node()
    # Dataset column of kd_det/data/paper_results.csv; "" = detection: DATASETS.TEST[0], classification: DATA.NAME.
    cfg.KD.LABEL.DATASET = ""
    # Teacher label, e.g. "R101" / "resnet32x4" ("" for a run without teacher).
    cfg.KD.LABEL.TEACHER = ""
    # Student label, e.g. "R18" / "resnet8x4".
    cfg.KD.LABEL.STUDENT = ""
    # Method label, e.g. "DCD+ReviewKD"; "teacher" / "student" for the plain reference runs. Unset in the
    # file that sets KD.LOSSES (or by the command line that does): follows the losses, e.g. DKD, DCD+KD.
    cfg.KD.LABEL.METHOD = ""
    return cfg


def old_key_error(error, where):
    """A ConfigError for a yacs merge ``error`` that names a key of an old config form, saying what replaced it:
    a classification key (``ROW.METHOD``, ``TEACHER``, ``SOLVER.AMP``, ...) or a key of the old detection form of
    ``KD.LOSSES`` (``KD.LOSS_WEIGHTS``, ``KD.PARAMS.<name>...``, removed in 0.2); None for any other error."""
    found = re.search(r"key: ([\w.]+)", str(error.args[0] if error.args else error))
    key = found.group(1) if found else ""
    if any(key == old or key.startswith(old + ".") for old in OLD_DETECTION_KEYS):
        return ConfigError(f"{where}: {key} belongs to the old detection form of KD.LOSSES, removed in kd_det 0.2; "
                           f"write one spec per loss, e.g. KD.LOSSES: [{_EXAMPLE}] (python tools/migrate_configs.py "
                           "rewrites old config files).")
    new = OLD_CLASSIFICATION_KEYS.get(key) or {"ROW": "KD.LABEL", "TEACHER": "KD.TEACHER"}.get(key)
    if not new:
        return None
    return ConfigError(f"{where}: {key} is the old classification key of {new}; write {new} (python "
                       "tools/migrate_configs.py rewrites old config files).")


def plain(value):
    """CfgNode / mapping / tuple (nested) -> plain dicts and lists."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def flow(value):
    """``value`` as one line of yaml flow style, e.g. ``{name: dkd, weight: 1.0, params: {beta: 0.5}}``."""
    text = yaml.safe_dump([plain(value)], default_flow_style=True, sort_keys=False, width=math.inf).strip()
    return text[1:-1]  # the value inside a one-item list, so that scalars dump without a document end


def loss_specs(specs, task="detection"):
    """Validate ``KD.LOSSES`` and return it normalised: one plain dict per entry with every spec key.

    Each entry's own keys are checked by :func:`kd_det.losses.combine.check_spec` (also DistillLoss's check); here
    come what only a config needs: no ``start_iter`` in classification, tags that name an override, no tag twice.

    Args:
        specs: the list of spec mappings (``cfg.KD.LOSSES``).
        task: "detection" or "classification" (which refuses a ``start_iter`` > 0: its epoch loop ramps the
            terms in with ``KD.WARMUP_EPOCHS`` instead).

    Raises:
        ConfigError: one sentence naming the entry and the key or value at fault.
    """
    from ..losses.combine import check_spec

    if isinstance(specs, (str, Mapping)) or not isinstance(specs, (list, tuple)):
        raise ConfigError(f"KD.LOSSES is {specs!r}; it must be a list of loss specs, e.g. [{_EXAMPLE}].")
    out, seen = [], {}
    for i, spec in enumerate(specs):
        try:
            spec = check_spec(spec, i, "KD.LOSSES")
        except ValueError as e:
            hint = (" (loss names alone are the old detection form of KD.LOSSES, removed in kd_det 0.2; python "
                    "tools/migrate_configs.py rewrites old config files)") if isinstance(spec, str) else ""
            raise ConfigError(f"{str(e)[:-1]}{hint}.") from None
        name, tag, start = spec["name"], spec["tag"], spec["start_iter"]
        where = f"KD.LOSSES: {tag}:"
        if start and task == "classification":
            raise ConfigError(f"KD.LOSSES entry {i} ({name!r}) sets start_iter {start}, which classification "
                              "training does not support; remove it or use KD.WARMUP_EPOCHS.")
        if not tag.replace("_", "").isalnum() or not tag.isascii():
            raise ConfigError(f"{where} spec key 'tag' must be one word of letters, digits and underscores (it names "
                              "the logged term loss_<tag> and the override KD.LOSSES.<tag>.weight).")
        if tag in seen:
            raise ConfigError(f"KD.LOSSES entries {seen[tag]} and {i} share the tag {tag!r}; give one of them its own "
                              f"tag (e.g. tag: {tag}_2) so that each logs its own loss_<tag>.")
        seen[tag] = i
        out.append({**spec, "params": plain(spec["params"]), "inputs": plain(spec["inputs"])})
    return out


def method_label(losses):
    """Method label of a set of losses, as the papers write it: tags joined with "+", e.g. "DKD", "DCD+KD".

    ``losses``: spec dicts (or plain names, as old detection configs list them); a tag that is a loss name
    takes the papers' spelling (:func:`kd_det.losses.loss_labels`, e.g. ReviewKD), any other is upper-cased.
    """
    from ..losses import loss_labels

    names = loss_labels()
    return "+".join(dict.fromkeys(names.get(t, t.upper()) for t in map(spec_tag, losses)))


def _apply_override(cfg, key, value):
    """One ``KD.LOSSES`` / ``KD.LOSSES.<tag>.<field>`` override applied to ``cfg.KD.LOSSES``; False if ``key`` is
    none of them."""
    kd, decode = cfg.KD, type(cfg)._decode_cfg_value
    parts = key.split(".")
    if key == "KD.LOSSES":
        specs = decode(value)
        kd.LOSSES = list(specs) if isinstance(specs, (list, tuple)) else specs
        return True
    if parts[:2] != ["KD", "LOSSES"]:
        return False
    specs = [dict(s) if isinstance(s, Mapping) else s for s in kd.LOSSES]
    tags = [spec_tag(s) for s in specs]
    tag, field, sub = (parts[2:] + [None, None])[:2] + [parts[4:]]
    if tag not in tags:
        raise ConfigError(f"Override {key}: no KD.LOSSES entry has the tag {tag!r}; the tags are "
                          f"{', '.join(tags) or 'none (KD.LOSSES is empty)'}.")
    spec = specs[tags.index(tag)]
    if field in ("weight", "start_iter") and not sub:
        spec[field] = decode(value)
    elif field in ("params", "inputs") and len(sub) <= 1:
        decoded = decode(value)
        spec[field] = {**plain(spec.get(field) or {}), sub[0]: decoded} if sub else plain(decoded)
    else:
        raise ConfigError(f"Override {key} names no field of a loss entry; use {_OVERRIDE_FORMS}.")
    kd.LOSSES = specs
    return True


def prepare_kd(cfg, opts):
    """After the file merge, before the other overrides: ``KD.LOSSES`` (whole list) and ``KD.LOSSES.<tag>.weight`` /
    ``.start_iter`` / ``.params.<param>`` / ``.inputs.<arg>`` applied to ``cfg.KD.LOSSES`` in their order.

    Args:
        cfg: the config, its file already merged.
        opts: the ``KEY VALUE`` list of the command line.

    Returns:
        the other overrides, for yacs' ``merge_from_list``.
    """
    rest = []
    for key, value in zip(opts[::2], opts[1::2]):
        if not _apply_override(cfg, key, value):
            rest += [key, value]
    return rest


def _level(chain, opts, dotted):
    """Where ``dotted`` is set last: 0 = the command line, 1 = the file itself, 2 = its _BASE_, ...; inf = nowhere."""
    return 0 if dotted in opts[::2] else chain_value(chain, dotted)[0]


#: The keys that say which data a run uses (not where it lives: DATA.ROOT moves the same data too).
DATA_KEYS = {"detection": ("DATASETS.TRAIN", "DATASETS.TEST"), "classification": ("DATA.NAME", "DATA.NUM_CLASSES")}
#: Class count of the classification data sets the paper tables use.
PAPER_CLASSES = {"cifar100": 100, "imagenet": 1000}


def data_label(cfg, task):
    """The name of the data a config uses: detection DATASETS.TEST[0] (else TRAIN[0]); classification the class
    folders' name for DATA.NAME "imagenet" (folders), else DATA.NAME, with the class count when it is not the
    paper data set's (e.g. "cifar100-format data, 10 classes")."""
    if task == "detection":
        return (list(cfg.DATASETS.TEST) or list(cfg.DATASETS.TRAIN) or [""])[0]
    name = os.path.basename(os.path.normpath(cfg.DATA.ROOT)) if cfg.DATA.NAME == "imagenet" else cfg.DATA.NAME
    if PAPER_CLASSES.get(name, cfg.DATA.NUM_CLASSES) != cfg.DATA.NUM_CLASSES:
        return f"{name}-format data, {cfg.DATA.NUM_CLASSES} classes"
    return name


def _dataset_label_follows_data(cfg, chain, opts, task):
    """``KD.LABEL.DATASET`` names the row's data; where the data keys are set later (a user's config over a row
    config, the command line over a file) and the label is not set there too, it becomes :func:`data_label`, so
    a run on other data is reported under its own name, with no paper number beside it."""
    if cfg.KD.LABEL.DATASET and min(_level(chain, opts, k) for k in DATA_KEYS[task]) < _level(
            chain, opts, "KD.LABEL.DATASET"):
        cfg.KD.LABEL.DATASET = data_label(cfg, task)


def finish_kd(cfg, config_file, opts, task):
    """After every merge: ``KD.LOSSES`` validated and normalised (:func:`loss_specs`), the labels settled.

    The dataset label follows the data (:func:`_dataset_label_follows_data`).

    The method label belongs to the losses it was written with: where ``KD.LOSSES`` is set later than
    ``KD.LABEL.METHOD`` (in a file over its ``_BASE_``, on the command line over the file), or the label is
    empty, the label follows the losses (:func:`method_label`), so a DKD config on top of a student config
    is not labelled "student". A "student" / "teacher" label set together with losses is refused.

    Raises:
        ConfigError: a bad spec, or a reference-run label on a distilled run.
    """
    from ..core import resolve_teacher_mode

    resolve_teacher_mode("cuda", cfg.KD.TEACHER.PRECISION)  # the value's name; the device is checked at build
    specs = loss_specs(cfg.KD.LOSSES, task)
    cfg.KD.LOSSES = specs
    chain = yaml_chain(config_file) if config_file else []
    _dataset_label_follows_data(cfg, chain, opts, task)
    if not specs:
        return cfg
    method = cfg.KD.LABEL.METHOD
    method_at, losses_at = _level(chain, opts, "KD.LABEL.METHOD"), _level(chain, opts, "KD.LOSSES")
    if not method or losses_at < method_at:
        cfg.KD.LABEL.METHOD = method_label(specs)
    elif str(method).lower() in ROLE_METHODS:
        where = "the command line" if method_at == 0 else (config_file if method_at == 1 else "its _BASE_ chain")
        raise ConfigError(f"KD.LABEL.METHOD is {method!r} (set by {where}) but KD.LOSSES configures "
                          f"{', '.join(s['tag'] for s in specs)}; a distilled run is labelled by its method: set "
                          f"KD.LABEL.METHOD {method_label(specs)!r} or leave it unset where KD.LOSSES is set.")
    return cfg


def load_kd_config(make_default, config_file, opts, task):
    """The one config loader of both tasks: ``make_default()`` merged with ``config_file`` and ``KEY VALUE`` ``opts``.

    Order: the modules of ``KD.CUSTOM_IMPORTS`` are imported before the defaults are built (so a user
    module may register a loss or add keys), the file is merged, :func:`prepare_kd` applies ``KD.LOSSES.<tag>.<field>`` overrides, the other overrides are merged,
    :func:`finish_kd` validates the specs and sets the method label.

    Args:
        make_default: ``kd_det.config.detection.get_cfg`` (detection) or ``kd_det.config.classification.get_cls_cfg``.
        config_file: a yaml file, or "" for the defaults.
        opts: ``KEY VALUE`` overrides.
        task: "detection" or "classification".

    Raises:
        ConfigError: one sentence naming the file or key at fault (an old classification key: where it lives now).
    """
    from ..core import import_custom_modules

    defaults = "kd_det's get_cfg()" if task == "detection" else "get_cls_cfg()"
    hint = old_key_error
    if config_file and not os.path.isfile(config_file):
        raise ConfigError(f"Config file {config_file} does not exist.")
    import_custom_modules(config_file, opts)
    cfg = make_default()
    if config_file:
        where = f"Config file {config_file}"
        try:
            cfg.merge_from_file(config_file)
        except KeyError as e:
            raise hint(e, where) or ConfigError(f"{where}: {e.args[0]} (not a key of {defaults}).") from None
        except FileNotFoundError as e:
            raise ConfigError(f"{where}: its _BASE_ {e.filename} does not exist.") from None
        except ValueError as e:
            raise hint(e, where) or ConfigError(f"{where}: {e}.") from None
    if len(opts) % 2:
        raise ConfigError(f"Overrides must be KEY VALUE pairs; {opts[-1]!r} has no value.")
    rest = prepare_kd(cfg, list(opts))
    try:
        cfg.merge_from_list(rest)
    except KeyError as e:
        raise hint(e, "Override") or ConfigError(f"Override {e.args[0]} (not a key of {defaults}).") from None
    except (ValueError, AssertionError) as e:
        if str(e).startswith("Non-existent key: "):
            raise hint(KeyError(f"key: {str(e)[18:]}"), "Override") or ConfigError(
                f"Override {str(e)[18:]} (not a key of {defaults}).") from None
        raise hint(e, "Override") or ConfigError(f"Override rejected: {e}.") from None
    return finish_kd(cfg, config_file, list(opts), task)
