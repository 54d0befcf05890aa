"""Training / evaluation loop of the classification path.

One function, :func:`train`, runs a whole config: a teacher from scratch (no teacher,
no losses), a student baseline, or a distilled student with any ``KD.LOSSES``. It runs
single-process or under ``torchrun`` (DDP; NCCL on GPU, Gloo on CPU), with optional AMP,
resume from ``last_checkpoint.pth``, atomic checkpoints, top-1/top-5 evaluation,
``metrics.json`` (one JSON record per epoch) and TensorBoard events.
"""
import inspect
import json
import logging
import math
import os
import random
import time
from typing import Dict, Optional

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from ..core import atomic_save, non_finite_term, resolve_amp, resolve_teacher_mode, seed_all, write_run_info
from ..core.wandb_log import WandbRun, require_wandb
from ..errors import ConfigError, NonFiniteLossError
from ..safe_load import load_torch
from . import dist
from .checkpoint import BEST, FINAL, LAST, load_weights
from .data import build_datasets
from .distiller import Distiller, build_distill_loss
from .models import build_model

__all__ = ["train", "evaluate", "evaluate_config", "lr_at_epoch", "resolve_device"]

logger = logging.getLogger("kd_det.classification")


def resolve_device(cfg) -> torch.device:
    """cuda:LOCAL_RANK when DEVICE is "auto"/"cuda" and a GPU is visible, else cpu."""
    want = cfg.DEVICE
    if want == "cuda" and not torch.cuda.is_available():
        raise ConfigError("DEVICE is 'cuda' but no CUDA GPU is visible; use DEVICE cpu.")
    if want in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def lr_at_epoch(cfg, epoch: int) -> float:
    """Learning rate of 0-based ``epoch``: CRD's step rule (x GAMMA once ``epoch >= step``)
    or cosine annealing to 0."""
    base = cfg.SOLVER.BASE_LR
    if cfg.SOLVER.SCHEDULER == "cosine":
        return base * 0.5 * (1.0 + math.cos(math.pi * epoch / cfg.SOLVER.EPOCHS))
    return base * cfg.SOLVER.GAMMA ** sum(epoch >= s for s in cfg.SOLVER.STEPS)


def _epoch_seed(cfg, epoch: int, rank: int) -> int:
    return (cfg.SEED * 1_000_003 + epoch * 1009 + rank) % 2**31


def _worker_init(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def _amp(cfg, device: torch.device):
    """SOLVER.AMP.ENABLED / PRECISION: float16 autocast + GradScaler on CUDA, bfloat16 on CPU by default
    (:func:`kd_det.core.resolve_amp`, as detection)."""
    return resolve_amp(device, bool(cfg.SOLVER.AMP.ENABLED), cfg.SOLVER.AMP.PRECISION)


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: DataLoader, device: torch.device, cfg=None) -> Dict[str, float]:
    """Top-1 / top-5 accuracy (%) and mean cross-entropy, summed over all processes.

    Args:
        model: a :class:`ClsNet` returning logits (N, C).
        loader: this process's shard of the validation set.
    """
    was_training = model.training
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # correct1, correct5, loss, n
    for images, target, _ in loader:
        images, target = images.to(device, non_blocking=True), target.to(device)
        with _amp(cfg, device).autocast() if cfg is not None else torch.autocast(device.type, enabled=False):
            logits = model(images)
        logits = logits.float()
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hit = top == target[:, None]
        ce = torch.nn.functional.cross_entropy(logits, target, reduction="sum")
        sums += torch.stack([hit[:, :1].sum(), hit.sum(), ce, ce.new_tensor(len(target))]).double()
    dist.all_reduce_sum(sums)
    model.train(was_training)
    n = max(sums[3].item(), 1.0)
    return {"top1": 100.0 * sums[0].item() / n, "top5": 100.0 * sums[1].item() / n,
            "loss": sums[2].item() / n, "num_images": int(sums[3].item())}


