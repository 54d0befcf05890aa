"""Random states of Python, NumPy, torch (CPU) and CUDA: capture, restore, isolate, seed."""
import contextlib
import random

import numpy as np
import torch

__all__ = ["get_rng_state", "set_rng_state", "isolated_rng", "seed_all"]


def get_rng_state() -> dict:
    """{"python", "numpy", "torch"[, "cuda"]}: the current random states, as tensors, lists and numbers
    only (``torch.load(weights_only=True)`` reads them back). "cuda" is present when CUDA is initialised."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(),
             "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
             "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`get_rng_state` returned (also after a ``torch.save`` / ``torch.load`` round trip)."""
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.asarray(keys).astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextlib.contextmanager
def isolated_rng():
    """Run the body on the current random states and put them back afterwards.

    Whatever the body draws (a teacher's initialisation before its weights are loaded, the
    distillation losses' own parameters) leaves the streams of the data loader, the augmentations
    and the RoI sampling as they were: with one seed a plain student run and a distilled run see
    the same images in the same order (paired seeds).
    """
    state = get_rng_state()
    try:
        yield
    finally:
        set_rng_state(state)


def seed_all(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
