"""Mask R-CNN students in DistillRCNN: the mask head trains once per step, the teacher's never runs, segm AP is
evaluated (both backends), the exported student loads in stock Detectron2; keypoint heads are refused."""
import json
import math
import os
import pytest
import torch

import kd_det  # noqa: F401  (applies kd_det.compat before Detectron2 is imported)
from detectron2.modeling import build_model
from detectron2.structures import PolygonMasks
from detectron2.utils.events import EventStorage

from kd_det.config.detection import load_config
from kd_det.errors import ConfigError
from test_distill import batch as box_batch, export_and_run_in_stock  # tests/detection is on sys.path (no __init__.py)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DISTILL = "configs/shapes/distill/mask/reviewkd.yaml"
SMALL = ["MODEL.FPN.OUT_CHANNELS", "32", "MODEL.ROI_BOX_HEAD.FC_DIM", "64", "MODEL.RPN.POST_NMS_TOPK_TRAIN", "64",
         "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "16", "MODEL.ROI_MASK_HEAD.CONV_DIM", "16",
         "MODEL.ROI_MASK_HEAD.NUM_CONV", "1"]


@pytest.fixture(scope="module")
def mask_teacher(tmp_path_factory, teacher_writer):
    """A small Mask R-CNN R-18 teacher config and a weights file saved from it (random init): (config, weights)."""
    return teacher_writer(tmp_path_factory.mktemp("mask_teacher"),
                          f"{REPO}/configs/shapes/mask_rcnn_R_34_FPN_shapes_teacher.yaml",
                          "  RESNETS: {DEPTH: 18}\n  FPN: {OUT_CHANNELS: 48}\n  ROI_BOX_HEAD: {FC_DIM: 96}\n"
                          "  ROI_MASK_HEAD: {CONV_DIM: 16, NUM_CONV: 1}\n")


def mask_cfg(teacher, losses="[{'name': 'reviewkd'}, {'name': 'kd'}]", extra=()):
    return load_config(os.path.join(REPO, DISTILL), ["KD.TEACHER.CONFIG_FILE", teacher[0], "KD.TEACHER.WEIGHTS",
                                                     teacher[1], "KD.LOSSES", losses, *SMALL, *extra])


def batch(n=2):
    """test_distill's batch with a polygon mask per GT box."""
    out = box_batch(n)
    for x in out:
        x["instances"].gt_masks = PolygonMasks([[[10.0, 70.0, 35.0, 12.0, 60.0, 70.0]],
                                                [[80.0, 20.0, 120.0, 20.0, 100.0, 50.0]]])
    return out


def hook(module, seen):
    module.register_forward_hook(lambda m, args, out: seen.append(args))
    return seen


def test_mask_head_once_per_step_on_foreground_rois_teacher_mask_never(mask_teacher):
    """The student's mask head: once, on the sampled foreground RoIs; loss_mask counts beside the distillation
    terms; the Mask R-CNN teacher's mask pooler / head never run (no loss reads mask logits) and get no gradient."""
    model = build_model(mask_cfg(mask_teacher)).train()
    s, t = model.roi_heads, model.teacher.roi_heads
    assert s.mask_on and t.mask_on
    seen = {k: hook(m, []) for k, m in (("box_pooler", s.box_pooler), ("mask_head", s.mask_head),
                                         ("teacher_mask_pooler", t.mask_pooler), ("teacher_mask_head", t.mask_head),
                                         ("teacher_box_head", t.box_head))}
    with EventStorage(0):
        out = model(batch())
    assert {k: len(v) for k, v in seen.items()} == {"box_pooler": 1, "mask_head": 1, "teacher_mask_pooler": 0,
                                                    "teacher_mask_head": 0, "teacher_box_head": 1}
    sampled = seen["box_pooler"][0][1]                         # list of Boxes: the sampled RoIs per image
    (_, instances), = seen["mask_head"]                         # (pooled features, foreground proposals)
    assert all((p.gt_classes < s.num_classes).all() for p in instances)
    assert sum(len(p) for p in instances) < sum(len(b) for b in sampled)
    assert all(torch.isfinite(out[k]) for k in ("loss_mask", "loss_reviewkd", "loss_kd", "loss_cls"))
    sum(out.values()).backward()
    assert all(p.grad is None and not p.requires_grad for p in model.teacher.parameters())
    assert all(p.grad is not None for p in s.mask_head.parameters())


def test_keypoint_on_is_refused(mask_teacher):
    sentence = (r"^MODEL\.KEYPOINT_ON True: DistillRCNN trains Faster / Mask R-CNN students only; keypoint heads are "
                r"not supported \(set MODEL\.KEYPOINT_ON False\)\.$")
    with pytest.raises(ConfigError, match=sentence):
        build_model(mask_cfg(mask_teacher, extra=["MODEL.KEYPOINT_ON", "True"]))


def _perfect(json_file):
    """The ground truth of a COCO json as detections (score 1, its polygons as RLE masks)."""
    import pycocotools.mask as mask_util

    with open(json_file) as f:
        gt = json.load(f)
    size = {im["id"]: (im["height"], im["width"]) for im in gt["images"]}
    out = []
    for a in gt["annotations"]:
        rle = mask_util.merge(mask_util.frPyObjects(a["segmentation"], *size[a["image_id"]]))
        rle["counts"] = rle["counts"].decode()
        out.append({"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0,
                    "segmentation": rle})
    return out