def _loaders(cfg, train_set, val_set, device, rank, world):
    if cfg.SOLVER.BATCH_SIZE % world:
        raise ConfigError(f"SOLVER.BATCH_SIZE {cfg.SOLVER.BATCH_SIZE} is not divisible by the "
                          f"{world} processes.")
    per_proc = cfg.SOLVER.BATCH_SIZE // world
    sampler = DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True,
                                 seed=cfg.SEED)
    gen = torch.Generator()
    common = dict(num_workers=cfg.DATA.NUM_WORKERS, pin_memory=device.type == "cuda",
                  worker_init_fn=_worker_init)
    train_loader = DataLoader(train_set, per_proc, sampler=sampler, generator=gen,
                              drop_last=len(sampler) >= per_proc, **common)
    shard = list(range(rank, len(val_set), world))  # exact: no padding duplicates
    val_loader = DataLoader(torch.utils.data.Subset(val_set, shard), cfg.TEST.BATCH_SIZE,
                            shuffle=False, **common)
    return train_loader, val_loader


def _no_buffer_sync() -> dict:
    """DDP kwargs: buffers synced once at start, not every forward (process-local loss state
    such as CRD's memory bank stays local; BN statistics are averaged each epoch)."""
    params = inspect.signature(DistributedDataParallel.__init__).parameters
    return {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {
        "broadcast_buffers": False}


def _build(cfg, num_samples: int, device: torch.device) -> Distiller:
    num_classes = cfg.DATA.NUM_CLASSES
    student = build_model(cfg.MODEL.ARCH, num_classes)
    if cfg.MODEL.WEIGHTS:
        load_weights(student, cfg.MODEL.WEIGHTS, "MODEL.WEIGHTS")
    teacher = criterion = None
    if cfg.KD.TEACHER.ARCH:
        teacher = build_model(cfg.KD.TEACHER.ARCH, num_classes)
        load_weights(teacher, cfg.KD.TEACHER.WEIGHTS, "KD.TEACHER.WEIGHTS")
        if cfg.KD.LOSSES:
            criterion = build_distill_loss(cfg.KD.LOSSES, student, teacher, num_samples, num_classes,
                                           warmup=cfg.KD.WARMUP_EPOCHS)
    mode = resolve_teacher_mode(device, cfg.KD.TEACHER.PRECISION, cfg.KD.TEACHER.CHANNELS_LAST)
    return Distiller(student, teacher, criterion, cfg.KD.CE_WEIGHT, teacher_mode=mode).to(device)


def _train_one_epoch(cfg, model, distiller, loader, optimizer, scaler, device, epoch) -> Dict[str, float]:
    sums: Dict[str, float] = {}
    correct = seen = 0
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.SOLVER.EPOCHS}", disable=not dist.is_main(),
               dynamic_ncols=True, mininterval=1.0, leave=False)
    model.train()
    for it, (images, target, index, *extra) in enumerate(bar):
        images = images.to(device, non_blocking=True)
        target, index = target.to(device), index.to(device)
        contrast_index = extra[0].to(device) if extra else None
        with _amp(cfg, device).autocast():
            losses, logits = model(images, target, index, contrast_index, epoch)  # epoch: the terms' warm-up
        total = sum(v.float() for v in losses.values())
        what = non_finite_term({**losses, "total": total})  # one all-reduce: every process stops here
        if what:
            last = os.path.join(cfg.OUTPUT_DIR, LAST)
            raise NonFiniteLossError.stop(f"{what} at epoch {epoch + 1}, iteration {it}",
                                          last if os.path.isfile(last) else "", "a lower SOLVER.BASE_LR")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(total).backward()
        scaler.step(optimizer)
        scaler.update()
        for k, v in losses.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach()) * len(target)
        sums["loss_total"] = sums.get("loss_total", 0.0) + float(total.detach()) * len(target)
        correct += int((logits.argmax(1) == target).sum())
        seen += len(target)
        bar.set_postfix(loss=f"{float(total.detach()):.3f}", lr=f"{optimizer.param_groups[0]['lr']:.4g}")
    stats = torch.tensor([sums[k] for k in sorted(sums)] + [correct, seen], dtype=torch.float64,
                         device=device)
    dist.all_reduce_sum(stats)
    n = max(stats[-1].item(), 1.0)
    out = {f"train/{k}": stats[i].item() / n for i, k in enumerate(sorted(sums))}
    out["train/top1"] = 100.0 * stats[-2].item() / n
    return out


