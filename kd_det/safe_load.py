"""Loading weight files without running code from them.

A pickle can call any importable function while it is read, so a downloaded ``.pkl`` is a
program. kd_det reads

* ``.pkl`` files (Detectron2 / Caffe2 model-zoo weights, CIFAR-100 pickles, converted
  backbones) with :class:`RestrictedUnpickler`: only dicts, lists, tuples, strings, numbers,
  ``OrderedDict`` and numpy arrays / dtypes / scalars are built; any other global is refused
  with one sentence naming the file and the global;
* ``.pth`` files (the project's own checkpoints, torchvision / pycls weights) with
  ``torch.load(weights_only=True)``, torch's own allow-list unpickler.

Nothing here imports Detectron2.
"""
import os
import pickle
import re

import torch

from .errors import UserError

__all__ = ["RestrictedUnpickler", "UnsafeFileError", "load_pickle", "load_torch", "read_detectron2_weights",
           "state_dict_mismatch"]

#: (module, name) pairs a weights pickle may name: containers and numpy array reconstruction.
ALLOWED_GLOBALS = frozenset({
    ("collections", "OrderedDict"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),  # how Python 3 writes ``bytes`` (numpy's raw buffers) at pickle protocol 2
})


class UnsafeFileError(UserError):
    """A weights file names a global outside :data:`ALLOWED_GLOBALS`."""


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that builds only the globals in :data:`ALLOWED_GLOBALS`."""

    def find_class(self, module, name):
        if (module, name) in ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name}")


def load_pickle(path, what="Weights file"):
    """Read the pickle ``path`` with :class:`RestrictedUnpickler` (latin1 for Python 2 pickles).

    Raises:
        UnsafeFileError: the file names another global (e.g. ``os.system``), one sentence.
        UserError: the file is missing, truncated or not a pickle, one sentence.
    """
    if not os.path.isfile(path):
        raise UserError(f"{what} {path} does not exist.")
    try:
        with open(path, "rb") as f:
            return RestrictedUnpickler(f, encoding="latin1").load()
    except pickle.UnpicklingError as e:
        if str(e).startswith("global "):
            raise UnsafeFileError(
                f"{what} {path} asks to build {str(e)[7:]}, which is not a dict, list, number, string or "
                "numpy array; kd_det refuses to unpickle it (a pickle can run code).") from None
        raise UserError(f"{what} {path} is not a readable pickle ({e}).") from None
    except Exception as e:  # noqa: BLE001 - whatever the unpickler raises, the file is unreadable
        raise UserError(f"{what} {path} is not a readable pickle "
                        f"({type(e).__name__}: {_first_sentence(e)}).") from None


def _first_sentence(e):
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text.split(". ")[0].rstrip(".")


def load_torch(path, what="Checkpoint"):
    """``torch.load(path, map_location="cpu", weights_only=True)`` with one-sentence errors."""
    if not os.path.isfile(path):
        raise UserError(f"{what} {path} does not exist.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        if found:
            raise UnsafeFileError(f"{what} {path} asks to build {found.group(1)}, which "
                                  "torch.load(weights_only=True) refuses; kd_det loads only tensors, containers "
                                  "and numbers from .pth files.") from None
        detail = re.search(r"WeightsUnpickler error:\s*(.+)", str(e))
        raise UserError(f"{what} {path} is truncated or not a torch checkpoint "
                        f"({detail.group(1).strip() if detail else _first_sentence(e)}).") from None
    except Exception as e:  # noqa: BLE001 - whatever torch.load raises, the file is unreadable
        raise UserError(f"{what} {path} is truncated or not a torch checkpoint ({type(e).__name__}: "
                        f"{_first_sentence(e)}).") from None


def read_detectron2_weights(path, what="Weights file"):
    """What ``DetectionCheckpointer._load_file`` returns for ``path``, read safely.

    Same formats as Detectron2 0.6: a ``.pkl`` in model-zoo format ({"model", "__author__", ...}) is
    returned as is; another ``.pkl`` (Caffe2 / Detectron1, ImageNet backbones) becomes
    {"model": blobs without ``*_momentum``, "__author__": "Caffe2", "matching_heuristics": True};
    a ``.pyth`` (pycls) becomes {"model": model_state, "__author__": "pycls", "matching_heuristics": True};
    a ``.pth`` without a "model" key is wrapped as {"model": it}.
    """
    if path.endswith(".pkl"):
        data = load_pickle(path, what)
        if not isinstance(data, dict):
            raise UserError(f"{what} {path} holds a {type(data).__name__}, not a dict of weights.")
        if "model" in data and "__author__" in data:
            return data
        data = data.get("blobs", data)
        return {"model": {k: v for k, v in data.items() if not k.endswith("_momentum")},
                "__author__": "Caffe2", "matching_heuristics": True}
    data = load_torch(path, what)
    if not isinstance(data, dict):
        raise UserError(f"{what} {path} holds a {type(data).__name__}, not a dict of weights.")
    if path.endswith(".pyth"):
        if "model_state" not in data:
            raise UserError(f"{what} {path} is a .pyth file without 'model_state' (pycls checkpoints have it).")
        return {"model": {k: v for k, v in data["model_state"].items() if not k.endswith("num_batches_tracked")},
                "__author__": "pycls", "matching_heuristics": True}
    return data if "model" in data else {"model": data}


def state_dict_mismatch(own, loaded):
    """What keeps ``loaded`` from loading strictly into a model whose state dict is ``own``: the lists
    (missing, unexpected, of another shape) of keys, each in its dict's order; all empty when it fits."""
    missing = [k for k in own if k not in loaded]
    unexpected = [k for k in loaded if k not in own]
    reshaped = [k for k in own if k in loaded and loaded[k].shape != own[k].shape]
    return missing, unexpected, reshaped