@pytest.mark.parametrize("backend", ["faster_coco_eval", "pycocotools"])
def test_segm_ap_of_the_shapes_polygons(tiny_shapes, backend):
    """The shapes json carries each outline as a polygon: its own masks score segm AP 100, a shifted copy less."""
    from kd_det.detection.data.shapes import shapes_paths
    from kd_det.evaluation.coco_eval import evaluate_coco

    json_file, _ = shapes_paths(tiny_shapes, "val")
    dets = _perfect(json_file)
    assert evaluate_coco(json_file, dets, backend, iou_type="segm")[0]["AP"] == pytest.approx(100.0)
    import pycocotools.mask as mask_util
    for d in dets:  # masks cut to their left half: box AP unchanged, segm AP drops
        m = mask_util.decode(d["segmentation"])
        xs = m.nonzero()[1]
        m[:, (xs.min() + xs.max()) // 2:] = 0
        d["segmentation"] = mask_util.encode(m)
        d["segmentation"]["counts"] = d["segmentation"]["counts"].decode()
    assert evaluate_coco(json_file, dets, backend)[0]["AP"] == pytest.approx(100.0)
    segm = evaluate_coco(json_file, dets, backend, iou_type="segm")[0]
    assert segm["AP"] < 50.0
    # segm reads the mask's own area (object size ranges), never the "bbox" a detection also carries
    bogus = [dict(d, bbox=[0.0, 0.0, 1.0, 1.0]) for d in dets]
    assert evaluate_coco(json_file, bogus, backend, iou_type="segm")[0] == pytest.approx(segm, nan_ok=True)


def test_train_and_eval_write_segm_ap(tiny_shapes, tmp_path, run_tool, tiny_opts, mask_teacher):
    """tools/train_net.py on the Mask R-CNN ReviewKD config: loss_mask logged, evaluation.json has bbox and segm."""
    out = str(tmp_path / "run")
    r = run_tool("train_net.py", ["--config-file", DISTILL, "SOLVER.MAX_ITER", "2", "OUTPUT_DIR", out, *tiny_opts,
                                  "KD.TEACHER.CONFIG_FILE", mask_teacher[0], "KD.TEACHER.WEIGHTS", mask_teacher[1],
                                  "MODEL.FPN.OUT_CHANNELS", "32", "MODEL.ROI_MASK_HEAD.CONV_DIM", "16",
                                  "MODEL.ROI_MASK_HEAD.NUM_CONV", "1"], tiny_shapes)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    with open(os.path.join(out, "evaluation.json")) as f:
        results = json.load(f)["results"]["shapes_val"]
    assert set(results) == {"bbox", "segm"}
    for kind in ("bbox", "segm"):
        assert all(math.isfinite(results[kind][k]) and 0 <= results[kind][k] <= 100 for k in ("AP", "AP50"))
    with open(os.path.join(out, "metrics.json")) as f:
        rows = [json.loads(line) for line in f]
    assert all(math.isfinite(x["loss_mask"]) and math.isfinite(x["loss_reviewkd"]) for x in rows if "total_loss" in x)
    from kd_det.evaluation.runs import read_run
    assert "mask_AP" in read_run(out)["metrics"]


def test_export_mask_student_loads_in_stock_detectron2(mask_teacher, tmp_path):
    cfg = mask_cfg(mask_teacher, extra=["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"])
    _, dropped, exported_cfg, got, ref = export_and_run_in_stock(cfg, tmp_path)
    assert dropped > 0 and load_config(exported_cfg).MODEL.MASK_ON
    assert len(ref) > 0 and got["masks"].shape == ref.pred_masks.shape
    torch.testing.assert_close(got["boxes"], ref.pred_boxes.tensor, rtol=1e-4, atol=1e-3)
    union = (got["masks"] | ref.pred_masks).sum()
    assert union > 0 and (got["masks"] != ref.pred_masks).sum() <= 0.01 * union  # binarised: a border pixel may flip


def test_mask_student_on_box_only_data_is_refused(tiny_shapes, tmp_path):
    """A json without polygons would leave the mask head without gt_masks (an error at its first step): refused
    with one sentence when the train loader is built."""
    from kd_det.detection.data import DatasetError, setup_datasets
    from kd_det.detection.data.shapes import shapes_paths
    from kd_det.detection.engine import Trainer

    json_file, image_root = shapes_paths(tiny_shapes, "train")
    with open(json_file) as f:
        coco = json.load(f)
    for a in coco["annotations"][1:]:
        del a["segmentation"]
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps(coco))
    cfg = load_config(os.path.join(REPO, "configs/shapes/mask_rcnn_R_18_FPN_shapes.yaml"), [
        "DATASETS.COCO_FORMAT", str([["boxes_train", str(boxes), image_root]]), "DATASETS.TRAIN", "('boxes_train',)",
        "DATALOADER.NUM_WORKERS", "0"])
    setup_datasets(cfg)
    with pytest.raises(DatasetError, match=r"^MODEL\.MASK_ON True but dataset boxes_train has an annotation without "
                                           r"'segmentation' \(image .*000001\.png\); a Mask R-CNN trains on instance "
                                           r"masks: add polygons or RLE to the json, or set MODEL\.MASK_ON False\.$"):
        Trainer.build_train_loader(cfg)
    cfg.defrost()
    cfg.MODEL.MASK_ON = False
    Trainer.build_train_loader(cfg)  # the same boxes train a Faster R-CNN