def _resume(path: str, distiller: Distiller, optimizer, scaler) -> tuple:
    ckpt = load_torch(path, "Checkpoint")
    distiller.student.load_state_dict(ckpt["model"])
    if distiller.distill is not None:
        distiller.distill.load_state_dict(ckpt["distill"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scaler.load_state_dict(ckpt["scaler"])
    logger.info("Resumed from %s (epoch %d).", path, ckpt["epoch"])
    return ckpt["epoch"], ckpt["best_top1"]


def _write_record(cfg, writer, record: Dict[str, float], wandb_run=None) -> None:
    """One epoch's ``record`` to metrics.json, TensorBoard and (``SOLVER.WANDB.ENABLED``) W&B, at step = epoch."""
    with open(os.path.join(cfg.OUTPUT_DIR, "metrics.json"), "a") as f:
        f.write(json.dumps(record) + "\n")
    scalars = {k: v for k, v in record.items() if k != "epoch" and isinstance(v, (int, float))}
    for k, v in scalars.items():
        writer.add_scalar(k, v, record["epoch"])
    writer.flush()
    if wandb_run is not None:
        wandb_run.log(scalars, step=record["epoch"])


def train(cfg, resume: bool = False) -> Dict[str, float]:
    """Run the config ``cfg`` to the end (see module docstring).

    Args:
        cfg: a config from :func:`kd_det.config.classification.load_cls_config`.
        resume: continue from ``OUTPUT_DIR/last_checkpoint.pth`` when it exists.

    Returns:
        the last evaluation (``top1``, ``top5``, ``loss``), ``best_top1`` and ``epochs``.
    """
    require_wandb(cfg)  # SOLVER.WANDB.ENABLED without wandb: refused before anything is written
    device = resolve_device(cfg)
    dist.init_distributed(device.type)
    rank, world = dist.get_rank(), dist.get_world_size()
    seed_all(cfg.SEED)  # identical initial weights on every process
    torch.backends.cudnn.deterministic = bool(cfg.CUDNN_DETERMINISTIC)
    torch.backends.cudnn.benchmark = not cfg.CUDNN_DETERMINISTIC
    if dist.is_main():
        os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
        with open(os.path.join(cfg.OUTPUT_DIR, "config.yaml"), "w") as f:
            f.write(cfg.dump())
    train_set, val_set = build_datasets(cfg)
    distiller = _build(cfg, len(train_set), device)
    train_loader, val_loader = _loaders(cfg, train_set, val_set, device, rank, world)
    params = [p for p in distiller.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=cfg.SOLVER.BASE_LR, momentum=cfg.SOLVER.MOMENTUM,
                                weight_decay=cfg.SOLVER.WEIGHT_DECAY, nesterov=cfg.SOLVER.NESTEROV)
    scaler = _amp(cfg, device).grad_scaler()  # enabled for float16 only
    start, best = 0, 0.0
    last_path = os.path.join(cfg.OUTPUT_DIR, LAST)
    if resume and os.path.isfile(last_path):
        start, best = _resume(last_path, distiller, optimizer, scaler)
    if dist.is_main():
        _write_run_info(cfg, world, start, device)
    model = distiller
    if world > 1:
        model = DistributedDataParallel(
            distiller, device_ids=[device.index] if device.type == "cuda" else None,
            **_no_buffer_sync())
    writer = None
    if dist.is_main() and start == 0 and os.path.isfile(os.path.join(cfg.OUTPUT_DIR, "metrics.json")):
        os.remove(os.path.join(cfg.OUTPUT_DIR, "metrics.json"))  # a fresh run starts a fresh log
    if dist.is_main():
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(cfg.OUTPUT_DIR)
    wandb_run = WandbRun(cfg, "classification") if dist.is_main() and cfg.SOLVER.WANDB.ENABLED else None
    result: Optional[Dict[str, float]] = None
    epochs = cfg.SOLVER.EPOCHS
    for epoch in range(start, epochs):
        t0 = time.perf_counter()
        lr = lr_at_epoch(cfg, epoch)
        for g in optimizer.param_groups:
            g["lr"] = lr
        seed = _epoch_seed(cfg, epoch, rank)
        seed_all(seed)
        train_loader.generator.manual_seed(seed)
        train_loader.sampler.set_epoch(epoch)
        record = {"epoch": epoch + 1, "lr": lr}
        record.update(_train_one_epoch(cfg, model, distiller, train_loader, optimizer, scaler,
                                       device, epoch))
        dist.average_buffers(distiller.student)
        dist.check_in_sync(distiller, "student and loss")
        last = epoch + 1 == epochs
        if last or (epoch + 1) % cfg.TEST.EVAL_PERIOD == 0:
            result = evaluate(distiller.student, val_loader, device, cfg)
            record.update({f"val/{k}": v for k, v in result.items()})
            if result["top1"] > best or best == 0.0:
                best = max(best, result["top1"])
                if dist.is_main():
                    _save_weights(cfg, distiller, os.path.join(cfg.OUTPUT_DIR, BEST))
        record["val/best_top1"] = best
        record["time/epoch_s"] = time.perf_counter() - t0
        if dist.is_main():
            _write_record(cfg, writer, record, wandb_run)
            logger.info("epoch %d/%d %s", epoch + 1, epochs, json.dumps(
                {k: round(v, 4) for k, v in record.items() if k != "epoch"}))
            if last or (epoch + 1) % cfg.SOLVER.CHECKPOINT_PERIOD == 0:
                atomic_save({"model": distiller.student.state_dict(),
                             "distill": (distiller.distill.state_dict()
                                         if distiller.distill is not None else {}),
                             "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                             "epoch": epoch + 1, "best_top1": best, "arch": cfg.MODEL.ARCH,
                             "num_classes": cfg.DATA.NUM_CLASSES, "cfg": cfg.dump()}, last_path)
        dist.barrier()
    if result is None:  # resumed after the last epoch: just evaluate
        result = evaluate(distiller.student, val_loader, device, cfg)
    if dist.is_main():
        _save_weights(cfg, distiller, os.path.join(cfg.OUTPUT_DIR, FINAL))
        writer.close()
        if wandb_run is not None:
            wandb_run.close()
    dist.barrier()
    return {**result, "best_top1": best, "epochs": epochs}


def _write_run_info(cfg, world: int, start: int, device: torch.device) -> None:
    """``OUTPUT_DIR/run_info.json``: processes and samples per process of this launch (contrastive
    losses draw negatives from each process's own batch)."""
    write_run_info(cfg.OUTPUT_DIR, {
        "task": "classification", "world_size": world, "images_per_process": cfg.SOLVER.BATCH_SIZE // world,
        "batch_size": cfg.SOLVER.BATCH_SIZE, "seed": cfg.SEED, "device": str(device),
        "torch_threads": torch.get_num_threads(), "start_epoch": start, "epochs": cfg.SOLVER.EPOCHS,
        "time": time.strftime("%Y-%m-%d %H:%M:%S")})


def _save_weights(cfg, distiller: Distiller, path: str) -> None:
    atomic_save({"model": distiller.student.state_dict(), "arch": cfg.MODEL.ARCH,
                 "num_classes": cfg.DATA.NUM_CLASSES}, path)


def evaluate_config(cfg) -> Dict[str, float]:
    """Evaluate ``MODEL.WEIGHTS`` (an ``MODEL.ARCH`` checkpoint) on the validation set."""
    if not cfg.MODEL.WEIGHTS:
        raise ConfigError("--eval-only needs MODEL.WEIGHTS (a local checkpoint of MODEL.ARCH).")
    device = resolve_device(cfg)
    dist.init_distributed(device.type)
    _, val_set = build_datasets(cfg)
    model = build_model(cfg.MODEL.ARCH, cfg.DATA.NUM_CLASSES)
    load_weights(model, cfg.MODEL.WEIGHTS, "MODEL.WEIGHTS")
    rank, world = dist.get_rank(), dist.get_world_size()
    shard = torch.utils.data.Subset(val_set, list(range(rank, len(val_set), world)))
    loader = DataLoader(shard, cfg.TEST.BATCH_SIZE, num_workers=cfg.DATA.NUM_WORKERS)
    return evaluate(model.to(device), loader, device, cfg)
