"""Own data: evaluators by dataset type, VOC-layout datasets, their bad inputs (issue 22)."""
import json
import os
import sys

import pytest
import torch

import kd_det  # noqa: F401  (kd_det.compat: Detectron2 0.6 with today's Pillow / NumPy)
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_pascal_voc
from detectron2.structures import Boxes, BoxMode, Instances
from PIL import Image

from kd_det.config.detection import get_cfg
from kd_det.detection.data import setup_datasets
from kd_det.detection.data.voc import load_voc_checked, read_voc_xml
from kd_det.detection.engine.trainer import Trainer
from kd_det.errors import DatasetError

CLASSES = ["circle", "square", "triangle"]
# Per image: (class, xmin, ymin, xmax, ymax) in VOC's 1-based pixels; floats as annotation tools write them.
OBJECTS = {"a": [("circle", 3.5, 4.0, 20.25, 22.0), ("square", 30.0, 30.0, 60.5, 58.0)],
           "b": [("triangle", 10.0, 12.0, 40.0, 44.5)],
           "c": [("square", 5.0, 5.0, 25.0, 25.0), ("triangle", 33.0, 8.0, 61.0, 30.0)]}


def write_voc(root, objects=OBJECTS, split="test", difficult=False, extra=""):
    """A VOC folder under ``root``: 64x64 images, XML without <pose>/<truncated> (and <difficult> unless asked)."""
    for sub in ("Annotations", "ImageSets/Main", "JPEGImages"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    for img, objs in objects.items():
        Image.new("RGB", (64, 64), (90, 90, 90)).save(os.path.join(root, "JPEGImages", img + ".jpg"))
        body = "".join(
            f"<object><name>{c}</name>{'<difficult>0</difficult>' if difficult else ''}<bndbox><xmin>{x0}</xmin>"
            f"<ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>" for c, x0, y0, x1, y1 in objs)
        with open(os.path.join(root, "Annotations", img + ".xml"), "w") as f:
            f.write(f"<annotation><filename>{img}.jpg</filename><size><width>64</width><height>64</height>"
                    f"<depth>3</depth></size>{body}{extra}</annotation>")
    with open(os.path.join(root, "ImageSets", "Main", split + ".txt"), "w") as f:
        f.write("\n".join(objects) + "\n")
    return root


def voc_cfg(*entries, test=()):
    cfg = get_cfg()
    cfg.DATASETS.VOC_FORMAT = [list(e) for e in entries]
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = (), tuple(test)
    return cfg


def score(cfg, name, shift_class=0):
    """AP of predictions equal to the ground truth (classes shifted by ``shift_class``) through Trainer's evaluator."""
    evaluator = Trainer.build_evaluator(cfg, name, output_folder=None)
    evaluator.reset()
    for d in DatasetCatalog.get(name):
        inst = Instances((d["height"], d["width"]))
        inst.pred_boxes = Boxes(torch.tensor([BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS)
                                              for a in d["annotations"]], dtype=torch.float32))
        inst.scores = torch.ones(len(d["annotations"]))
        inst.pred_classes = torch.tensor([(a["category_id"] + shift_class) % 3 for a in d["annotations"]])
        evaluator.process([{"image_id": d["image_id"]}], [{"instances": inst}])
    return evaluator.evaluate()["bbox"]


def test_own_data_voc_format_evaluates_float_xml_without_difficult(tmp_path):
    root = write_voc(str(tmp_path / "mine"))
    cfg = voc_cfg(["own_data_voc", root, "test", CLASSES], test=["own_data_voc"])
    setup_datasets(cfg)
    meta = MetadataCatalog.get("own_data_voc")
    assert meta.thing_classes == CLASSES and meta.evaluator_type == "pascal_voc"
    d = DatasetCatalog.get("own_data_voc")[0]
    assert d["annotations"][0]["bbox"] == [2.5, 3.0, 20.25, 22.0]  # Detectron2's VOC convention: xmin-1, ymin-1
    assert not Trainer.build_evaluator(cfg, "own_data_voc")._use_07  # no year: the all-point AP
    right = score(cfg, "own_data_voc")
    assert set(right) == {"AP", "AP50", "AP75"}
    assert right["AP50"] == pytest.approx(100) and right["AP"] == pytest.approx(100)
    assert score(cfg, "own_data_voc", shift_class=1)["AP50"] == pytest.approx(0)


@pytest.fixture
def builtin_voc_2007_test(tmp_path):
    """Detectron2's built-in voc_2007_test, registered as builtin.py does under a temporary $DETECTRON2_DATASETS."""
    meta = MetadataCatalog.get("voc_2007_test")
    old = (meta.dirname, meta.split, meta.year, tuple(meta.thing_classes))

    def register(dirname, classes):
        DatasetCatalog.remove("voc_2007_test")
        MetadataCatalog.remove("voc_2007_test")
        register_pascal_voc("voc_2007_test", dirname, "test", 2007, classes)
        MetadataCatalog.get("voc_2007_test").evaluator_type = "pascal_voc"

    yield register
    register(old[0], old[3])


def test_own_data_builtin_voc_2007_test_is_scored_with_the_11_point_metric(tmp_path, builtin_voc_2007_test):
    root = write_voc(str(tmp_path / "VOC2007"), difficult=True)
    builtin_voc_2007_test(root, CLASSES)
    cfg = voc_cfg(test=["voc_2007_test"])
    setup_datasets(cfg)  # re-registered with kd_det's checked loader (Detectron2's needs NumPy < 1.24)
    assert MetadataCatalog.get("voc_2007_test").checked
    assert Trainer.build_evaluator(cfg, "voc_2007_test")._use_07  # year 2007: the 11-point AP
    assert score(cfg, "voc_2007_test")["AP50"] == pytest.approx(100)
    assert score(cfg, "voc_2007_test", shift_class=2)["AP50"] == pytest.approx(0)


