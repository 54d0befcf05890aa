"""Input settings a weights file can require (``tools/convert_backbone.py`` records them), checked
against a built model: used by the student checkpointer and the teacher loader alike."""
import torch

from ...classification.convert import REQUIRED_SETTINGS_KEY
from ...errors import ConfigError

__all__ = ["check_required_settings", "model_settings"]


def model_settings(model):
    """The settings a weights file can require, as the built ``model`` has them.

    {"INPUT.FORMAT", "MODEL.PIXEL_MEAN", "MODEL.PIXEL_STD"} from a GeneralizedRCNN's ``input_format`` /
    ``pixel_mean`` / ``pixel_std``, and "MODEL.RESNETS.STRIDE_IN_1X1" when its backbone has a strided
    bottleneck block (stride on ``conv1`` = True); keys the model cannot tell are left out.
    """
    model = getattr(model, "module", model)  # unwrap DDP
    out = {}
    if isinstance(getattr(model, "input_format", None), str):
        out["INPUT.FORMAT"] = model.input_format
    for key, attr in (("MODEL.PIXEL_MEAN", "pixel_mean"), ("MODEL.PIXEL_STD", "pixel_std")):
        if isinstance(getattr(model, attr, None), torch.Tensor):
            out[key] = [float(x) for x in getattr(model, attr).flatten()]
    backbone = getattr(model, "backbone", None)
    for block in (backbone.modules() if isinstance(backbone, torch.nn.Module) else ()):
        if all(hasattr(block, c) for c in ("conv1", "conv2", "conv3")) and getattr(block, "stride", 1) > 1:
            out["MODEL.RESNETS.STRIDE_IN_1X1"] = block.conv1.stride[0] > 1  # Detectron2's BottleneckBlock
            break
    return out


def _same(want, have):
    if isinstance(want, (list, tuple)):
        return (isinstance(have, (list, tuple)) and len(want) == len(have)
                and all(abs(float(a) - float(b)) <= 1e-3 * max(1.0, abs(float(a))) for a, b in zip(want, have)))
    return want == have


def _show(value):
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(f"{float(x):g}" for x in value) + "]"
    return str(value)


def _and(items):
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def check_required_settings(model, data, filename, what="MODEL.WEIGHTS", where="the config"):
    """Refuse to load ``data`` (read from ``filename``) into ``model`` when the settings the file
    records (``tools/convert_backbone.py`` writes them under ``"required_settings"``) disagree with
    the model's; the record is removed from ``data``. Files without a record are not checked.

    Raises:
        ConfigError: one sentence naming ``what`` and ``filename``, and the keys and values to set.
    """
    record = data.pop(REQUIRED_SETTINGS_KEY, None) if isinstance(data, dict) else None
    if record is None:
        return
    if not isinstance(record, dict):
        raise ConfigError(f"{what} {filename} has a {REQUIRED_SETTINGS_KEY!r} entry that is a "
                          f"{type(record).__name__}, not a dict of config key -> value; convert it again.")
    have = model_settings(model)
    wrong = [k for k, v in record.items() if k in have and not _same(v, have[k])]
    if wrong:
        raise ConfigError(
            f"{what} {filename} was converted for {_and([f'{k} {_show(record[k])}' for k in wrong])} but "
            f"{where} has {_and([f'{k} {_show(have[k])}' for k in wrong])}; set "
            f"{_and([f'{k} {_show(record[k])}' for k in wrong])} (as tools/convert_backbone.py printed).")
