"""kd_det: knowledge distillation for object detection on Detectron2.

Importing ``kd_det`` applies :mod:`kd_det.compat` once, so Detectron2 0.6's
Python code runs on current NumPy / Pillow / torch without ``detectron2._C``.
The loss library (:mod:`kd_det.losses`), the reliability core both engines share
(:mod:`kd_det.core`) and the classification path never import Detectron2.
"""
import os as _os

from . import compat as _compat

_compat.apply()

__version__ = "0.1.0"

# The repository root (where configs/, datasets/ and tools/ live for an editable install).
REPO_ROOT = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
