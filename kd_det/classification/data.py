"""Classification data from local paths only (nothing is downloaded).

* CIFAR-100: the standard ``cifar-100-python`` pickles (``train``, ``test``), as extracted
  from ``cifar-100-python.tar.gz``. ``DATA.ROOT`` is the folder holding ``cifar-100-python/``
  (or that folder itself).
* ImageNet: ``DATA.ROOT/train/<class>/<image>`` and ``DATA.ROOT/val/<class>/<image>`` (the
  usual ``ImageFolder`` layout, validation images sorted into class folders).

Every sample is ``(image (3, H, W) float, target int64, index int64)``; ``index`` is the
position in the training set (CRD's memory bank). With ``DATA.CONTRAST_K = K > 0`` training
samples also carry ``contrast_index`` (K + 1,) int64: the own index, then K indices of samples
of other classes, drawn as CRD's data loader draws its negatives.
"""
import os
import pickle
from typing import Dict, Tuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import datasets as tv_datasets
from torchvision import transforms as T

from ..errors import DatasetError, UserError
from ..safe_load import load_pickle

__all__ = ["CifarPickleDataset", "ImageFolderWithIndex", "ContrastIndexDataset", "build_datasets",
           "build_transforms", "write_cifar_pickles"]

CIFAR_FILES = {"train": "train", "val": "test"}


def _cifar_dir(root: str) -> str:
    """``root/cifar-100-python``, or ``root`` itself when it holds the pickles."""
    if os.path.isfile(os.path.join(root, "train")) or os.path.isfile(os.path.join(root, "test")):
        return root
    return os.path.join(root, "cifar-100-python")


def _load_pickle(path: str) -> Dict[str, object]:
    if not os.path.isfile(path):
        raise DatasetError(
            f"CIFAR-100 file {path} not found: DATA.ROOT must hold cifar-100-python/train and "
            "cifar-100-python/test (the extracted cifar-100-python.tar.gz).")
    try:
        raw = load_pickle(path, "CIFAR-100 file")
    except UserError as e:
        raise DatasetError(str(e)) from None
    if not isinstance(raw, dict):
        raise DatasetError(f"CIFAR-100 file {path} holds a {type(raw).__name__}, expected a dict "
                           "with 'data' and 'fine_labels'.")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in raw.items()}


class CifarPickleDataset(Dataset):
    """A split of CIFAR-100 read from its python pickle.

    Args:
        root: folder holding ``cifar-100-python/`` (or that folder).
        split: "train" or "val" (the ``test`` pickle).
        transform: PIL image -> tensor transform.
        num_classes: labels must lie in [0, num_classes).
        limit: keep only the first ``limit`` samples (0 = all).
    """

    def __init__(self, root: str, split: str, transform, num_classes: int = 100, limit: int = 0):
        path = os.path.join(_cifar_dir(root), CIFAR_FILES[split])
        raw = _load_pickle(path)
        label_key = "fine_labels" if "fine_labels" in raw else "labels"
        if "data" not in raw or label_key not in raw:
            raise DatasetError(f"CIFAR-100 file {path} lacks the 'data' or 'fine_labels' entry "
                               f"(found keys {sorted(raw)}).")
        data = np.asarray(raw["data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3072:
            raise DatasetError(f"CIFAR-100 file {path}: 'data' has shape {data.shape}, expected "
                               "(N, 3072) uint8 rows (3 x 32 x 32, channel-major).")
        labels = np.asarray(raw[label_key], dtype=np.int64)
        if len(labels) != len(data):
            raise DatasetError(f"CIFAR-100 file {path}: {len(data)} images but {len(labels)} labels.")
        if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
            raise DatasetError(f"CIFAR-100 file {path}: labels span [{labels.min()}, {labels.max()}] "
                               f"but DATA.NUM_CLASSES is {num_classes}.")
        if limit:
            data, labels = data[:limit], labels[:limit]
        self.images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # N, H, W, C
        self.targets = labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, int, int]:
        img = self.transform(Image.fromarray(self.images[index]))
        return img, int(self.targets[index]), index


class ImageFolderWithIndex(tv_datasets.ImageFolder):
    """``ImageFolder`` that also returns the sample index; errors name the expected layout."""

    def __init__(self, root: str, split: str, transform, num_classes: int, limit: int = 0):
        folder = os.path.join(root, split)
        if not os.path.isdir(folder):
            raise DatasetError(f"ImageNet folder {folder} not found: DATA.ROOT must hold "
                               f"{split}/<class>/<image> (one sub-folder per class).")
        try:
            super().__init__(folder, transform=transform)
        except FileNotFoundError as e:
            raise DatasetError(f"ImageNet folder {folder}: {e}") from None
        if len(self.classes) != num_classes:
            raise DatasetError(f"ImageNet folder {folder} has {len(self.classes)} class folders but "
                               f"DATA.NUM_CLASSES is {num_classes}.")
        if limit:
            self.samples = self.samples[:limit]
            self.targets = self.targets[:limit]
            self.imgs = self.samples

    def __getitem__(self, index: int):
        img, target = super().__getitem__(index)
        return img, target, index


class ContrastIndexDataset(Dataset):
    """Adds CRD's negatives to each sample: ``(image, target, index, contrast_index)``.

    Args:
        base: a dataset returning ``(image, target, index)`` with ``base.targets``.
        k: negatives per sample (CRD: 16384), drawn with replacement among other classes.
    """

    def __init__(self, base: Dataset, k: int):
        self.base, self.k = base, int(k)
        self.targets = np.asarray(base.targets, dtype=np.int64)
        if len(np.unique(self.targets)) < 2:
            raise DatasetError("DATA.CONTRAST_K needs a training set with at least two classes.")

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int):
        img, target, idx = self.base[index]
        pick = np.random.randint(0, len(self.targets), self.k)
        same = self.targets[pick] == target
        while same.any():  # rejection sampling: negatives come from other classes
            pick[same] = np.random.randint(0, len(self.targets), int(same.sum()))
            same = self.targets[pick] == target
        return img, target, idx, torch.from_numpy(np.concatenate([[idx], pick]).astype(np.int64))


