"""The base classes of every registered loss: :class:`LossModule` (inputs, example inputs, shape-derived
parameters) and :class:`FeaturePairLoss` (student / teacher feature maps level by level). No Detectron2."""
from __future__ import annotations

import inspect
from typing import Callable, Mapping, NamedTuple

import torch
from torch import Tensor, nn

from .features import channel_list, check_channels, split_feature_pair

__all__ = ['LossExample', 'example_rng', 'LossModule', 'FeaturePairLoss']

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
