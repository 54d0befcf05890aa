"""Helpers of the contrastive losses (CKD, DCD): blocked row log-sum-exp and the RoIs-of-one-object handling."""
from __future__ import annotations


import torch
from torch import Tensor

__all__ = ['row_logsumexp', 'check_same_object', 'select_objects', 'same_object_mask', 'masked_info_nce', 'SAME_OBJECT_MODES']

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
