"""Atomic file writes: a reader (or a run resumed after a kill) sees the old file or the whole new one."""
import contextlib
import os
import secrets
from typing import Any, BinaryIO, Callable

import torch

__all__ = ["atomic_write", "atomic_save", "atomic_write_text"]


def atomic_write(path: str, write: Callable[[BinaryIO], None]) -> str:
    """Write ``path`` by ``write(f)``, ``f`` a binary file open on a temporary file; returns ``path``.

    The temporary file ``<name>.<random hex>.tmp`` is in the same folder (same file system, so the
    rename is atomic) and unique (processes writing the same path never share one). It is flushed
    and fsync'ed, renamed over ``path`` with ``os.replace``, then the folder is fsync'ed. On any
    exception the temporary file is removed and ``path`` is left as it was (a process killed by
    SIGKILL can leave the temporary file behind, never a half-written ``path``).
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f"{os.path.basename(path)}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as f:  # "x": never another writer's file; permissions follow the umask
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable; not every file system allows it
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return path


def atomic_save(obj: Any, path: str) -> str:
    """``torch.save(obj)`` to ``path`` atomically (:func:`atomic_write`)."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_text(path: str, text: str) -> str:
    """``text`` (UTF-8) to ``path`` atomically (:func:`atomic_write`)."""
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))
