"""Shared pieces of the loss library: base class, float32 policy, validation, feature structures.

Nothing here (or anywhere in :mod:`kd_det.losses`) imports Detectron2.

Precision policy. Every loss computes in float32, even when called under
``torch.autocast`` (bf16 / fp16): :func:`fp32_math` turns autocast off for the
duration of the call and :func:`cast` lifts half-precision inputs to float32.
float64 inputs stay float64 (that is what lets ``torch.autograd.gradcheck`` run on
the losses); a module loss casts its inputs to the dtype of its own parameters
(float32 normally, float64 after ``.double()``).
"""
from __future__ import annotations

import functools
import inspect
import math
from contextlib import ExitStack
from typing import Callable, Mapping, NamedTuple, Sequence

import torch
from torch import Tensor, nn

__all__ = [
    "LossModule", "NonFiniteInputError", "fp32_math", "cast", "compute_dtype", "module_dtype", "graph_zero",
    "set_finite_check", "check_finite", "check_chunk", "row_logsumexp", "check_positive", "check_nonnegative",
    "check_logit_pair", "check_same_rows", "split_features", "split_feature_pair", "channel_list",
    "check_channels", "LossExample", "example_rng", "FeaturePairLoss",
]

_FINITE_CHECK = True
_AUTOCAST_DEVICES = ("cpu", "cuda", "xpu", "mps")


def set_finite_check(enabled: bool) -> bool:
    """Turn the non-finite input check on or off for every loss; returns the previous setting.

    The check (``torch.isfinite(x).all()``) costs one pass over each input and, on a GPU,
    one host-device synchronisation per input; the range checks of integer inputs (DKD
    ``target``, CRD ``index``) go with it. It is on by default.
    """
    global _FINITE_CHECK
    previous, _FINITE_CHECK = _FINITE_CHECK, bool(enabled)
    return previous