def test_own_data_missing_builtin_voc_folder_names_the_variable(tmp_path, builtin_voc_2007_test):
    builtin_voc_2007_test(str(tmp_path / "VOC2007"), CLASSES)
    with pytest.raises(DatasetError, match=r"^Dataset 'voc_2007_test' needs .*VOC2007, which does not exist "
                                           r"\(Detectron2 registers voc_2007_test under \$DETECTRON2_DATASETS"):
        setup_datasets(voc_cfg(test=["voc_2007_test"]))


def test_own_data_voc_ap_counts_misses_and_false_positives():
    from kd_det.evaluation.voc_evaluator import voc_ap_at

    import numpy as np
    gt = {"a": (np.array([[0, 0, 10, 10], [20, 20, 30, 30.]]), np.array([False, False]))}
    dets = [("a", 0.9, [0, 0, 10, 10]), ("a", 0.8, [50, 50, 60, 60])]  # one hit, one false positive, one miss
    assert voc_ap_at(gt, dets, 0.5, False) == pytest.approx(0.5)
    assert voc_ap_at(gt, dets[:1], 0.5, True) == pytest.approx(6 / 11)  # 11-point: recall 0.5 -> 6 of 11 points


@pytest.mark.parametrize("entry, sentence", [
    (["x", "d", "test"], "DATASETS.VOC_FORMAT[0] is ['x', 'd', 'test']; expected [name, dirname, split, "
                         "[class, ...]]."),
    (["x", "d", "test", []], "DATASETS.VOC_FORMAT[0] is ['x', 'd', 'test', []]; its class list is empty."),
    (["x", "d", "test", ["a", "b", "a"]], "DATASETS.VOC_FORMAT[0] is ['x', 'd', 'test', ['a', 'b', 'a']]; its "
                                          "class list names 'a' twice."),
])
def test_own_data_bad_voc_format_entry(entry, sentence):
    with pytest.raises(DatasetError) as e:
        setup_datasets(voc_cfg(entry))
    assert str(e.value) == sentence


@pytest.mark.parametrize("remove, what", [("", "{root}"), ("ImageSets/Main/test.txt", "{root}/ImageSets/Main/test.txt"),
                                          ("Annotations", "{root}/Annotations")])
def test_own_data_missing_voc_path_is_named_at_start(tmp_path, remove, what):
    import shutil

    root = str(tmp_path / "mine")
    if remove:
        write_voc(root)
        path = os.path.join(root, remove)
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    with pytest.raises(DatasetError) as e:
        setup_datasets(voc_cfg(["own_data_missing", root, "test", CLASSES], test=["own_data_missing"]))
    assert str(e.value) == f"Dataset 'own_data_missing' needs {what.format(root=root)}, which does not exist."


def test_own_data_missing_images_are_counted_at_start(tmp_path):
    root = write_voc(str(tmp_path / "mine"))
    for img in ("a", "c"):
        os.remove(os.path.join(root, "JPEGImages", img + ".jpg"))
    with pytest.raises(DatasetError) as e:
        setup_datasets(voc_cfg(["own_data_noimg", root, "test", CLASSES], test=["own_data_noimg"]))
    assert str(e.value) == (f"Dataset 'own_data_noimg' lists 2 images that do not exist in "
                            f"{os.path.join(root, 'JPEGImages')} (first: a.jpg).")


@pytest.mark.parametrize("objects, extra, sentence", [
    ({"a": [("dog", 1, 1, 5, 5)]}, "", "has an object of class 'dog', which is not in the dataset's classes "
                                       "['circle', 'square', 'triangle']."),
    ({"a": []}, "<object><name>circle</name></object>", "has an object of class 'circle' without <bndbox>."),
])
def test_own_data_bad_voc_xml_names_file_and_class(tmp_path, objects, extra, sentence):
    root = write_voc(str(tmp_path / "mine"), objects, extra=extra)
    with pytest.raises(DatasetError) as e:
        load_voc_checked("x", root, "test", CLASSES)
    assert str(e.value) == f"VOC annotation {root}/Annotations/a.xml {sentence}"


def test_own_data_voc_xml_without_size_is_refused(tmp_path):
    path = tmp_path / "a.xml"
    path.write_text("<annotation><object><name>circle</name></object></annotation>")
    with pytest.raises(DatasetError) as e:
        read_voc_xml(str(path), CLASSES)
    assert str(e.value) == f"VOC annotation {path} has no <size>."


def test_own_data_empty_voc_boxes_are_skipped_with_a_count(tmp_path, caplog):
    root = write_voc(str(tmp_path / "mine"), {"a": [("circle", 5, 5, 5, 9), ("square", 1, 1, 9, 9)]})
    dicts = load_voc_checked("x", root, "test", CLASSES)
    assert [a["category_id"] for a in dicts[0]["annotations"]] == [1]
    assert "skipped 1 of 2 boxes with zero or negative width or height (first: a.xml" in caplog.text


@pytest.mark.parametrize("name, kind", [("ade20k_sem_seg_val", "sem_seg"),
                                        ("cityscapes_fine_sem_seg_val", "cityscapes_sem_seg")])
