"""Training engine: config setup, Detectron2 trainer, launcher (NCCL on GPU, Gloo on CPU)."""
from .launch import create_ddp_model, launch  # noqa: F401
from .setup import setup  # noqa: F401
from .trainer import Trainer, evaluate_teacher, write_evaluation  # noqa: F401
