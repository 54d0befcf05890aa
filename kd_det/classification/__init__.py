"""Classification path: CIFAR / ImageNet teacher and student training with the loss modules
of :mod:`kd_det.losses`, and conversion of distilled backbones for Detectron2 students.

Nothing here imports Detectron2 except :mod:`kd_det.classification.convert` (lazily).
"""
