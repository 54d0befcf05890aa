"""DistillLoss: several registered losses with weights from config, one named term each.

A spec is a dict::

    {"name": "dcd",                 # registry name (required)
     "weight": 1.0,                 # >= 0, default 1.0
     "params": {"alpha": 0.5},      # constructor params, default {}
     "inputs": {"emb_s": "logits_s", "emb_t": "logits_t"},  # loss arg -> provided key, default identity
     "tag": "dcd",                  # output key suffix, default the name (deduplicated: dcd, dcd_2, ...)
     "start_iter": 0}               # int >= 0, default 0: the term counts from this iteration on

Constructor params are ``shape_params(shapes)`` (with the ``inputs`` remap applied to
``shapes``) overridden by the explicit ``params``. ``forward(step=None, **tensors)`` returns
``{"loss_<tag>": factor * weight * value}`` and nothing else (so a Detectron2 trainer that sums every
``loss_*`` entry counts each term once); extra tensors are ignored.

The term schedule lives here, for both tasks, in one unit of training progress, ``step`` (detection: the 0-based
iteration; classification: the 0-based epoch): before its ``start_iter`` (``step < start_iter``) a term is still
computed but multiplied by 0, so its learnable parts get (zero) gradients every step and DDP sees every parameter
used; with ``warmup`` W > 0 every term is ramped in linearly, x ``min(1, (step + 1) / W)`` (DKD's and ReviewKD's
warm-up of the distillation weight). A term with ``start_iter > 0``, or any term with a warm-up, needs ``step``.
"""
from __future__ import annotations

import math
from typing import Mapping

from torch import Tensor, nn

from .checks import NonFiniteInputError
from .registry import LOSS_REGISTRY, build_loss

__all__ = ["DistillLoss", "check_inputs", "check_spec", "spec_tag", "SPEC_KEYS"]

#: Keys of one loss spec, in the order configs write them.
SPEC_KEYS = ("name", "weight", "params", "inputs", "tag", "start_iter")
_EXAMPLE = "{name: dkd, weight: 1.0, params: {beta: 0.5}}"


def spec_tag(spec) -> str:
    """The one tag rule: a spec's ``tag`` exactly as written, else its loss name lower-cased.

    The tag names the logged term (``loss_<tag>``) and the command-line override (``KD.LOSSES.<tag>.weight``).
    """
    if not isinstance(spec, Mapping):
        return str(spec).lower()
    return str(spec.get("tag") or "") or str(spec.get("name", "")).lower()


def check_spec(spec, index: int, where: str = "DistillLoss") -> dict:
    """One loss spec checked and completed: the one validator of a spec's own keys (DistillLoss and ``KD.LOSSES``).

    Args:
        spec: a mapping with ``name`` and optional keys of :data:`SPEC_KEYS`.
        index: its position in the list (named in the error when the entry has no name).
        where: what the error sentence starts with ("DistillLoss", "KD.LOSSES").

    Returns:
        ``{"name", "weight", "params", "inputs", "tag", "start_iter"}``: name lower-case, tag default the
        name, weight a float, start_iter an int, params / inputs dicts (not copied deeper).

    Raises:
        ValueError: one sentence, ``"<where>: <tag>: ..."``, naming the key and value at fault.
    """

    if not isinstance(spec, Mapping) or "name" not in spec:
        raise ValueError(f"{where} entry {index} is {spec!r}; each entry must be a mapping with 'name' (and "
                         f"optional {', '.join(SPEC_KEYS[1:])}), e.g. {_EXAMPLE}.")
    name, tag = str(spec["name"]).lower(), spec_tag(spec)
    at = f"{where}: {tag}:"
    unknown = sorted(set(spec) - set(SPEC_KEYS))
    if unknown:
        raise ValueError(f"{at} unknown spec key {unknown[0]!r}; a spec takes {', '.join(SPEC_KEYS)}.")
    if name not in LOSS_REGISTRY:
        try:
            build_loss(name)
        except ValueError as e:  # the registry's sentence, naming the known losses
            raise ValueError(f"{where}: {e}") from None
    weight = spec.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
        raise ValueError(f"{at} spec key 'weight' must be a finite number >= 0, got {weight!r}.")
    start = spec.get("start_iter", 0)
    if isinstance(start, bool) or not isinstance(start, int) or start < 0:
        raise ValueError(f"{at} spec key 'start_iter' must be an int >= 0 (the first training iteration the term "
                         f"counts), got {start!r}.")
    maps = {}
    for key in ("params", "inputs"):
        value = spec.get(key) or {}
        if not isinstance(value, Mapping):
            raise ValueError(f"{at} spec key {key!r} must be a mapping, e.g. {key}: {{beta: 0.5}}; got {value!r}.")
        maps[key] = dict(value)
    takes = LOSS_REGISTRY[name].INPUTS
    bad = sorted(set(maps["inputs"]) - set(takes))
    if bad:
        raise ValueError(f"{at} spec key 'inputs' remaps {bad}, which the loss does not take; it takes "
                         f"{', '.join(takes)}.")
    return {"name": name, "weight": float(weight), "params": maps["params"], "inputs": maps["inputs"], "tag": tag,
            "start_iter": int(start)}


