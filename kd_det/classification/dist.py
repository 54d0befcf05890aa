"""Minimal torch.distributed helpers for the classification path (no Detectron2).

Processes are started by ``torchrun`` (``WORLD_SIZE``/``RANK``/``LOCAL_RANK`` in the
environment); the backend is NCCL on GPUs and Gloo on CPU.
"""
import os

import torch
import torch.distributed as dist

__all__ = ["init_distributed", "get_rank", "get_world_size", "is_main", "all_reduce_sum",
           "average_buffers", "check_in_sync", "barrier", "cleanup"]


def init_distributed(device_kind: str) -> None:
    """Join the process group described by torchrun's environment (no-op when WORLD_SIZE<=1).

    Args:
        device_kind: "cuda" selects NCCL, anything else Gloo.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return
    backend = "nccl" if device_kind == "cuda" else "gloo"
    if device_kind == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend, init_method="env://")


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def get_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    return get_rank() == 0


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """In-place sum over processes (identity in a single process); returns ``t``."""
    if get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def average_buffers(module: torch.nn.Module) -> None:
    """Average floating buffers (BatchNorm running statistics) over processes.

    Training runs with ``broadcast_buffers=False`` (so each process keeps its own loss
    state, e.g. a memory bank); before evaluation and checkpointing the student's BN
    statistics are made identical on every process with this call.
    """
    world = get_world_size()
    if world <= 1:
        return
    for buf in module.buffers():
        if buf.is_floating_point():
            dist.all_reduce(buf, op=dist.ReduceOp.SUM)
            buf.div_(world)


def check_in_sync(module: torch.nn.Module, what: str = "student") -> None:
    """Raise RuntimeError if the parameters differ between processes (DDP replicas diverged).

    Compares one float64 checksum per process; identical replicas give identical sums.
    """
    world = get_world_size()
    if world <= 1:
        return
    first = next(module.parameters())
    local = torch.stack([p.detach().double().sum() for p in module.parameters()]).sum()
    sums = [torch.zeros((), dtype=torch.float64, device=first.device) for _ in range(world)]
    dist.all_gather(sums, local.reshape(()))
    if any(float(s) != float(sums[0]) for s in sums):
        raise RuntimeError(f"The {what} parameters differ between processes: checksums "
                           f"{[float(s) for s in sums]}.")


def barrier() -> None:
    if get_world_size() > 1:
        dist.barrier()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
