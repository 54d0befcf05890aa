"""Classification model zoo behind one interface (:class:`ClsNet`).

``build_model(arch, num_classes)`` builds any registered architecture; ``CSV_ARCH`` maps
the model names used in ``kd_det/data/paper_results.csv`` to registered names.
"""
from typing import Callable, Dict

from .base import ClsNet
from . import cifar_mobile, cifar_resnet, imagenet, wrn_vgg

__all__ = ["ClsNet", "MODEL_REGISTRY", "CSV_ARCH", "IMAGENET_ARCHS", "build_model",
           "count_parameters", "parameter_table"]

IMAGENET_ARCHS = ("resnet18", "resnet34", "resnet50", "mobilenet_v2", "mobilenet_v1")

MODEL_REGISTRY: Dict[str, Callable[..., ClsNet]] = {
    # CIFAR (32x32) zoo of CRD / DKD
    **{n: getattr(cifar_resnet, n) for n in (
        "resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
        "resnet8x4", "resnet32x4", "resnet50_cifar")},
    **{n: getattr(wrn_vgg, n) for n in ("wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2",
                                        "vgg8", "vgg13")},
    **{n: getattr(cifar_mobile, n) for n in ("mobilenetv2_cifar", "shufflenetv1",
                                             "shufflenetv2")},
    # ImageNet (224x224)
    **{n: getattr(imagenet, n) for n in ("resnet18", "resnet34", "resnet50", "mobilenet_v2",
                                         "mobilenet_v1")},
}

# (dataset, model name in the paper tables) -> registered architecture
CSV_ARCH: Dict[tuple, str] = {
    **{("cifar100", n): n for n in ("resnet8x4", "resnet32x4", "resnet20", "resnet32",
                                    "resnet56", "resnet110")},
    ("cifar100", "WRN-40-2"): "wrn_40_2",
    ("cifar100", "WRN-16-2"): "wrn_16_2",
    ("cifar100", "WRN-40-1"): "wrn_40_1",
    ("cifar100", "VGG13"): "vgg13",
    ("cifar100", "VGG8"): "vgg8",
    ("cifar100", "ResNet50"): "resnet50_cifar",
    ("cifar100", "MobileNetV2"): "mobilenetv2_cifar",
    ("cifar100", "ShuffleNetV1"): "shufflenetv1",
    ("cifar100", "ShuffleNetV2"): "shufflenetv2",
    ("imagenet", "ResNet-18"): "resnet18",
    ("imagenet", "ResNet-34"): "resnet34",
    ("imagenet", "ResNet-50"): "resnet50",
    ("imagenet", "MobileNetV2"): "mobilenet_v2",
}


def build_model(arch: str, num_classes: int) -> ClsNet:
    """Build a registered architecture.

    Args:
        arch: a key of :data:`MODEL_REGISTRY`.
        num_classes: width of the classifier.

    Raises:
        KeyError: with the list of known names when ``arch`` is not registered.
    """
    if arch not in MODEL_REGISTRY:
        raise KeyError(f"Unknown model arch '{arch}'; known: {sorted(MODEL_REGISTRY)}.")
    return MODEL_REGISTRY[arch](num_classes=num_classes)


def count_parameters(model) -> int:
    """Number of parameters (buffers excluded)."""
    return sum(p.numel() for p in model.parameters())


def parameter_table(archs=None) -> str:
    """One line per model (all registered ones by default): name and parameter count with a
    CIFAR-100 / ImageNet-1k classifier."""
    lines = []
    for name in archs or MODEL_REGISTRY:
        num_classes = 1000 if name in IMAGENET_ARCHS else 100
        n = count_parameters(build_model(name, num_classes))
        lines.append(f"{name:20s} {n / 1e6:7.2f} M params ({n})")
    return "\n".join(lines)