class DistillLoss(nn.Module):
    """Weighted sum-of-terms container; the losses (and their learnable parts) are submodules.

    Args:
        specs: list of spec dicts (see the module docstring).
        shapes: input name -> int (vector dim) or list of ints (channels per level), plus
            "num_samples" and "num_classes"; used to derive constructor params.
        warmup: W >= 0 steps over which every term ramps in linearly (0 = none; see the module docstring).
    """

    def __init__(self, specs, shapes: Mapping | None = None, warmup: int = 0):
        super().__init__()
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
            raise ValueError(f"DistillLoss: 'warmup' must be an int >= 0 (steps of linear ramp-in), got {warmup!r}.")
        self.warmup = warmup

        if isinstance(specs, Mapping) or not isinstance(specs, (list, tuple)):
            raise ValueError("DistillLoss: 'specs' must be a list of dicts with at least a 'name' key.")
        shapes = dict(shapes or {})
        self.losses = nn.ModuleDict()
        self.weights: dict[str, float] = {}
        self.start_iters: dict[str, int] = {}
        self.input_maps: dict[str, dict[str, str]] = {}
        for number, spec in enumerate(specs):
            spec = check_spec(spec, number)
            name, weight, start_iter, inputs = spec["name"], spec["weight"], spec["start_iter"], spec["inputs"]
            cls = LOSS_REGISTRY[name]
            loss = self._build(name, cls, spec["params"], self._view(shapes, inputs))
            tag = spec["tag"]
            key, count = tag, 1
            while key in self.losses:
                count += 1
                key = f"{tag}_{count}"
            self.losses[key] = loss
            self.weights[key] = float(weight)
            self.start_iters[key] = int(start_iter)
            self.input_maps[key] = {arg: inputs.get(arg, arg) for arg in cls.INPUTS}

    @staticmethod
    def _view(shapes: dict, inputs: dict) -> dict:
        """Shapes as the loss sees them: provided keys renamed to the loss's argument names."""
        view = dict(shapes)
        for arg, key in inputs.items():
            if key in shapes:
                view[arg] = shapes[key]
            else:
                view.pop(arg, None)
        return view

    @staticmethod
    def _build(name: str, cls, params: dict, shapes: dict) -> nn.Module:
        known = cls.param_names()
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise ValueError(f"{name}: unknown parameter(s) {unknown}; known: {', '.join(known)}.")
        merged = {**cls.shape_params(shapes), **params}
        missing = [p for p in cls.required_params() if p not in merged]
        if missing:
            raise ValueError(f"{name}: parameter {missing[0]!r} is missing; give it in the spec's 'params' or pass "
                             "the input shapes it derives from in 'shapes'.")
        return cls(**merged)

    def required_inputs(self) -> set[str]:
        """Provided keys the losses cannot run without (callers compute only these)."""
        return {self.input_maps[k][arg] for k, loss in self.losses.items() for arg in loss.required_inputs()}

    def optional_inputs(self) -> set[str]:
        """Provided keys some loss uses when given (e.g. CRD's contrast_index)."""
        used = {self.input_maps[k][arg] for k, loss in self.losses.items() for arg in loss.INPUTS}
        return used - self.required_inputs()

    def used_inputs(self) -> set[str]:
        """Provided keys the losses read: the required ones plus the optional ones a loss uses when given
        (each loss's ``used_inputs()``); a task computes these and nothing else."""
        return {self.input_maps[k][arg] for k, loss in self.losses.items() for arg in loss.used_inputs()}

    def readers(self, key: str) -> list[str]:
        """Tags of the terms that read the provided key ``key`` (after ``inputs`` remaps), e.g. ``"logits_t"``."""
        return [k for k, loss in self.losses.items() if any(self.input_maps[k][a] == key for a in loss.used_inputs())]

    def forward(self, step: int | None = None, **tensors) -> dict[str, Tensor]:
        """Provided tensors by key -> {"loss_<tag>": weight * value} (x 0 before the term's ``start_iter``, x the
        warm-up ramp during ``warmup``).

        Args:
            step: the training progress (detection: 0-based iteration; classification: 0-based epoch); needed
                when a term has ``start_iter > 0`` or the loss has a ``warmup``.

        Raises:
            NonFiniteInputError: a loss got NaN / Inf input; its ``loss`` names the term's tag.
        """
        ramp = 1.0 if not self.warmup or step is None else min(1.0, (step + 1) / self.warmup)
        out = {}
        for key, loss in self.losses.items():
            start = self.start_iters[key]
            if (start > 0 or self.warmup) and step is None:
                why = f"has start_iter {start}" if start > 0 else f"warms up over {self.warmup} steps"
                raise ValueError(f"DistillLoss: loss {key!r} {why}, so forward() needs the current training "
                                 "progress (step=...).")
            mapping, needed = self.input_maps[key], set(loss.required_inputs())
            kwargs = {}
            for arg, provided in mapping.items():
                value = tensors.get(provided)
                if value is not None:
                    kwargs[arg] = value
                elif arg in needed:
                    via = "" if provided == arg else f" (provided as {provided!r})"
                    raise ValueError(f"DistillLoss: loss {key!r} needs input {arg!r}{via}, which was not given.")
            factor = self.weights[key] if start == 0 or step >= start else 0.0
            try:
                value = loss(**kwargs) * factor
            except NonFiniteInputError as e:
                raise NonFiniteInputError(key, e.key) from None
            out[f"loss_{key}"] = value if ramp == 1.0 else value * ramp
        return out

    def extra_repr(self) -> str:
        terms = ", ".join(f"{k}: weight={w}" + (f", start_iter={self.start_iters[k]}" if self.start_iters[k] else "")
                          for k, w in self.weights.items())
        return terms + (f"; warmup={self.warmup}" if self.warmup and terms else "")


