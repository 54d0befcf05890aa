"""The NaN/Inf check of the loss terms, agreed by every process before anything is back-propagated."""
from typing import Mapping, Optional

import torch
import torch.distributed as dist

__all__ = ["non_finite_term"]


def non_finite_term(terms: Mapping[str, torch.Tensor]) -> Optional[str]:
    """None if every term is finite in every process, else what is wrong with the first bad term
    (sorted names): "Loss term loss_cls is nan" or "Loss term loss_cls is non-finite on another rank".

    Args:
        terms: name -> scalar tensor (any float dtype; a 1-element tensor is fine).

    When torch.distributed is initialised with more than one process, one all-reduce of a flag per
    term makes every process return the same answer, so all of them stop at the same step; it is
    then a collective: every process must call it at every step, with the same names.
    """
    names = sorted(terms)
    values = torch.stack([terms[k].detach().float().reshape(()) for k in names])
    bad = (~torch.isfinite(values)).float()
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(bad)
    if not bad.any():
        return None
    i = int(bad.nonzero()[0])
    if torch.isfinite(values[i]):
        return f"Loss term {names[i]} is non-finite on another rank"
    return f"Loss term {names[i]} is {values[i].item()}"