def test_own_data_unsupported_evaluator_type_is_refused_at_start(name, kind):
    with pytest.raises(DatasetError) as e:
        setup_datasets(voc_cfg(test=[name]))
    assert str(e.value) == (f"Dataset '{name}' has evaluator type '{kind}'; kd_det evaluates coco, lvis and "
                            "pascal_voc datasets.")


def write_lvis(root, neg_b=()):
    """An LVIS v1 layout under ``root``: coco/val2017/*.jpg and lvis/lvis_v1_val.json with OBJECTS as categories
    1-3 (frequencies f, c, r), image b's ``neg_category_ids`` = ``neg_b`` and no not-exhaustive category."""
    os.makedirs(os.path.join(root, "coco", "val2017"))
    os.makedirs(os.path.join(root, "lvis"))
    images, annos = [], []
    for i, objs in enumerate(OBJECTS.values(), 1):
        Image.new("RGB", (64, 64), (90, 90, 90)).save(os.path.join(root, "coco", "val2017", f"{i:012d}.jpg"))
        images.append({"id": i, "width": 64, "height": 64, "neg_category_ids": list(neg_b) if i == 2 else [],
                       "not_exhaustive_category_ids": [],
                       "coco_url": f"http://images.cocodataset.org/val2017/{i:012d}.jpg"})
        for c, x0, y0, x1, y1 in objs:
            annos.append({"id": len(annos) + 1, "image_id": i, "category_id": CLASSES.index(c) + 1,
                          "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0),
                          "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]]})
    cats = [{"id": k + 1, "name": c, "synonyms": [c], "synset": f"{c}.n.01", "def": c, "frequency": f,
             "image_count": 1, "instance_count": 1} for k, (c, f) in enumerate(zip(CLASSES, "fcr"))]
    with open(os.path.join(root, "lvis", "lvis_v1_val.json"), "w") as f:
        json.dump({"images": images, "annotations": annos, "categories": cats}, f)


@pytest.fixture
def builtin_lvis_v1_val():
    """Detectron2's built-in lvis_v1_val, registered as builtin.py does under a given $DETECTRON2_DATASETS."""
    from detectron2.data.datasets import get_lvis_instances_meta, register_lvis_instances

    old = MetadataCatalog.get("lvis_v1_val")
    old = (old.json_file, old.image_root)

    def register(json_file, image_root):
        DatasetCatalog.remove("lvis_v1_val")
        MetadataCatalog.remove("lvis_v1_val")
        register_lvis_instances("lvis_v1_val", get_lvis_instances_meta("lvis_v1"), json_file, image_root)

    yield lambda root: register(os.path.join(root, "lvis", "lvis_v1_val.json"), os.path.join(root, "coco/"))
    register(*old)


def test_own_data_lvis_v1_val_is_scored_by_lvis_ap(tmp_path, builtin_lvis_v1_val):
    from kd_det.evaluation.lvis_evaluator import LVISBoxEvaluator
    from kd_det.evaluation.runs import DET_METRICS

    write_lvis(str(tmp_path))
    builtin_lvis_v1_val(str(tmp_path))
    cfg = voc_cfg(test=["lvis_v1_val"])
    setup_datasets(cfg)
    assert isinstance(Trainer.build_evaluator(cfg, "lvis_v1_val"), LVISBoxEvaluator)
    right = score(cfg, "lvis_v1_val")
    assert set(DET_METRICS) | {"APr", "APc", "APf"} == set(right)  # what evaluation.json carries to the report
    assert right["AP50"] == pytest.approx(100) and right["AP"] == pytest.approx(100)
    assert right["APr"] == pytest.approx(100) and right["APl"] != right["APl"]  # no large box: NaN, not -100
    wrong = score(cfg, "lvis_v1_val", shift_class=1)
    assert wrong["AP50"] == pytest.approx(0) and wrong["AP"] == pytest.approx(0)


@pytest.mark.parametrize("neg_b, circle_ap50", [((), 100), ((1,), 50)])
def test_own_data_lvis_federated_rules(tmp_path, builtin_lvis_v1_val, neg_b, circle_ap50):
    """A top-scored circle on image b (no circle annotated there) counts as a false positive only when b lists
    circle in neg_category_ids; the COCO evaluator would count it always."""
    write_lvis(str(tmp_path), neg_b=neg_b)
    builtin_lvis_v1_val(str(tmp_path))
    cfg = voc_cfg(test=["lvis_v1_val"])
    setup_datasets(cfg)
    evaluator = Trainer.build_evaluator(cfg, "lvis_v1_val")
    evaluator.reset()
    for d in DatasetCatalog.get("lvis_v1_val"):
        boxes = [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in d["annotations"]]
        classes, scores = [a["category_id"] for a in d["annotations"]], [0.5] * len(boxes)
        if d["image_id"] == 2:  # b: one triangle
            boxes, classes, scores = boxes + [[40.0, 40.0, 60.0, 60.0]], classes + [0], scores + [0.9]
        inst = Instances((d["height"], d["width"]), pred_boxes=Boxes(torch.tensor(boxes)),
                         scores=torch.tensor(scores), pred_classes=torch.tensor(classes))
        evaluator.process([{"image_id": d["image_id"]}], [{"instances": inst}])
    # square and triangle 100; circle 100, or 50 with the false positive ranked above its one true positive
    assert evaluator.evaluate()["bbox"]["AP50"] == pytest.approx((circle_ap50 + 200) / 3)


def test_own_data_lvis_without_the_package_is_refused_at_start_naming_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "lvis", None)  # what `import lvis` meets when it is not installed
    for cfg in (voc_cfg(test=["lvis_v1_val"]), voc_cfg()):
        cfg.DATASETS.TRAIN = () if cfg.DATASETS.TEST else ("lvis_v1_train",)  # a test set, then a training set
        name = (cfg.DATASETS.TEST or cfg.DATASETS.TRAIN)[0]
        with pytest.raises(DatasetError) as e:
            setup_datasets(cfg)
        assert str(e.value) == (f"Dataset '{name}' has evaluator type 'lvis', whose loader and evaluator need the "
                                "`lvis` package, which cannot be imported (import of lvis halted; None in "
                                "sys.modules); install it with `pip install --no-deps -r requirements/lvis.txt`.")


def test_own_data_python_registered_dataset_without_type_is_refused():
    DatasetCatalog.register("own_data_untyped", lambda: [])
    try:
        with pytest.raises(DatasetError) as e:
            setup_datasets(voc_cfg(test=["own_data_untyped"]))
        assert str(e.value) == ("Dataset 'own_data_untyped' has no evaluator type (neither json_file nor VOC "
                                "metadata); kd_det evaluates coco, lvis and pascal_voc datasets.")
    finally:
        DatasetCatalog.remove("own_data_untyped")


# ---- teachers with other classes (detection) ----

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STUDENT = os.path.join(REPO, "configs/shapes/faster_rcnn_R_18_FPN_shapes.yaml")
SMALL = ["MODEL.FPN.OUT_CHANNELS", "32", "MODEL.ROI_BOX_HEAD.FC_DIM", "64", "MODEL.RPN.POST_NMS_TOPK_TRAIN", "64",
         "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "16", "MODEL.RPN.POST_NMS_TOPK_TEST", "50",
         "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"]


@pytest.fixture(scope="module")
def teacher5(tmp_path_factory, teacher_writer):
    """A 5-class R-18 teacher config and its weights (random init, saved): (config, weights)."""
    return teacher_writer(tmp_path_factory.mktemp("teacher5"), STUDENT, "  FPN: {OUT_CHANNELS: 48}\n  ROI_BOX_HEAD: "
                         "{FC_DIM: 96}\n  ROI_HEADS: {NUM_CLASSES: 5, SCORE_THRESH_TEST: 0.0}\n")


def distill5(teacher5, losses, *extra):
    from kd_det.config.detection import load_config

    return load_config(STUDENT, ["MODEL.META_ARCHITECTURE", "DistillRCNN", "KD.TEACHER.CONFIG_FILE", teacher5[0],
                                 "KD.TEACHER.WEIGHTS", teacher5[1], "KD.LOSSES", str(losses),
                                 "KD.FEATURE_LEVELS", "['p3', 'p4']", *SMALL, *extra])


def one_step(cfg):
    """Build the model of ``cfg`` and run one training forward on two tiny images; returns (model, losses)."""
    from detectron2.modeling import build_model
    from detectron2.utils.events import EventStorage

    model = build_model(cfg).train()
    inputs = []
    for i in range(2):
        inst = Instances((64, 80))
        inst.gt_boxes, inst.gt_classes = Boxes(torch.tensor([[5.0, 6.0, 30.0, 35.0]])), torch.tensor([i])
        inputs.append({"image": torch.full((3, 64, 80), 100.0 + i), "height": 64, "width": 80, "instances": inst})
    with EventStorage(0):
        return model, model(inputs)


@pytest.mark.parametrize("losses", [[{"name": "reviewkd"}], [{"name": "dcd"}], [{"name": "fitnet"}]])
def test_own_data_feature_only_distillation_from_a_teacher_of_other_classes(teacher5, losses):
    model, out = one_step(distill5(teacher5, losses))
    assert model.teacher.roi_heads.num_classes == 5 and model.roi_heads.num_classes == 3
    assert all(torch.isfinite(v) for v in out.values()) and f"loss_{losses[0]['name']}" in out


def test_own_data_logit_loss_from_a_teacher_of_other_classes_needs_a_map(teacher5):
    from kd_det.errors import ConfigError

    logits_dcd = {"name": "dcd", "inputs": {"emb_s": "logits_s", "emb_t": "logits_t"}}
    for losses, named in (([{"name": "kd"}, {"name": "reviewkd"}], "kd"), ([logits_dcd], "dcd")):
        with pytest.raises(ConfigError) as e:
            one_step(distill5(teacher5, losses))
        assert str(e.value) == (
            f"Teacher config {teacher5[0]} has MODEL.ROI_HEADS.NUM_CLASSES 5 but the student has 3, and KD.LOSSES "
            f"{named} read the teacher's class logits (logits_t): set KD.TEACHER.CLASS_MAP to the teacher class of "
            "each of the 3 student classes, or distill features only.")


def test_own_data_class_map_hands_the_mapped_teacher_columns_to_the_losses(teacher5):
    from detectron2.modeling import build_model

    model = build_model(distill5(teacher5, [{"name": "kd"}], "KD.TEACHER.CLASS_MAP", "[0, 2, 4]")).train()
    seen = {}
    model.teacher.roi_heads.box_predictor.register_forward_hook(lambda m, i, o: seen.update(full=o[0]))
    model.distill.losses["kd"].register_forward_pre_hook(lambda m, a, kw: seen.update(given=kw["logits_t"]),
                                                         with_kwargs=True)
    inst = Instances((64, 80))
    inst.gt_boxes, inst.gt_classes = Boxes(torch.tensor([[5.0, 6.0, 30.0, 35.0]])), torch.tensor([1])
    from detectron2.utils.events import EventStorage
    with EventStorage(0):
        out = model([{"image": torch.full((3, 64, 80), 90.0), "height": 64, "width": 80, "instances": inst}])
    assert seen["full"].shape[1] == 6 and seen["given"].shape[1] == 4
    assert torch.equal(seen["given"], seen["full"][:, [0, 2, 4, 5]])
    assert torch.isfinite(out["loss_kd"])


@pytest.mark.parametrize("class_map, losses, sentence", [
    ("[0, 2]", "kd", "KD.TEACHER.CLASS_MAP has 2 entries; it needs one teacher class per student class (3)."),
    ("[0, 2, 5]", "kd", "KD.TEACHER.CLASS_MAP entry 5 is not a class index of the teacher ({t}), an int in [0, 5)."),
    ("[0, 2, 1.5]", "kd", "KD.TEACHER.CLASS_MAP entry 1.5 is not a class index of the teacher ({t}), an int in "
                          "[0, 5)."),
    ("[0, 2, 2]", "kd", "KD.TEACHER.CLASS_MAP names teacher class 2 twice."),
    ("[0, 2, 4]", "reviewkd", "KD.TEACHER.CLASS_MAP is [0, 2, 4] but no KD.LOSSES entry reads the teacher's class "
                              "logits (logits_t); remove the map."),
])
def test_own_data_bad_class_map(teacher5, class_map, losses, sentence):
    from detectron2.modeling import build_model

    from kd_det.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        build_model(distill5(teacher5, [{"name": losses}], "KD.TEACHER.CLASS_MAP", class_map))
    assert str(e.value) == sentence.format(t=teacher5[0])


def test_own_data_eval_teacher_through_the_class_map(teacher5, tiny_shapes, tmp_path):
    import json

    from kd_det.detection.data import register_shapes
    from kd_det.detection.data.shapes import CATEGORIES
    from kd_det.detection.engine.trainer import evaluate_teacher
    from kd_det.errors import ConfigError

    register_shapes(tiny_shapes)
    try:
        base = ["DATASETS.TEST", "('shapes_val',)", "OUTPUT_DIR", str(tmp_path), "MODEL.DEVICE", "cpu",
                "DATALOADER.NUM_WORKERS", "0"]
        with pytest.raises(ConfigError) as e:
            evaluate_teacher(distill5(teacher5, [{"name": "kd"}], *base))
        assert str(e.value) == (f"--eval-teacher: the teacher ({teacher5[0]}) has 5 classes but the student's test "
                                "sets have 3; set KD.TEACHER.CLASS_MAP to the teacher class of each student class to "
                                "score it through the map.")
        evaluate_teacher(distill5(teacher5, [{"name": "kd"}], "KD.TEACHER.CLASS_MAP", "[0, 2, 4]", *base))
        bbox = json.load(open(tmp_path / "teacher_eval" / "evaluation.json"))["results"]["shapes_val"]["bbox"]
        assert {"AP-circle", "AP-square", "AP-triangle"} <= set(bbox)
        dets = json.load(open(tmp_path / "teacher_eval/inference/shapes_val/coco_instances_results.json"))
        assert dets and {d["category_id"] for d in dets} <= {c["id"] for c in CATEGORIES}  # relabelled, 4/5 dropped
    finally:
        register_shapes()


# ---- docs/own-data.md, end to end ----

def recipe(doc=os.path.join(REPO, "docs", "own-data.md")):
    """The recipe of docs/own-data.md: ({file: yaml text}, [command line, ...])."""
    import re

    text = open(doc).read().split("## Data formats")[0]
    files = dict(re.findall(r"`(my/\w+\.yaml)`:\n\n```yaml\n(.*?)```", text, re.S))
    commands = [line for block in re.findall(r"```bash\n(.*?)```", text, re.S) for line in block.splitlines()
                if line.startswith("python tools/")]
    return files, commands


def test_own_data_recipe(tmp_path):
    """docs/own-data.md's files and commands on a VOC folder written here (2 iterations of 64-px images, one seed)."""
    import glob
    import json
    import shlex
    import subprocess
    import sys

    files, commands = recipe()
    assert sorted(files) == ["my/dkd.yaml", "my/student.yaml", "my/teacher.yaml"] and len(commands) == 5
    os.symlink(os.path.join(REPO, "configs"), tmp_path / "configs")
    for path, text in files.items():
        os.makedirs(tmp_path / os.path.dirname(path), exist_ok=True)
        (tmp_path / path).write_text(text)
    write_voc(str(tmp_path / "my/data"), split="train")
    write_voc(str(tmp_path / "my/data"), {"v1": OBJECTS["a"], "v2": OBJECTS["b"]}, split="val")
    short = ["SOLVER.MAX_ITER", "2", "SOLVER.IMS_PER_BATCH", "2", "DATALOADER.NUM_WORKERS", "0",
             "SOLVER.WARMUP_ITERS", "1", "SOLVER.CHECKPOINT_PERIOD", "100", "INPUT.MIN_SIZE_TRAIN", "(64,)",
             "INPUT.MAX_SIZE_TRAIN", "80", "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "80"]

    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="2")
    for line in commands:
        # one seed, and the sweep without the student baseline (what it adds is one more plain run): CPU time
        args = shlex.split(line.replace("--seeds 0 1 2", "--seeds 0").replace(" my/student.yaml", ""))
        if args[1] in ("tools/train_net.py", "tools/sweep.py"):
            args += short if args[1] == "tools/train_net.py" else ["--no-plots", *short]
        if args[1] == "tools/report.py":
            args = [a for x in args for a in (sorted(glob.glob(x, root_dir=tmp_path)) if "*" in x else [x])]
            args.append("--no-plots")
        r = subprocess.run([sys.executable, os.path.join(REPO, args[1]), *args[2:]], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, f"{line}\n{r.stdout[-2000:]}{r.stderr[-3000:]}"
    out = tmp_path / "output/my"
    teacher = json.load(open(out / "teacher_eval/evaluation.json"))["results"]["my_val"]["bbox"]
    assert {"AP", "AP50", "AP75"} == set(teacher)  # the VOC evaluator's names
    report = (out / "report/report.md").read_text()
    assert "detection: my_val" in report and "Paper" not in report
    assert os.path.isfile(out / "student/model_final.pth")


@pytest.mark.parametrize("opts, sentence", [
    (["DATASETS.TEST", "('ade20k_sem_seg_val',)"],
     "Dataset 'ade20k_sem_seg_val' has evaluator type 'sem_seg'; kd_det evaluates coco, lvis and pascal_voc datasets."),
    (["DATASETS.VOC_FORMAT", "[['own_data_x', '{root}/nope', 'val', ['circle']]]", "DATASETS.TRAIN", "('own_data_x',)"],
     "Dataset 'own_data_x' needs {root}/nope, which does not exist."),
])
def test_own_data_train_net_stops_at_start_in_one_line(opts, sentence, tmp_path, run_tool, tiny_shapes):
    opts = [o.format(root=tmp_path) for o in opts]
    r = run_tool("train_net.py", ["--config-file", STUDENT, "OUTPUT_DIR", str(tmp_path / "out"), *opts], tiny_shapes)
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1] == "train_net.py: error: " + sentence.format(
        root=tmp_path), r.stderr[-2000:]
    assert not os.path.exists(tmp_path / "out" / "metrics.json")


# ---- labels follow the data ----

def _fake_run(path, cfg, task, dataset=None):
    """A finished run directory of ``cfg`` in the formats train_net.py / train_cls.py write (fixed metrics)."""
    import json

    os.makedirs(path)
    (path / "config.yaml").write_text(cfg.dump())
    if task == "detection":
        (path / "metrics.json").write_text(json.dumps({"iteration": cfg.SOLVER.MAX_ITER - 1, "total_loss": 1.0}) + "\n")
        (path / "evaluation.json").write_text(json.dumps(
            {"mode": "train", "iteration": cfg.SOLVER.MAX_ITER - 1,
             "results": {dataset: {"bbox": {"AP": 30.0, "AP50": 50.0, "AP75": 31.0}}}}))
    else:
        (path / "metrics.json").write_text(json.dumps(
            {"epoch": cfg.SOLVER.EPOCHS, "val/top1": 60.0, "val/top5": 85.0, "train/loss_total": 1.0}) + "\n")
    return str(path)


@pytest.mark.parametrize("task, row, opts, own", [
    ("detection", "configs/COCO-Detection/distill/R101-R18/dkd.yaml", ["DATASETS.TEST", "('my_val',)"], "my_val"),
    ("classification", "configs/classification/cifar100/resnet56-resnet20/kd.yaml",
     ["DATA.NAME", "imagenet", "DATA.ROOT", "my/folders", "DATA.NUM_CLASSES", "10", "INPUT.SIZE", "32"], "folders"),
])
def test_own_data_run_of_a_paper_row_on_other_data_is_labelled_by_its_data(task, row, opts, own, tmp_path):
    from kd_det.config.classification import load_cls_config
    from kd_det.config.detection import load_config
    from kd_det.evaluation.report import build_report

    load = load_config if task == "detection" else load_cls_config
    paper_cfg, own_cfg = load(os.path.join(REPO, row), []), load(os.path.join(REPO, row), opts)
    paper_data = paper_cfg.KD.LABEL.DATASET or "coco2017_val"
    assert own_cfg.KD.LABEL.DATASET in ("", own)  # "": derived from DATASETS.TEST by the report
    # the same row with the label set on the command line too: the user says it is the paper's data
    assert load(os.path.join(REPO, row), opts + ["KD.LABEL.DATASET", paper_data]).KD.LABEL.DATASET == paper_data
    runs = [_fake_run(tmp_path / "paper", paper_cfg, task, "coco_2017_val"),
            _fake_run(tmp_path / "own", own_cfg, task, "my_val")]
    md = build_report(runs, str(tmp_path / "report"), plots=False)["markdown"]
    paper_part, own_part = md.split(f"## {task}: {own}")
    assert "Paper" in paper_part  # the row on the paper's data: its paper number and delta
    assert "Paper" not in own_part.split("\n## ")[0]
    if task == "detection":  # the metric columns are the names evaluation.json holds (here a VOC run's three)
        assert "| AP | AP50 | AP75 | Gain AP |" in own_part


# ---- non-contiguous category ids ----

def test_own_data_non_contiguous_category_ids_train_evaluate_and_report_by_name(tmp_path, tiny_opts):
    """Category ids 3, 7, 11, with 7 ("square") unannotated: one training step, evaluation, report by name."""
    import json

    from kd_det.config.detection import load_config
    from kd_det.evaluation.report import build_report

    os.makedirs(tmp_path / "images")
    images, annos = [], []
    for i in range(4):
        Image.new("RGB", (64, 64), (40 * i, 90, 90)).save(tmp_path / "images" / f"{i}.jpg")
        images.append({"id": i + 1, "file_name": f"{i}.jpg", "width": 64, "height": 64})
        for j, cat in enumerate((3, 11)):
            annos.append({"id": len(annos) + 1, "image_id": i + 1, "category_id": cat, "bbox": [4 + 30 * j, 6, 20, 24],
                          "area": 480, "iscrowd": 0})
    cats = [{"id": 3, "name": "circle"}, {"id": 7, "name": "square"}, {"id": 11, "name": "triangle"}]
    (tmp_path / "ann.json").write_text(json.dumps({"images": images, "annotations": annos, "categories": cats}))
    out = tmp_path / "run"
    cfg = load_config(STUDENT, [*tiny_opts, "DATASETS.COCO_FORMAT", f"[['own_data_ids', '{tmp_path}/ann.json', "
                                f"'{tmp_path}/images']]", "DATASETS.TRAIN", "('own_data_ids',)", "DATASETS.TEST",
                                "('own_data_ids',)", "SOLVER.MAX_ITER", "1", "OUTPUT_DIR", str(out)])
    setup_datasets(cfg)
    os.makedirs(out)  # what default_setup does in train_net.py
    (out / "config.yaml").write_text(cfg.dump())
    assert [a["category_id"] for a in DatasetCatalog.get("own_data_ids")[0]["annotations"]] == [0, 2]
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    bbox = json.load(open(out / "evaluation.json"))["results"]["own_data_ids"]["bbox"]
    assert {"AP-circle", "AP-square", "AP-triangle"} <= set(bbox)
    assert bbox["AP-square"] != bbox["AP-square"]  # NaN: no annotations of it
    md = build_report([str(out)], str(tmp_path / "report"), plots=False)["markdown"]
    assert "| circle | 0.00 |" in md and "| triangle | 0.00 |" in md and "| square | - |" in md  # by name; NaN: -


# ---- YOLO labels ----

def write_yolo(root, lines=None):
    """images/ (64x48 jpgs) + labels/ under ``root``; ``lines``: {image stem: label text}."""
    lines = lines or {"a": "0 0.25 0.25 0.2 0.3\n2 0.7 0.6 0.3 0.4\n", "b": "1 0.5 0.5 0.5 0.5\n", "c": ""}
    for sub in ("images", "labels"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    for stem, text in lines.items():
        Image.new("RGB", (64, 48), (90, 90, 90)).save(os.path.join(root, "images", stem + ".jpg"))
        with open(os.path.join(root, "labels", stem + ".txt"), "w") as f:
            f.write(text)
    return os.path.join(root, "images"), os.path.join(root, "labels")


def yolo_cfg(*entries, test=()):
    cfg = voc_cfg(test=test)
    cfg.DATASETS.YOLO_FORMAT = [list(e) for e in entries]
    return cfg


@pytest.mark.parametrize("backend", ["faster_coco_eval", "pycocotools"])
def test_own_data_yolo_format_is_scored_by_the_coco_evaluator_from_memory(tmp_path, backend):
    images, labels = write_yolo(str(tmp_path))
    cfg = yolo_cfg(["own_data_yolo", images, labels, CLASSES], test=["own_data_yolo"])
    cfg.TEST.EVAL_BACKEND = backend
    setup_datasets(cfg)
    a = DatasetCatalog.get("own_data_yolo")[0]
    assert a["annotations"][0]["bbox"] == pytest.approx([9.6, 4.8, 12.8, 14.4])  # cx 0.25 w 0.2 of 64 px, ...
    right = score(cfg, "own_data_yolo")
    assert right["AP50"] == pytest.approx(100) and {"AP-circle", "AP-square", "AP-triangle"} <= set(right)
    assert score(cfg, "own_data_yolo", shift_class=1)["AP50"] == pytest.approx(0)


@pytest.mark.parametrize("text, sentence", [
    ("0 0.5 0.5 0.2\n", "line 1 ('0 0.5 0.5 0.2') has 4 fields; expected 5: class cx cy w h."),
    ("0 0.5 0.5 0.2 0.2\n3 0.5 0.5 0.2 0.2\n", "line 2 ('3 0.5 0.5 0.2 0.2') names class 3, outside the "
                                               "dataset's 3 classes."),
    ("1 0.5 1.5 0.2 0.2\n", "line 1 ('1 0.5 1.5 0.2 0.2') has a coordinate outside [0, 1]; YOLO boxes are "
                            "normalised."),
])
def test_own_data_bad_yolo_line_names_file_and_line(tmp_path, text, sentence):
    from kd_det.detection.data.yolo import load_yolo_checked

    images, labels = write_yolo(str(tmp_path), {"a": text})
    with pytest.raises(DatasetError) as e:
        load_yolo_checked("x", images, labels, CLASSES)
    assert str(e.value) == f"YOLO label file {labels}/a.txt {sentence}"


def test_own_data_bad_yolo_entry_and_missing_folder(tmp_path):
    with pytest.raises(DatasetError) as e:
        setup_datasets(yolo_cfg(["x", "i", "l"]))
    assert str(e.value) == ("DATASETS.YOLO_FORMAT[0] is ['x', 'i', 'l']; expected [name, image_dir, label_dir, "
                            "[class, ...]].")
    with pytest.raises(DatasetError) as e:
        setup_datasets(yolo_cfg(["own_data_nolabels", str(tmp_path), str(tmp_path / "labels"), CLASSES],
                                test=["own_data_nolabels"]))
    assert str(e.value) == f"Dataset 'own_data_nolabels' needs the folder {tmp_path / 'labels'}, which does not exist."


def test_own_data_undecodable_yolo_image_is_named(tmp_path):
    from kd_det.detection.data.yolo import load_yolo_checked

    images, labels = write_yolo(str(tmp_path))
    with open(os.path.join(images, "b.jpg"), "wb") as f:
        f.write(b"not a jpeg")
    with pytest.raises(DatasetError, match=r"^Image .*b\.jpg of dataset 'x' cannot be decoded \(UnidentifiedImageError: "
                                           r"cannot identify image file\)\.$"):
        load_yolo_checked("x", images, labels, CLASSES)


def test_own_data_mapped_teacher_drops_unmapped_classes_and_relabels(teacher5):
    from kd_det.detection.modeling.teacher import MappedTeacher, build_teacher

    teacher, _, _ = build_teacher(distill5(teacher5, [{"name": "kd"}]))
    inputs = [{"image": torch.randint(0, 255, (3, 64, 80), generator=torch.Generator().manual_seed(0)).float(),
               "height": 64, "width": 80}]
    with torch.no_grad():
        raw = teacher(inputs)[0]["instances"].pred_classes.tolist()
        mapped = MappedTeacher(teacher, [0, 2, 4])(inputs)[0]["instances"].pred_classes.tolist()
    assert set(raw) - {0, 2, 4}, "the random teacher should predict some unmapped class"
    assert mapped == [{0: 0, 2: 1, 4: 2}[c] for c in raw if c in (0, 2, 4)]


def test_own_data_coco_json_listing_missing_images_is_refused(tmp_path):
    import json

    from kd_det.detection.data import load_coco_checked

    os.makedirs(tmp_path / "images")
    Image.new("RGB", (32, 32)).save(tmp_path / "images" / "0.jpg")
    images = [{"id": i + 1, "file_name": f"{i}.jpg", "width": 32, "height": 32} for i in range(3)]
    annos = [{"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [2, 2, 9, 9], "area": 81, "iscrowd": 0}
             for i in range(3)]
    (tmp_path / "ann.json").write_text(json.dumps({"images": images, "annotations": annos,
                                                  "categories": [{"id": 1, "name": "circle"}]}))
    with pytest.raises(DatasetError) as e:
        load_coco_checked(str(tmp_path / "ann.json"), str(tmp_path / "images"), "x")
    assert str(e.value) == (f"COCO json {tmp_path / 'ann.json'} (dataset 'x') lists 2 images that do not exist under "
                            f"{tmp_path / 'images'} (first: 1.jpg).")


# ---- an image the annotations list that cannot be decoded, every format: named at load ----

def write_coco(root):
    """images/ (3 64x64 jpgs) + ann.json with OBJECTS as a COCO json, under ``root``."""
    os.makedirs(os.path.join(root, "images"))
    images, annos = [], []
    for i, (img, objs) in enumerate(OBJECTS.items(), 1):
        Image.new("RGB", (64, 64), (90, 90, 90)).save(os.path.join(root, "images", img + ".jpg"))
        images.append({"id": i, "file_name": img + ".jpg", "width": 64, "height": 64})
        for c, x0, y0, x1, y1 in objs:
            annos.append({"id": len(annos) + 1, "image_id": i, "category_id": CLASSES.index(c) + 1, "iscrowd": 0,
                          "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0)})
    with open(os.path.join(root, "ann.json"), "w") as f:
        json.dump({"images": images, "annotations": annos,
                   "categories": [{"id": k + 1, "name": c} for k, c in enumerate(CLASSES)]}, f)
    return os.path.join(root, "ann.json"), os.path.join(root, "images")


@pytest.mark.parametrize("kind", ["coco", "voc"])
def test_own_data_undecodable_image_is_named_at_load(tmp_path, kind):
    from kd_det.detection.data import CheckedDatasetMapper

    cfg = voc_cfg(test=[f"own_data_bad_{kind}"])
    if kind == "coco":
        json_file, images = write_coco(str(tmp_path))
        cfg.DATASETS.COCO_FORMAT = [[f"own_data_bad_{kind}", json_file, images]]
    else:
        images = os.path.join(write_voc(str(tmp_path)), "JPEGImages")
        cfg.DATASETS.VOC_FORMAT = [[f"own_data_bad_{kind}", str(tmp_path), "test", CLASSES]]
    bad = os.path.join(images, "b.jpg")
    with open(bad, "wb") as f:
        f.write(os.urandom(256))  # listed, present (the start check passes), not an image
    cfg.MODEL.ROI_HEADS.NUM_CLASSES, cfg.DATALOADER.NUM_WORKERS = 3, 1
    setup_datasets(cfg)
    dicts = DatasetCatalog.get(f"own_data_bad_{kind}")
    assert len(dicts) == 3 and CheckedDatasetMapper(cfg, True)(dicts[0])["image"].shape[1:] == (800, 800)
    with pytest.raises(DatasetError) as e:  # what the train loader's mapper meets
        CheckedDatasetMapper(cfg, True)(next(d for d in dicts if d["file_name"] == bad))
    assert str(e.value) == f"Image {bad} cannot be decoded (UnidentifiedImageError: cannot identify image file)."
    with pytest.raises(DatasetError) as w:  # the test loader, out of its DataLoader worker: the sentence alone
        list(Trainer.build_test_loader(cfg, f"own_data_bad_{kind}"))
    assert str(w.value) == str(e.value)