def _needed_inputs(losses) -> list[tuple[str, dict[str, str]]]:
    """(term, {provided key: loss argument}) of every input each term cannot run without."""
    if isinstance(losses, DistillLoss):
        return [(key, {losses.input_maps[key][arg]: arg for arg in loss.required_inputs()})
                for key, loss in losses.losses.items()]

    out = []
    for spec in losses:
        cls = LOSS_REGISTRY.get(str(spec.get("name")).lower()) if isinstance(spec, Mapping) else None
        if cls is None:
            continue  # not a spec of a known loss: DistillLoss names the fault when it is built
        remap = spec.get("inputs") if isinstance(spec.get("inputs"), Mapping) else {}
        out.append((spec_tag(spec),
                    {remap.get(arg, arg): arg for arg in cls.INPUTS if arg not in cls.OPTIONAL_INPUTS}))
    return out


def check_inputs(losses, provided, where: str) -> None:
    """Refuse, at build time, a configured loss that needs a tensor the task does not provide.

    Args:
        losses: a built :class:`DistillLoss` (each term's own ``required_inputs()``, which may depend on
            its parameters, e.g. MSD's ``sample_classification``), or the spec list it is built from
            (each class's always-required inputs: checked first, this names the real fault before a
            parameter the task cannot derive, e.g. CRD's ``num_samples`` in detection, is reported).
        provided: the names of :data:`kd_det.losses.vocabulary.INPUTS` the task hands to the losses.
        where: the task, for the sentence ("detection", "classification").

    Raises:
        kd_det.errors.ConfigError: e.g. "KD.LOSSES: crd needs index, which detection does not provide
            (it provides logits_s, ...)."
        ValueError: ``provided`` holds a name that is not in the vocabulary (a bug of the task).
    """
    from ..errors import ConfigError
    from .vocabulary import INPUTS

    provided = set(provided)
    unknown = sorted(provided - set(INPUTS))
    if unknown:
        raise ValueError(f"{where} declares loss inputs {unknown}, which are not in kd_det.losses.vocabulary.INPUTS.")
    for term, needed in _needed_inputs(losses):
        missing = [key if arg == key else f"{key} (as its {arg})" for key, arg in needed.items() if key not in provided]
        if missing:
            raise ConfigError(f"KD.LOSSES: {term} needs {', '.join(missing)}, which {where} does not provide "
                              f"(it provides {', '.join(k for k in INPUTS if k in provided)}).")
