"""Checkpoints that are never half-written and that remember which teacher they were trained with."""
import os

import torch
from detectron2.checkpoint import DetectionCheckpointer

from ..classification.convert import REQUIRED_SETTINGS_KEY
from ..core import atomic_save, atomic_write_text
from ..errors import ConfigError
from ..modeling.distill_rcnn import DISTILL_PREFIX
from ..safe_load import read_detectron2_weights

__all__ = ["KDCheckpointer", "check_required_settings", "model_settings"]


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


class KDCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` with atomic writes (file, then ``last_checkpoint``; :func:`kd_det.core.atomic_write`),
    the teacher's identity and safe loading (:func:`kd_det.safe_load.read_detectron2_weights`: restricted
    unpickler for ``.pkl``, ``torch.load(weights_only=True)`` for ``.pth``).

    A DistillRCNN checkpoint stores ``teacher`` = {"config_file", "weights", "sha256", ...} (the
    teacher weights themselves are reloaded from ``KD.TEACHER.WEIGHTS``); resuming with a teacher
    whose SHA-256 differs is refused; loaded into a model without distillation parts (``--eval-only``
    of a distillation config builds the student alone), its ``distill.*`` tensors are left out.
    Weights that record the input settings they need (backbones written by
    ``tools/convert_backbone.py``) are refused when the model's config disagrees
    (:func:`check_required_settings`).
    """

    def _teacher_identity(self):
        model = getattr(self.model, "module", self.model)  # unwrap DDP
        return getattr(model, "teacher_identity", None)

    def save(self, name, **kwargs):
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        data.update({key: obj.state_dict() for key, obj in self.checkpointables.items()})
        data.update(kwargs)
        if self._teacher_identity():
            data["teacher"] = self._teacher_identity()
        basename = f"{name}.pth"
        path = os.path.join(self.save_dir, basename)
        os.makedirs(self.save_dir, exist_ok=True)
        self.logger.info(f"Saving checkpoint to {path}")
        atomic_save(data, path)  # readers see the old file or the new one, never half of one
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename):
        atomic_write_text(os.path.join(self.save_dir, "last_checkpoint"), last_filename_basename)

    def _load_file(self, filename):
        data = read_detectron2_weights(filename, "Checkpoint")
        recorded, current = data.get("teacher"), self._teacher_identity()
        if recorded and current and recorded.get("sha256") != current.get("sha256"):
            raise ConfigError(
                f"Checkpoint {filename} was trained with teacher weights {recorded.get('weights')} "
                f"(sha256 {recorded.get('sha256', '?')[:12]}) but KD.TEACHER.WEIGHTS is {current['weights']} "
                f"(sha256 {current['sha256'][:12]}); resume with the same teacher or start a new OUTPUT_DIR.")
        data.pop("teacher", None)
        model = getattr(self.model, "module", self.model)
        if not hasattr(model, "distill") and isinstance(data.get("model"), dict):  # a distilled run scored as
            data["model"] = {k: v for k, v in data["model"].items()  # its plain student (--eval-only)
                             if not k.startswith(DISTILL_PREFIX)}
        check_required_settings(self.model, data, filename)
        return data
