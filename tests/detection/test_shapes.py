import hashlib
import json
import os

from pycocotools.coco import COCO

from kd_det.detection.data.shapes import CATEGORIES, make_shapes, shapes_paths


def _digest(root):
    h = hashlib.sha256()
    for d, _, files in sorted(os.walk(root)):
        for f in sorted(files):
            h.update(f.encode())
            with open(os.path.join(d, f), "rb") as fh:
                h.update(fh.read())
    return h.hexdigest()


def test_deterministic(tmp_path):
    splits = {"train": (6, 1), "val": (3, 2)}
    make_shapes(str(tmp_path / "a"), splits)
    make_shapes(str(tmp_path / "b"), splits)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    make_shapes(str(tmp_path / "c"), {"train": (6, 7), "val": (3, 2)})  # another seed, other images
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_valid_coco_json(tiny_shapes):
    json_file, image_root = shapes_paths(tiny_shapes, "train")
    coco = COCO(json_file)
    assert sorted(coco.getCatIds()) == [c["id"] for c in CATEGORIES]
    assert len(coco.getImgIds()) == 16
    anns = coco.loadAnns(coco.getAnnIds())
    assert len(anns) >= 16 and len({a["id"] for a in anns}) == len(anns)
    for a in anns:
        img = coco.loadImgs(a["image_id"])[0]
        x, y, w, h = a["bbox"]
        assert w > 0 and h > 0 and x >= 0 and y >= 0
        assert x + w <= img["width"] and y + h <= img["height"]
        assert a["area"] > 0 and a["iscrowd"] == 0 and len(a["segmentation"][0]) >= 6
    for img in coco.loadImgs(coco.getImgIds()):
        assert os.path.isfile(os.path.join(image_root, img["file_name"]))
    with open(json_file) as f:
        assert {"images", "annotations", "categories"} <= set(json.load(f))
