"""Weights & Biases logging of both engines (``SOLVER.WANDB.ENABLED``): the scalars metrics.json holds, from the
main process only; ``wandb`` is imported only when enabled (``pip install -e ".[wandb]"``)."""
import os

import yaml

from ..errors import ConfigError

__all__ = ["require_wandb", "WandbRun"]


def require_wandb(cfg):
    """Refuse ``SOLVER.WANDB.ENABLED True`` without an importable ``wandb``, at start (before anything trains)."""
    if not cfg.SOLVER.WANDB.ENABLED:
        return
    try:
        import wandb  # noqa: F401
    except ImportError:
        raise ConfigError("SOLVER.WANDB.ENABLED True needs the wandb package, which is not installed; install "
                          "kd_det's wandb extra (pip install -e \".[wandb]\") or set SOLVER.WANDB.ENABLED False.") \
            from None


class WandbRun:
    """One W&B run per OUTPUT_DIR: project ``SOLVER.WANDB.PROJECT``, name = the output folder's name, the merged
    config as the run's config, files under ``OUTPUT_DIR/wandb`` (offline with ``WANDB_MODE=offline``)."""

    def __init__(self, cfg, task):
        import wandb

        self.run = wandb.init(project=cfg.SOLVER.WANDB.PROJECT, name=os.path.basename(os.path.normpath(cfg.OUTPUT_DIR)),
                              dir=cfg.OUTPUT_DIR, config=yaml.safe_load(cfg.dump()), job_type=task)

    def log(self, scalars, step):
        """``scalars``: dict name -> number, logged at ``step`` (iteration, or epoch for classification)."""
        self.run.log(dict(scalars), step=int(step))

    def close(self):
        self.run.finish()