def fp32_math(fn: Callable) -> Callable:
    """Decorator: run ``fn`` with autocast disabled on every device type where it is enabled."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with ExitStack() as stack:
            for device in _AUTOCAST_DEVICES:
                try:
                    enabled = torch.is_autocast_enabled(device)
                except (RuntimeError, TypeError):  # device type unknown to this build
                    continue
                if enabled:
                    stack.enter_context(torch.autocast(device_type=device, enabled=False))
            return fn(*args, **kwargs)

    return wrapper


def compute_dtype(*tensors: Tensor | None) -> torch.dtype:
    """float64 if any floating input is float64, else float32."""
    for t in tensors:
        if isinstance(t, Tensor) and t.dtype == torch.float64:
            return torch.float64
    return torch.float32


def module_dtype(module: nn.Module) -> torch.dtype:
    """The floating dtype a module loss computes in: that of its first floating parameter/buffer."""
    for t in list(module.parameters()) + list(module.buffers()):
        if t.is_floating_point():
            return torch.float64 if t.dtype == torch.float64 else torch.float32
    return torch.float32


def cast(x: Tensor, dtype: torch.dtype) -> Tensor:
    """Cast a floating tensor to ``dtype`` (no copy when it already has it)."""
    return x.to(dtype) if x.dtype != dtype else x


def graph_zero(*things) -> Tensor:
    """A 0-dim zero connected to the autograd graph of every tensor / module given.

    Used for empty batches (no foreground RoIs, no GT boxes): the value is exactly 0, the
    gradients are exactly 0, and every learnable part still takes part in backward (which
    keeps DistributedDataParallel from reporting unused parameters).
    """
    tensors = []
    for thing in things:
        if isinstance(thing, nn.Module):
            tensors += [p for p in thing.parameters() if p.requires_grad]
        elif isinstance(thing, Tensor):
            tensors.append(thing)
        elif isinstance(thing, Mapping):
            tensors += [t for t in thing.values() if isinstance(t, Tensor)]
        elif isinstance(thing, (list, tuple)):
            tensors += [t for t in thing if isinstance(t, Tensor)]
    tensors = [t for t in tensors if t.is_floating_point()]
    dtype = compute_dtype(*tensors)
    total = torch.zeros((), dtype=dtype, device=tensors[0].device if tensors else None)
    for t in tensors:
        total = total + cast(t.sum(), dtype) * 0.0
    return total


# ----------------------------------------------------------------------------- validation
class NonFiniteInputError(ValueError):
    """An input of loss ``loss`` (argument ``key``) holds NaN or Inf; training loops catch it by type."""

    def __init__(self, loss: str, key: str):
        super().__init__(f"{loss}: input '{key}' contains non-finite values (NaN or Inf).")
        self.loss, self.key = loss, key


def check_finite(loss: str, key: str, x: Tensor) -> None:
    """Raise :class:`NonFiniteInputError` if ``x`` holds NaN or Inf (skipped when the check is turned off)."""
    if _FINITE_CHECK and x.numel() and x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise NonFiniteInputError(loss, key)


def check_chunk(loss: str, chunk_size) -> None:
    """Raise ``ValueError`` unless ``chunk_size`` is an int >= 0 (0 = never block)."""
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 0:
        raise ValueError(f"{loss}: parameter 'chunk_size' must be an int >= 0 (0 = never block), got {chunk_size!r}.")


def check_positive(loss: str, key: str, value) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite number > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{loss}: parameter '{key}' must be a finite number > 0, got {value!r}.")


def check_nonnegative(loss: str, key: str, value) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{loss}: parameter '{key}' must be a finite number >= 0, got {value!r}.")


def _is_float_tensor(x) -> bool:
    return isinstance(x, Tensor) and x.is_floating_point()


def check_logit_pair(loss: str, a: Tensor, b: Tensor, names=("logits_s", "logits_t")) -> None:
    """Two (N, C) floating tensors of identical shape, both finite."""
    for name, x in zip(names, (a, b)):
        if not _is_float_tensor(x) or x.dim() != 2:
            what = f"a {x.dim()}-dim {x.dtype} tensor" if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"{loss}: input '{name}' must be a 2-dim floating tensor (N, C), got {what}.")
    if a.shape != b.shape:
        raise ValueError(f"{loss}: '{names[0]}' has shape {tuple(a.shape)} but '{names[1]}' has shape "
                         f"{tuple(b.shape)}; they must match.")
    check_finite(loss, names[0], a)
    check_finite(loss, names[1], b)


def check_same_rows(loss: str, a: Tensor, b: Tensor, names=("emb_s", "emb_t")) -> None:
    """Two (N, D_a) / (N, D_b) floating tensors with the same N, both finite."""
    for name, x in zip(names, (a, b)):
        if not _is_float_tensor(x) or x.dim() != 2:
            what = f"a {x.dim()}-dim {x.dtype} tensor" if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"{loss}: input '{name}' must be a 2-dim floating tensor (N, D), got {what}.")
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"{loss}: '{names[0]}' has {a.shape[0]} rows but '{names[1]}' has {b.shape[0]}; "
                         "each student row must pair with one teacher row.")
    check_finite(loss, names[0], a)
    check_finite(loss, names[1], b)


# ----------------------------------------------------------------------------- feature maps
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


# ----------------------------------------------------------------------------- base class
class LossExample(NamedTuple):
    """What :meth:`LossModule.example_inputs` returns: enough to build and call a loss on CPU.

    Attributes:
        params: constructor keyword arguments (``cls(**params)``).
        shapes: the ``shapes`` dict (:mod:`kd_det.losses.vocabulary`) of ``inputs``;
            ``cls.shape_params(shapes)`` is a subset of ``params``.
        inputs: ``forward`` keyword arguments, keyed by vocabulary names.
        train: the mode to call the loss in (False where training mode changes state between
            calls, e.g. CRD's memory bank).
    """

    params: dict
    shapes: dict
    inputs: dict
    train: bool = True


def example_rng(seed: int, dtype: torch.dtype = torch.float32) -> tuple[torch.Generator, Callable[..., Tensor]]:
    """For ``example_inputs``: a seeded CPU generator ``g`` and ``r(*shape)``, drawing from ``g``
    standard-normal tensors x 1.5 in ``dtype``."""
    g = torch.Generator().manual_seed(seed)
    return g, lambda *shape: (torch.randn(*shape, generator=g) * 1.5).to(dtype)


class LossModule(nn.Module):
    """Base of every registered loss.

    Class attributes:
        NAME: registry name, used in error messages.
        LABEL: the papers' spelling, for tables ("" = ``NAME.upper()``).
        INPUTS: keyword arguments ``forward`` takes (names of :data:`kd_det.losses.vocabulary.INPUTS`).
        OPTIONAL_INPUTS: the subset of INPUTS that may be left out (passed as ``None``).
    """

    NAME: str = "loss"
    LABEL: str = ""
    INPUTS: tuple[str, ...] = ()
    OPTIONAL_INPUTS: tuple[str, ...] = ()

    @classmethod
    def label(cls) -> str:
        """The papers' spelling of the loss (``LABEL``, else ``NAME.upper()``)."""
        return cls.LABEL or cls.NAME.upper()

    @classmethod
    def example_inputs(cls, n: int = 4, seed: int = 0, dtype: torch.dtype = torch.float32) -> LossExample:
        """Small seeded params / shapes / inputs with batch (or RoI) count ``n`` (0 and 1 included),
        floating inputs in ``dtype``; building and calling the loss on them takes well under a
        second on a CPU. The registry-wide tests (``tests/losses``) run every registered loss on
        them, so every registered loss must override this."""
        raise NotImplementedError(f"{cls.__name__} ({cls.NAME!r}) has no example_inputs(); every registered loss "
                                  "needs one (a classmethod returning a LossExample) for the registry-wide tests.")

    def required_inputs(self) -> tuple[str, ...]:
        """INPUTS this instance cannot run without."""
        return tuple(k for k in self.INPUTS if k not in self.OPTIONAL_INPUTS)

    def used_inputs(self) -> tuple[str, ...]:
        """INPUTS this instance reads: its required ones plus the optional ones it uses when given (e.g.
        CRD's ``contrast_index``). A loss whose optional inputs are required under some parameters and
        ignored otherwise (ReviewKD's ``pooled_level``, MSD's ``sample_classification``) returns only
        ``required_inputs()``. Callers compute just these."""
        return self.INPUTS

    #: Constructor parameters read off input shapes: input name -> (parameter, conversion), e.g.
    #: ``{"emb_s": ("in_dim_s", int)}``; :meth:`shape_params` applies it (override that for anything else).
    SHAPE_PARAMS: dict = {}

    @classmethod
    def shape_params(cls, shapes: Mapping) -> dict:
        """Constructor parameters derivable from input shapes (only those present in ``shapes``)."""
        return {param: convert(shapes[key]) for key, (param, convert) in cls.SHAPE_PARAMS.items() if key in shapes}

    @classmethod
    def param_names(cls) -> list[str]:
        """Names of the constructor parameters."""
        sig = inspect.signature(cls.__init__)
        return [p for p in sig.parameters if p != "self"
                and sig.parameters[p].kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]

    @classmethod
    def required_params(cls) -> list[str]:
        """Constructor parameters without a default."""
        sig = inspect.signature(cls.__init__)
        return [p for p in cls.param_names() if sig.parameters[p].default is inspect.Parameter.empty]


class FeaturePairLoss(LossModule):
    """Base of the losses on per-level student / teacher maps (FitNet, FGFI, MSD, ReviewKD).

    Args:
        in_channels: student channels per level (from ``shapes["feats_s"]``).
        out_channels: teacher channels per level (from ``shapes["feats_t"]``).

    Class attributes:
        LEVEL: what a level is called in messages ("level"; MSD: "stage").
        BUILT_FOR: how a channel mismatch ends in messages, formatted with the built
            (student, teacher) channels.
        SAME_SIZE: student and teacher maps of a level must have the same (H, W).
    """

    INPUTS = ("feats_s", "feats_t")
    LEVEL = "level"
    BUILT_FOR = "the loss was built for {} / {}"
    SAME_SIZE = False
    SHAPE_PARAMS = {"feats_s": ("in_channels", channel_list), "feats_t": ("out_channels", channel_list)}

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.in_channels = check_channels(self.NAME, "in_channels", in_channels)
        self.out_channels = check_channels(self.NAME, "out_channels", out_channels)
        if len(self.in_channels) != len(self.out_channels):
            raise ValueError(f"{self.NAME}: 'in_channels' has {len(self.in_channels)} {self.LEVEL}s but "
                             f"'out_channels' has {len(self.out_channels)}.")

    def check_level_count(self, count: int) -> None:
        """Raise unless ``count`` levels were given (as many as ``in_channels``)."""
        if count != len(self.in_channels):
            raise ValueError(f"{self.NAME}: got {count} {self.LEVEL}s but the loss was built for "
                             f"{len(self.in_channels)}.")

    def split_levels(self, feats_s, feats_t) -> tuple[list[str], list[Tensor], list[Tensor]]:
        """:func:`split_feature_pair` plus the level count check."""
        names, maps_s, maps_t = split_feature_pair(self.NAME, feats_s, feats_t)
        self.check_level_count(len(maps_s))
        return names, maps_s, maps_t

    def check_levels(self, names, maps_s: list[Tensor], maps_t: list[Tensor]) -> None:
        """Per level: channels as built (and the same (H, W) when ``SAME_SIZE``)."""
        for name, s, t, c_in, c_out in zip(names, maps_s, maps_t, self.in_channels, self.out_channels):
            if s.shape[1] != c_in or t.shape[1] != c_out:
                raise ValueError(f"{self.NAME}: {self.LEVEL} {name!r} has {s.shape[1]} student / {t.shape[1]} "
                                 f"teacher channels but {self.BUILT_FOR.format(c_in, c_out)}.")
            if self.SAME_SIZE and s.shape[-2:] != t.shape[-2:]:
                raise ValueError(f"{self.NAME}: {self.LEVEL} {name!r} has student size {tuple(s.shape[-2:])} but "
                                 f"teacher size {tuple(t.shape[-2:])}; they must match.")

    @staticmethod
    def example_maps(n: int, seed: int, dtype: torch.dtype, in_channels=(2, 3), out_channels=(3, 2),
                     sizes=((4, 4), (2, 2))) -> tuple[dict, dict, dict, torch.Generator]:
        """Two-level example for ``example_inputs``: (params, shapes, inputs, g) with ``feats_s`` /
        ``feats_t`` lists of (n, C, H, W) maps and the seeded generator ``g`` for further draws."""
        g, r = example_rng(seed, dtype)
        inputs = {"feats_s": [r(n, c, *hw) for c, hw in zip(in_channels, sizes)],
                  "feats_t": [r(n, c, *hw) for c, hw in zip(out_channels, sizes)]}
        shapes = {"feats_s": list(in_channels), "feats_t": list(out_channels)}
        return dict(in_channels=list(in_channels), out_channels=list(out_channels)), shapes, inputs, g


# ----------------------------------------------------------------------------- blocked similarity
def _block_lse(a_block: Tensor, b: Tensor, scale, bias) -> Tensor:
    return torch.logsumexp((a_block @ b.t()) * scale + bias, dim=1)


def row_logsumexp(a: Tensor, b: Tensor, scale=1.0, bias=0.0, chunk_size: int = 0) -> Tensor:
    """``r_i = logsumexp_j(scale * <a_i, b_j> + bias)`` without holding the N x M matrix.

    Args:
        a: (N, D) rows.
        b: (M, D) columns.
        scale, bias: float or 0-dim tensor (may require grad).
        chunk_size: rows per block; 0 or >= N computes the whole matrix at once. In blocked
            mode each block runs under activation checkpointing, so forward and backward hold
            one (chunk_size x M) block at a time; results equal the unblocked ones up to
            float rounding.

    Returns:
        (N,) tensor.
    """
    n = a.shape[0]
    if chunk_size <= 0 or n <= chunk_size:
        return _block_lse(a, b, scale, bias)
    from torch.utils.checkpoint import checkpoint

    parts = [checkpoint(_block_lse, a[i:i + chunk_size], b, scale, bias, use_reentrant=False,
                        preserve_rng_state=False) for i in range(0, n, chunk_size)]
    return torch.cat(parts)


# ----------------------------------------------------------------------------- same-object samples
#: How samples of the same object (detection: RoIs matched to one GT box) enter an in-batch
#: contrastive loss. "negative": every other sample is a negative (the classification form);
#: "exclude": other samples of the anchor's object leave the denominator; "positive": they are
#: extra positives (supervised-contrastive form, the row loss averages over them).
SAME_OBJECT_MODES = ("negative", "exclude", "positive")


def check_same_object(loss: str, same_object) -> str:
    if same_object not in SAME_OBJECT_MODES:
        raise ValueError(f"{loss}: parameter 'same_object' must be one of {', '.join(SAME_OBJECT_MODES)}, "
                         f"got {same_object!r}.")
    return same_object


def _check_object_id(loss: str, object_id: Tensor, n: int) -> None:
    if object_id.dim() != 1 or object_id.shape[0] != n or object_id.is_floating_point():
        raise ValueError(f"{loss}: 'object_id' must be an integer tensor of shape ({n},), got "
                         f"{tuple(object_id.shape)} {object_id.dtype}.")


def select_objects(loss: str, a: Tensor, b: Tensor, object_id: Tensor | None, same_object: str,
                   foreground_only: bool) -> tuple[Tensor, Tensor, Tensor | None]:
    """Apply ``foreground_only`` and build the same-object mask of an in-batch contrastive loss.

    Args:
        a, b: (N, D) student / teacher rows.
        object_id: optional (N,) object ids (-1 = background); None = every row its own instance.

    Returns:
        (a, b) restricted to foreground rows when ``foreground_only``, and the (M, M) mask of
        :func:`same_object_mask` (None for "negative" or without ``object_id``).
    """
    if object_id is None:
        return a, b, None
    _check_object_id(loss, object_id, a.shape[0])
    if foreground_only:
        keep = object_id >= 0
        a, b, object_id = a[keep], b[keep], object_id[keep]
    return a, b, (same_object_mask(object_id) if same_object != "negative" else None)


def same_object_mask(object_id: Tensor) -> Tensor:
    """(N,) object ids (-1 = background, each background sample its own instance) -> (N, N) bool,
    True where ``i != j`` and both samples belong to the same object."""
    same = (object_id[:, None] == object_id[None, :]) & (object_id[:, None] >= 0)
    return same & ~torch.eye(object_id.shape[0], dtype=torch.bool, device=object_id.device)


def masked_info_nce(logits: Tensor, same: Tensor | None, same_object: str) -> Tensor:
    """Per-row InfoNCE with the positive on the diagonal of a dense (N, N) logit matrix.

    Args:
        logits: (N, N) anchor rows x candidate columns; column i is row i's positive.
        same: (N, N) bool from :func:`same_object_mask`, or None (no sample shares an object).
        same_object: one of :data:`SAME_OBJECT_MODES`.

    Returns:
        (N,) ``-log softmax`` of the positive (mean over the positives in "positive" mode).
    """
    if same is None or same_object == "negative":
        return torch.logsumexp(logits, dim=1) - logits.diagonal()
    if same_object == "exclude":
        return torch.logsumexp(logits.masked_fill(same, float("-inf")), dim=1) - logits.diagonal()
    log_p = torch.log_softmax(logits, dim=1)
    positives = same | torch.eye(logits.shape[0], dtype=torch.bool, device=logits.device)
    return -(log_p * positives).sum(dim=1) / positives.sum(dim=1)
