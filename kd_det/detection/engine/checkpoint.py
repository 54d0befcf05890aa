"""Checkpoints that are never half-written and that remember which teacher they were trained with."""
import os

from detectron2.checkpoint import DetectionCheckpointer

from ...core import atomic_save, atomic_write_text
from ...errors import ConfigError
from ..modeling.wrapper import DISTILL_PREFIX
from ..modeling.weights import check_required_settings, model_settings  # noqa: F401  (re-exported)
from ...safe_load import read_detectron2_weights

__all__ = ["KDCheckpointer", "check_required_settings", "model_settings"]


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
