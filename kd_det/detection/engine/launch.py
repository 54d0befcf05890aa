"""Start one process per device with real torch.distributed: NCCL on GPUs, Gloo on CPU.

Detectron2 0.6's ``launch`` asserts CUDA and NCCL; this one keeps its signature and
behaviour on GPUs and adds CPU processes (``--num-gpus N`` on a machine without
GPUs = N Gloo processes). Under ``torchrun`` (``WORLD_SIZE`` / ``LOCAL_RANK`` set in
the environment) the process group is built from ``env://`` and nothing is spawned.
"""
import logging
import os
import sys
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from detectron2.utils import comm
from torch.nn.parallel import DistributedDataParallel

from ...errors import UserError

__all__ = ["launch", "create_ddp_model", "DEFAULT_TIMEOUT"]

DEFAULT_TIMEOUT = timedelta(minutes=30)
logger = logging.getLogger(__name__)


def _free_port():
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _backend():
    return "nccl" if torch.cuda.is_available() else "gloo"


def _init_group(init_method, world_size, rank, local_rank, num_per_machine, timeout):
    dist.init_process_group(backend=_backend(), init_method=init_method, world_size=world_size,
                            rank=rank, timeout=timeout)
    machine = rank // num_per_machine
    for i in range(world_size // num_per_machine):  # every rank must create every group
        pg = dist.new_group(list(range(i * num_per_machine, (i + 1) * num_per_machine)))
        if i == machine:
            comm._LOCAL_PROCESS_GROUP = pg
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    comm.synchronize()


def _worker(local_rank, main_func, world_size, num_per_machine, machine_rank, dist_url, args, timeout, errors):
    rank = machine_rank * num_per_machine + local_rank
    _init_group(dist_url, world_size, rank, local_rank, num_per_machine, timeout)
    try:
        main_func(*args)
    except UserError as e:  # hand the sentence to the parent, which raises it again: no traceback wall
        errors.put(str(e))
        sys.exit(2)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def launch(main_func, num_gpus_per_machine, num_machines=1, machine_rank=0, dist_url=None, args=(),
           timeout=DEFAULT_TIMEOUT):
    """Run ``main_func(*args)`` in ``num_gpus_per_machine`` processes on each of ``num_machines``.

    On a machine without CUDA each "GPU" is a CPU process (Gloo). ``dist_url="auto"``
    picks a free local port (single machine only).
    """
    if "WORLD_SIZE" in os.environ and "LOCAL_RANK" in os.environ and int(os.environ["WORLD_SIZE"]) > 1:
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"]))
        _init_group("env://", int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"]),
                    int(os.environ["LOCAL_RANK"]), local_world, timeout)
        try:
            return main_func(*args)
        finally:
            dist.destroy_process_group()
    world_size = num_machines * num_gpus_per_machine
    if world_size <= 1:
        return main_func(*args)
    if torch.cuda.is_available() and num_gpus_per_machine > torch.cuda.device_count():
        raise UserError(f"--num-gpus {num_gpus_per_machine} is larger than the {torch.cuda.device_count()} "
                         "GPUs this machine has.")
    if dist_url in (None, "auto"):
        if num_machines > 1:
            raise UserError("--dist-url auto works on one machine only; give tcp://HOST:PORT of machine 0.")
        dist_url = f"tcp://127.0.0.1:{_free_port()}"
    logger.info(f"Starting {num_gpus_per_machine} {_backend()} processes ({world_size} in all) at {dist_url}")
    errors = mp.get_context("spawn").SimpleQueue()
    # When one process fails, mp.spawn stops the others and logs "Terminating process N via signal
    # SIGTERM" on stderr for each; the failure itself (sentence or traceback) already says what happened.
    logging.getLogger("torch.multiprocessing.spawn").setLevel(logging.ERROR)
    try:
        mp.spawn(_worker, nprocs=num_gpus_per_machine, daemon=False,
                 args=(main_func, world_size, num_gpus_per_machine, machine_rank, dist_url, args, timeout, errors))
    except mp.ProcessExitedException:
        if errors.empty():
            raise
        raise UserError(errors.get()) from None


def create_ddp_model(model, *, fp16_compression=False, **kwargs):
    """Detectron2's ``create_ddp_model``, with ``device_ids=None`` for a CPU model (Gloo)."""
    if comm.get_world_size() == 1:
        return model
    if "device_ids" not in kwargs:
        on_cuda = next(model.parameters()).is_cuda
        kwargs["device_ids"] = [comm.get_local_rank()] if on_cuda else None
    ddp = DistributedDataParallel(model, **kwargs)
    if fp16_compression:
        from torch.distributed.algorithms.ddp_comm_hooks import default as comm_hooks

        ddp.register_comm_hook(state=None, hook=comm_hooks.fp16_compress_hook)
    return ddp
