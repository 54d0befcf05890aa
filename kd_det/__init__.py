"""kd_det: knowledge distillation for object detection on Detectron2.

Importing ``kd_det`` applies :mod:`kd_det.compat` once, so Detectron2 0.6's
Python code runs on current NumPy / Pillow / torch without ``detectron2._C``.
The loss library (:mod:`kd_det.losses`) and the classification path never
import Detectron2.
"""
from . import compat as _compat

_compat.apply()

__version__ = "0.1.0"