def build_transforms(cfg, train: bool):
    """The CRD recipe: CIFAR RandomCrop(32, pad 4) + flip; ImageNet RandomResizedCrop + flip
    (train) / Resize(size / 0.875) + CenterCrop (val); normalisation by INPUT.MEAN/STD.

    CIFAR-format images are first resized when INPUT.SIZE is not 32 (padding scales along).
    """
    size = cfg.INPUT.SIZE
    norm = [T.ToTensor(), T.Normalize(cfg.INPUT.MEAN, cfg.INPUT.STD)]
    flip = [T.RandomHorizontalFlip()] if cfg.INPUT.HFLIP else []
    if cfg.DATA.NAME == "cifar100":
        resize = [T.Resize(size)] if size != 32 else []
        aug = resize + ([T.RandomCrop(size, padding=size // 8)] + flip if train else [])
    elif train:
        aug = [T.RandomResizedCrop(size)] + flip
    else:
        aug = [T.Resize(int(round(size / 0.875))), T.CenterCrop(size)]
    return T.Compose(aug + norm)


def build_datasets(cfg):
    """(train set, val set) for ``cfg.DATA.NAME``; raises DatasetError on a wrong path/layout."""
    kinds = {"cifar100": CifarPickleDataset, "imagenet": ImageFolderWithIndex}
    if cfg.DATA.NAME not in kinds:
        raise DatasetError(f"DATA.NAME is {cfg.DATA.NAME!r}; expected one of {sorted(kinds)}.")
    cls = kinds[cfg.DATA.NAME]
    train = cls(cfg.DATA.ROOT, "train", build_transforms(cfg, True), cfg.DATA.NUM_CLASSES,
                cfg.DATA.TRAIN_LIMIT)
    val = cls(cfg.DATA.ROOT, "val", build_transforms(cfg, False), cfg.DATA.NUM_CLASSES,
              cfg.DATA.VAL_LIMIT)
    if len(train) == 0:
        raise DatasetError(f"The {cfg.DATA.NAME} training set under {cfg.DATA.ROOT} is empty.")
    if cfg.DATA.CONTRAST_K > 0:
        train = ContrastIndexDataset(train, cfg.DATA.CONTRAST_K)
    return train, val


def write_cifar_pickles(folder: str, train: Tuple[np.ndarray, np.ndarray],
                        test: Tuple[np.ndarray, np.ndarray], num_classes: int = 100) -> str:
    """Write arrays as a ``cifar-100-python`` folder (tests and the digits example use it).

    Args:
        folder: parent folder; ``folder/cifar-100-python/{train,test,meta}`` are written.
        train, test: (images (N, 32, 32, 3) uint8, labels (N,) int).
        num_classes: number of fine label names written to ``meta``.

    Returns:
        the path of the ``cifar-100-python`` folder.
    """
    out = os.path.join(folder, "cifar-100-python")
    os.makedirs(out, exist_ok=True)
    for name, (images, labels) in (("train", train), ("test", test)):
        images = np.asarray(images, dtype=np.uint8)
        assert images.shape[1:] == (32, 32, 3), images.shape
        blob = {b"data": images.transpose(0, 3, 1, 2).reshape(len(images), -1),
                b"fine_labels": [int(v) for v in labels],
                b"coarse_labels": [0] * len(labels)}
        with open(os.path.join(out, name), "wb") as f:
            pickle.dump(blob, f, protocol=2)
    with open(os.path.join(out, "meta"), "wb") as f:
        pickle.dump({b"fine_label_names": [f"class_{i}" for i in range(num_classes)]}, f)
    return out
