"""The training step: Detectron2's ``SimpleTrainer`` step plus mixed precision on CUDA *and* CPU,
and a stop with one sentence when a loss term turns NaN/Inf.

Detectron2 0.6 has ``SimpleTrainer`` (float32) and ``AMPTrainer`` (CUDA float16 only; it asserts
CUDA). :class:`KDTrainLoop` is both:

* ``SOLVER.AMP.ENABLED False``: exactly ``SimpleTrainer.run_step``;
* ``SOLVER.AMP.ENABLED True`` on CUDA: float16 autocast + ``GradScaler`` (what ``AMPTrainer`` does),
  or bfloat16 without a scaler with ``SOLVER.AMP.PRECISION bfloat16``;
* ``SOLVER.AMP.ENABLED True`` on CPU: bfloat16 autocast, no scaler (bf16 has float32's range).

The distillation losses compute in float32 under either autocast (``kd_det.losses`` turns autocast
off inside every loss), so temperature-scaled softmax / KL / contrastive terms never run in half
precision.

Non-finite losses. Every rank checks every loss term after the forward pass and the ranks agree
(one all-reduce of a flag per term, :func:`kd_det.core.non_finite_term`) before anything is
back-propagated, so a NaN stops every process at the same iteration *before* the optimizer step:
the weights in memory and every checkpoint on disk stay the last good ones. The error names the
term, the iteration and the checkpoint to resume from.

Exact resume. The step's state (``state_dict``) holds the random states of torch, numpy and
Python (and CUDA; :func:`kd_det.core.get_rng_state`) besides the GradScaler, and the data
iterator is created only by :meth:`start`, so a resumed run can draw the same random numbers as
an uninterrupted one (see ``Trainer.resume_or_load``).
"""
import time

import torch
from detectron2.engine import SimpleTrainer, TrainerBase
from detectron2.utils import comm

from ...core import AmpMode, get_rng_state, non_finite_term, resolve_amp, set_rng_state
from ...errors import NonFiniteLossError
from ...losses import NonFiniteInputError

__all__ = ["KDTrainLoop", "amp_mode"]


def amp_mode(cfg):
    """The :class:`kd_det.core.AmpMode` of ``cfg`` (MODEL.DEVICE, SOLVER.AMP.ENABLED / PRECISION)."""
    return resolve_amp(cfg.MODEL.DEVICE, cfg.SOLVER.AMP.ENABLED, cfg.SOLVER.AMP.PRECISION)


class KDTrainLoop(SimpleTrainer):
    """``SimpleTrainer`` with optional autocast (see module doc) and the non-finite loss stop.

    Args:
        model, data_loader, optimizer: as for ``SimpleTrainer``.
        amp: a :class:`kd_det.core.AmpMode` (:func:`amp_mode`); ``None`` = float32.
        last_checkpoint: callable returning the path of the last checkpoint ("" if none), named in
            the non-finite loss error (``Trainer`` passes its checkpointer's ``get_checkpoint_file``).
    """

    def __init__(self, model, data_loader, optimizer, amp=None, last_checkpoint=lambda: ""):
        TrainerBase.__init__(self)  # not SimpleTrainer.__init__: it would start the data iterator now
        model.train()
        self.model, self.data_loader, self.optimizer = model, data_loader, optimizer
        self.amp, self.last_checkpoint = amp or AmpMode("cpu"), last_checkpoint
        self.grad_scaler = self.amp.grad_scaler() if self.amp.needs_scaler else None
        self._iterator, self._saved_rng = None, None

    @property
    def _data_loader_iter(self):
        if self._iterator is None:
            self.start()
        return self._iterator

    def start(self):
        """Create the data iterator (workers start here), then restore a checkpoint's random states."""
        self._iterator = iter(self.data_loader)
        if self._saved_rng is not None and comm.get_rank() == 0:
            set_rng_state(self._saved_rng)
        self._saved_rng = None

    def run_step(self):
        assert self.model.training, "[KDTrainLoop] model was changed to eval mode!"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start

        with self.amp.autocast():
            try:
                loss_dict = self.model(data)
            except NonFiniteInputError as e:  # a distillation loss received NaN/Inf features or logits
                raise self._stop(f"Loss term loss_{e.loss} got non-finite input '{e.key}'") from None
            except FloatingPointError as e:  # Detectron2's RPN: "Predicted boxes or scores contain Inf/NaN"
                raise self._stop(f"The forward pass diverged ({str(e).split('.')[0]})") from None
        if isinstance(loss_dict, torch.Tensor):
            loss_dict = {"total_loss": loss_dict}
        self._check_finite(loss_dict)
        losses = sum(loss_dict.values())

        self.optimizer.zero_grad()
        (self.grad_scaler.scale(losses) if self.grad_scaler else losses).backward()
        self._write_metrics(loss_dict, data_time)
        if self.grad_scaler:
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            self.optimizer.step()

    def _check_finite(self, loss_dict):
        """Raise :class:`NonFiniteLossError` on every rank if any rank has a NaN/Inf loss term."""
        what = non_finite_term(loss_dict)  # one all-reduce: the ranks agree, all of them stop here
        if what:
            raise self._stop(what)

    def _stop(self, what):
        return NonFiniteLossError.stop(f"{what} at iteration {self.iter}", self.last_checkpoint(),
                                       "a lower SOLVER.BASE_LR or SOLVER.CLIP_GRADIENTS.ENABLED True")

    def state_dict(self):
        ret = super().state_dict()
        ret["rng"] = get_rng_state()
        if self.grad_scaler:
            ret["grad_scaler"] = self.grad_scaler.state_dict()
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        self._saved_rng = state_dict.get("rng")  # applied by start(), after the iterator exists
        if self.grad_scaler and "grad_scaler" in state_dict:
            self.grad_scaler.load_state_dict(state_dict["grad_scaler"])
