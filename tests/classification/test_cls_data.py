"""Local datasets: CIFAR-100 pickles, ImageNet class folders, clear errors on wrong layouts."""
import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from kd_det.config.classification import get_cls_cfg
from kd_det.classification.data import (CifarPickleDataset, ContrastIndexDataset, ImageFolderWithIndex,
                                        build_datasets, write_cifar_pickles)
from kd_det.errors import DatasetError

from cls_helpers import synthetic_split


def _cfg(**kw):
    cfg = get_cls_cfg()
    for k, v in kw.items():
        node, key = k.split("__")
        setattr(getattr(cfg, node), key, v)
    return cfg


def test_cifar_pickles_roundtrip(tmp_path):
    images, labels = synthetic_split(10, 3)
    write_cifar_pickles(str(tmp_path), (images, labels), (images[:4], labels[:4]), 5)
    cfg = _cfg(DATA__ROOT=str(tmp_path), DATA__NUM_CLASSES=5, INPUT__MEAN=[0.0] * 3,
               INPUT__STD=[1.0] * 3)
    train, val = build_datasets(cfg)
    assert (len(train), len(val)) == (10, 4)
    img, target, index = val[2]  # validation: no augmentation, exact pixels
    assert (target, index) == (int(labels[2]), 2)
    np.testing.assert_allclose(img.permute(1, 2, 0).numpy() * 255, images[2], atol=1e-3)
    # the cifar-100-python folder itself is accepted as DATA.ROOT too
    same = CifarPickleDataset(os.path.join(str(tmp_path), "cifar-100-python"), "train",
                              lambda x: x, 5)
    assert len(same) == 10


def test_training_augmentation_keeps_shape(tmp_path):
    images, labels = synthetic_split(4, 0)
    write_cifar_pickles(str(tmp_path), (images, labels), (images, labels), 5)
    train, _ = build_datasets(_cfg(DATA__ROOT=str(tmp_path), DATA__NUM_CLASSES=5))
    img, _, _ = train[0]
    assert img.shape == (3, 32, 32) and img.dtype == torch.float32


def test_missing_cifar_names_the_expected_file(tmp_path):
    with pytest.raises(DatasetError, match=r"cifar-100-python.*train"):
        build_datasets(_cfg(DATA__ROOT=str(tmp_path)))


def test_bad_cifar_content(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    with open(folder / "train", "wb") as f:
        pickle.dump({b"data": np.zeros((3, 100), np.uint8), b"fine_labels": [0, 1, 2]}, f)
    with pytest.raises(DatasetError, match=r"\(N, 3072\)"):
        CifarPickleDataset(str(tmp_path), "train", lambda x: x)
    with open(folder / "train", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"fine_labels": [0, 7]}, f)
    with pytest.raises(DatasetError, match="NUM_CLASSES is 5"):
        CifarPickleDataset(str(tmp_path), "train", lambda x: x, num_classes=5)


def _write_folder(root, split, classes, per_class=2):
    for c in classes:
        os.makedirs(root / split / c, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(np.full((40, 48, 3), 30 * i, np.uint8)).save(root / split / c / f"{i}.png")


def test_imagenet_folders(tmp_path):
    _write_folder(tmp_path, "train", ["n01", "n02", "n03"])
    _write_folder(tmp_path, "val", ["n01", "n02", "n03"], 1)
    cfg = _cfg(DATA__NAME="imagenet", DATA__ROOT=str(tmp_path), DATA__NUM_CLASSES=3, INPUT__SIZE=32)
    train, val = build_datasets(cfg)
    assert (len(train), len(val)) == (6, 3)
    img, target, index = train[5]
    assert img.shape == (3, 32, 32) and (target, index) == (2, 5)
    assert val[1][0].shape == (3, 32, 32)


def test_imagenet_wrong_layout(tmp_path):
    _write_folder(tmp_path, "train", ["a", "b"])
    cfg = _cfg(DATA__NAME="imagenet", DATA__ROOT=str(tmp_path), DATA__NUM_CLASSES=2)
    with pytest.raises(DatasetError, match=r"val/<class>/<image>"):
        build_datasets(cfg)
    with pytest.raises(DatasetError, match="2 class folders but DATA.NUM_CLASSES is 1000"):
        ImageFolderWithIndex(str(tmp_path), "train", None, 1000)


def test_contrast_index_draws_negatives_from_other_classes(tmp_path):
    images, labels = synthetic_split(40, 5)
    write_cifar_pickles(str(tmp_path), (images, labels), (images[:2], labels[:2]), 5)
    train, _ = build_datasets(_cfg(DATA__ROOT=str(tmp_path), DATA__NUM_CLASSES=5, DATA__CONTRAST_K=300))
    assert isinstance(train, ContrastIndexDataset)
    for i in (0, 17, 39):
        img, target, index, contrast = train[i]
        assert contrast.dtype == torch.int64 and contrast.shape == (301,)
        assert int(contrast[0]) == index == i
        assert not (labels[contrast[1:].numpy()] == target).any()
        assert len(set(contrast[1:].tolist())) > 10  # drawn, not a constant
