"""``run_info.json``: how each training launch of a run ran (processes, images per process, seed, ...).

Both engines write it (main process only); the reports read it. Never imports Detectron2.
"""
import json
import os

from .atomic import atomic_write_text

__all__ = ["RUN_INFO", "write_run_info", "read_run_info"]

RUN_INFO = "run_info.json"


def write_run_info(out_dir, launch):
    """Record how a training launch ran in ``out_dir/run_info.json`` (main process only).

    ``run_info.json`` holds the latest launch's fields at the top level and every launch (the
    first, then one per ``--resume``) under "launches", so a run resumed on another number of
    processes shows both. Contrastive losses (CKD, DCD) draw their negatives from each process's
    own RoIs / samples, so ``world_size`` and ``images_per_process`` are part of the method's setting.

    Args:
        out_dir: the run's OUTPUT_DIR.
        launch: dict with at least "task", "world_size", "images_per_process" (JSON-serialisable).

    Returns:
        the path written.
    """
    path = os.path.join(out_dir, RUN_INFO)
    launches = (read_run_info(path) or {}).get("launches", [])
    record = dict(launch, launches=launches + [dict(launch)])
    return atomic_write_text(path, json.dumps(record, indent=2))


def read_run_info(path):
    """The dict of a ``run_info.json`` (a run directory or the file), or None if absent or unreadable."""
    if os.path.isdir(path):
        path = os.path.join(path, RUN_INFO)
    try:
        with open(path) as f:
            info = json.load(f)
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None
