#!/usr/bin/env python
"""kd_det: knowledge distillation for object detection on Detectron2.

torch / torchvision are pinned in one place, ``requirements/torch.txt``, and
installed by the Makefile before this package; Detectron2 is installed by
``tools/install_detectron2.py`` (Python-only when no full build is present).
Only pure-Python dependencies are declared here. ``lvis`` (LVIS evaluation) is pinned in
``requirements/lvis.txt`` and installed by the Makefile with ``--no-deps``: an extra here would pull its
declared opencv-python, whose cv2 overwrites opencv-python-headless's with a build that needs libGL.
"""
from setuptools import find_packages, setup

setup(
    name="kd_det",
    version="0.1.0",
    description="Knowledge distillation for object detection (DCD, CKD, ReviewKD, DKD, KD) on Detectron2",
    packages=find_packages(include=("kd_det", "kd_det.*")),
    package_data={"kd_det": ["data/*.csv", "data/*.json"]},
    python_requires=">=3.9",
    install_requires=[
        "numpy",
        "Pillow",
        "opencv-python-headless",
        "pycocotools>=2.0.2",
        "faster-coco-eval>=1.5",
        "fvcore>=0.1.5,<0.1.6",
        "iopath>=0.1.7",
        "yacs>=0.1.8",
        "pyyaml",
        "omegaconf>=2.1",
        "hydra-core>=1.1",
        "tabulate",
        "termcolor>=1.1",
        "cloudpickle",
        "tqdm",
        "matplotlib",
        "tensorboard",
        "pydot",
        "scikit-learn",
        "scipy",  # t-distribution confidence intervals of the seed reports
        "submitit>=1.4",  # tools/sweep.py on a Slurm cluster (and its local executor)
    ],
    extras_require={
        "deploy": ["onnx", "onnxruntime"],  # export_student.py --format onnx, and running the graph on the CPU
        "wandb": ["wandb"],  # SOLVER.WANDB.ENABLED
        "test": ["pytest", "onnx", "onnxruntime", "wandb"],  # the suite exercises both extras
    },
)
