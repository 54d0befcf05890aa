"""Small, seeded inputs for every registered loss (used by the cross-cutting edge-case,
autocast, gradcheck and DistillLoss tests), all from the losses' own ``example_inputs()``:
a loss added to ``LOSS_REGISTRY`` gets every registry-wide test without a test edit.
A plain module, imported as ``loss_cases``."""
from collections.abc import Mapping

import torch

from kd_det.losses import LOSS_REGISTRY
from kd_det.losses.vocabulary import FEATURE_INPUTS, TEACHER_INPUTS

ALL_LOSSES = sorted(LOSS_REGISTRY)


def make_case(name, n, dtype=torch.float32, seed=0):
    """Returns (loss module, kwargs) with batch / RoI count ``n``: the loss built from its
    example's params (parameters initialised under ``torch.manual_seed(seed)``), in the
    example's train / eval mode, in ``dtype``."""
    cls = LOSS_REGISTRY[name]
    example = cls.example_inputs(n, seed + 1, dtype)
    torch.manual_seed(seed)
    loss = cls(**example.params).train(example.train)
    if dtype == torch.float64:
        loss = loss.double()
    return loss, dict(example.inputs)


def float_inputs(kwargs):
    """(key, tensor) for every floating input tensor, feature-map items included (key[i])."""
    out = []
    for key, value in kwargs.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            out.append((key, value))
        elif key in FEATURE_INPUTS:
            items = value.items() if isinstance(value, Mapping) else enumerate(value)
            out.extend((f"{key}[{i}]", v) for i, v in items)
    return out


def teacher_input(kwargs):
    """The first teacher-side floating input key (vocabulary order) of an example, or None."""
    return next((k for k in TEACHER_INPUTS if k in kwargs and dict(float_inputs({k: kwargs[k]}))), None)


def set_input(kwargs, key, value):
    """A copy of ``kwargs`` with the input named ``key`` (``feats_s[1]`` style for a map) replaced."""
    call = dict(kwargs)
    if "[" not in key:
        call[key] = value
        return call
    base, i = key[:-1].split("[")
    maps = call[base]
    maps = dict(maps) if isinstance(maps, Mapping) else list(maps)
    maps[i if isinstance(maps, dict) else int(i)] = value
    call[base] = maps
    return call
