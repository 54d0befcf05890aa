"""Mixed precision: which autocast dtype, and whether a GradScaler is needed, for a device and a precision."""
from typing import NamedTuple, Optional

import torch

from ..errors import ConfigError

__all__ = ["AmpMode", "resolve_amp"]


class AmpMode(NamedTuple):
    """``dtype`` None = float32 (autocast off). ``needs_scaler``: float16 gradients need loss scaling."""

    device_type: str  # "cuda" or "cpu"
    dtype: Optional[torch.dtype] = None
    needs_scaler: bool = False

    @property
    def enabled(self) -> bool:
        return self.dtype is not None

    def autocast(self):
        """The ``torch.autocast`` context of this mode (a disabled one for float32)."""
        return torch.autocast(device_type=self.device_type, dtype=self.dtype or torch.bfloat16, enabled=self.enabled)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A GradScaler, enabled only when ``needs_scaler`` (a disabled one passes everything through)."""
        return torch.amp.GradScaler(self.device_type, enabled=self.needs_scaler)


def resolve_amp(device, enabled: bool, precision: str = "", key: str = "SOLVER.AMP.PRECISION") -> AmpMode:
    """The :class:`AmpMode` for ``device`` (a ``torch.device`` or a string such as "cuda:0" / "cpu").

    ``enabled`` False: float32. Otherwise ``precision`` ("float16", "bfloat16"; "" = float16 on CUDA,
    bfloat16 on CPU, where float16 is slow and bfloat16 has float32's range); a GradScaler is needed
    for float16 only.

    Raises:
        ConfigError: ``precision`` is something else (the sentence names ``key``).
    """
    device_type = "cuda" if str(device).startswith("cuda") else "cpu"
    if not enabled:
        return AmpMode(device_type)
    name = precision or ("float16" if device_type == "cuda" else "bfloat16")
    if name not in ("float16", "bfloat16"):
        raise ConfigError(f"{key} is {name!r}; use \"float16\", \"bfloat16\" or \"\" (automatic).")
    return AmpMode(device_type, getattr(torch, name), name == "float16")
