"""Make Detectron2 0.6's Python code run on current NumPy / Pillow / torch without ``detectron2._C``.

Applied once by ``import kd_det`` (:func:`apply` is idempotent). Every change is
additive and guarded: where a full Detectron2 build is present (``detectron2._C``
importable) the ``_C`` part is a no-op, and an alias is only added where the
library no longer has it. Nothing here imports Detectron2, so the loss library and
the classification path stay Detectron2-free.

What is changed, line by line:

1. NumPy >= 1.24 / 2.x removed the aliases ``np.bool``, ``np.int``, ``np.float``,
   ``np.complex``, ``np.object``, ``np.str`` (Detectron2 0.6 uses them, e.g.
   ``data/build.py: print_instances_class_histogram`` when a train loader is built,
   ``structures/masks.py``; the ``lvis`` package's ``LVISEval.accumulate`` too). Missing ones are
   restored as the builtins they always
   meant (NumPy 2 brought ``np.bool`` back as ``numpy.bool``; it is left as is).
2. Pillow >= 10 removed ``Image.LINEAR`` (a default argument of
   ``data/transforms/transform.py: ExtentTransform``, evaluated at import). It is
   restored as ``Image.BILINEAR``, its old meaning.
3. ``detectron2._C`` (the C++/CUDA extension) is absent from a Python-only
   install, but ``layers/deform_conv.py`` and ``evaluation/fast_eval_api.py`` do
   ``from detectron2 import _C`` at import time. A stand-in module is registered
   under that name: importing it works, and using any op from it raises
   :class:`MissingCppOpError` with one sentence saying which op is missing and
   that Faster R-CNN FPN does not need it (instead of an ImportError at import or
   a segfault / AttributeError later). ``get_compiler_version`` /
   ``get_cuda_version`` / ``has_cuda`` answer truthfully for ``collect_env``.
4. Two warnings current torch prints for Detectron2 0.6 code on every run are
   silenced: ``torch.jit.script is deprecated`` (its ``@torch.jit.script``
   helpers, at import) and ``torch.meshgrid ... indexing argument`` (its anchor
   generator; the default "ij" is what it wants). Nothing else is filtered.
"""
import importlib.util
import logging
import os
import sys
import types
import warnings

__all__ = ["apply", "MissingCppOpError", "HAS_CPP_OPS"]

HAS_CPP_OPS = None  # set by apply(): True if a real detectron2._C is importable
_APPLIED = False


class MissingCppOpError(RuntimeError):
    """A Detectron2 C++/CUDA op was used with a Python-only Detectron2 install."""


def _missing_op(name):
    return MissingCppOpError(
        f"detectron2._C.{name} is a C++/CUDA op that this Python-only Detectron2 install does not have "
        "(deformable conv, rotated boxes and Detectron2's _C fast COCO evaluation need one; Faster R-CNN FPN "
        "does not): install a full Detectron2 build to use it."
    )


class _MissingCppModule(types.ModuleType):
    """Stand-in for ``detectron2._C``: importable, every op raises MissingCppOpError."""

    def __getattr__(self, name):
        if name.startswith("__"):  # import machinery probes (__path__, __spec__, ...)
            raise AttributeError(name)
        raise _missing_op(name)


def _numpy_aliases():
    import numpy as np

    for name, typ in (("bool", bool), ("int", int), ("float", float), ("complex", complex),
                      ("object", object), ("str", str)):
        if name not in np.__dict__:  # hasattr() would trip NumPy's deprecation __getattr__
            setattr(np, name, typ)


def _pillow_aliases():
    from PIL import Image

    if not hasattr(Image, "LINEAR"):
        Image.LINEAR = Image.BILINEAR


def _cpp_stand_in():
    global HAS_CPP_OPS
    if "detectron2._C" in sys.modules:
        HAS_CPP_OPS = not isinstance(sys.modules["detectron2._C"], _MissingCppModule)
        return
    spec = importlib.util.find_spec("detectron2")  # top-level find_spec imports nothing
    if spec is None or not spec.submodule_search_locations:
        HAS_CPP_OPS = False
        return
    # A real build leaves detectron2/_C.<abi>.so (or .pyd) next to __init__.py.
    HAS_CPP_OPS = any(
        os.path.isfile(os.path.join(d, f)) and f.startswith("_C.")
        for d in spec.submodule_search_locations for f in os.listdir(d)
    )
    if HAS_CPP_OPS:
        return
    stub = _MissingCppModule("detectron2._C", "kd_det stand-in for the missing Detectron2 C++ extension")
    stub.get_compiler_version = lambda: "none (Python-only Detectron2 install, kd_det.compat)"
    stub.get_cuda_version = lambda: "none (Python-only Detectron2 install, kd_det.compat)"
    stub.has_cuda = lambda: False
    # `from detectron2 import _C` falls back to sys.modules, so the parent need not be imported.
    sys.modules["detectron2._C"] = stub


def _quiet_known_warnings():
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
    warnings.filterwarnings("ignore", message=r"torch\.meshgrid: in an upcoming release", category=UserWarning)
    # Detectron2's collect_env imports torch.utils.cpp_extension, which logs "No CUDA runtime is
    # found, using CUDA_HOME=..." on stderr on every CPU machine; kd_det builds no extension.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)


def apply():
    """Apply every change above once; later calls do nothing."""
    global _APPLIED
    if _APPLIED:
        return
    _numpy_aliases()
    _pillow_aliases()
    _cpp_stand_in()
    _quiet_known_warnings()
    _APPLIED = True
