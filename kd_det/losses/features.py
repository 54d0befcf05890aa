"""Feature-map structures the feature losses take: a list of (B, C, H, W) maps or a dict level -> map."""
from __future__ import annotations

from typing import Mapping, Sequence

from torch import Tensor

from .checks import _is_float_tensor, check_finite

__all__ = ['split_features', 'split_feature_pair', 'channel_list', 'check_channels']

def split_features(loss: str, feats, key: str) -> tuple[list[str] | None, list[Tensor]]:
    """Accept a list/tuple of (B, C, H, W) maps or an ordered mapping level-name -> map.

    Returns:
        (names or None, list of maps) in the given order (finest / shallowest first).
    """
    if isinstance(feats, Mapping):
        names, maps = list(feats.keys()), list(feats.values())
    elif isinstance(feats, Sequence) and not isinstance(feats, (str, bytes)):
        names, maps = None, list(feats)
    elif isinstance(feats, Tensor):
        names, maps = None, [feats]
    else:
        raise ValueError(f"{loss}: input '{key}' must be a list of (B, C, H, W) tensors or a dict "
                         f"level -> tensor, got {type(feats).__name__}.")
    if not maps:
        raise ValueError(f"{loss}: input '{key}' holds no feature maps.")
    for i, x in enumerate(maps):
        level = names[i] if names else i
        if not _is_float_tensor(x) or x.dim() != 4:
            what = f"a {x.dim()}-dim tensor" if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"{loss}: level {level!r} of '{key}' must be a 4-dim floating tensor "
                             f"(B, C, H, W), got {what}.")
        check_finite(loss, f"{key}[{level!r}]", x)
    return names, maps


def split_feature_pair(loss: str, feats_s, feats_t):
    """Split student and teacher feature structures and check they correspond level by level.

    Returns:
        (level names, student maps, teacher maps); batch sizes must agree on every level.
    """
    names_s, maps_s = split_features(loss, feats_s, "feats_s")
    names_t, maps_t = split_features(loss, feats_t, "feats_t")
    if names_s != names_t or len(maps_s) != len(maps_t):
        desc_s = names_s if names_s is not None else f"{len(maps_s)} maps"
        desc_t = names_t if names_t is not None else f"{len(maps_t)} maps"
        raise ValueError(f"{loss}: 'feats_s' ({desc_s}) and 'feats_t' ({desc_t}) must hold the same levels.")
    names = names_s if names_s is not None else [str(i) for i in range(len(maps_s))]
    for name, s, t in zip(names, maps_s, maps_t):
        if s.shape[0] != t.shape[0]:
            raise ValueError(f"{loss}: level {name!r} has batch size {s.shape[0]} in 'feats_s' but "
                             f"{t.shape[0]} in 'feats_t'.")
    return names, maps_s, maps_t


def channel_list(value) -> list[int] | None:
    """Channels per level from a ``shapes`` entry: list/tuple of ints, dict of ints, or None."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        value = list(value.values())
    if isinstance(value, int):
        value = [value]
    return [int(v) for v in value]


def check_channels(loss: str, key: str, value) -> list[int]:
    """Validate a constructor channel list (ints > 0); returns it as a list."""
    chans = channel_list(value)
    if not chans or any(c <= 0 for c in chans):
        raise ValueError(f"{loss}: parameter '{key}' must be a non-empty list of positive channel counts, "
                         f"got {value!r}.")
    return chans
