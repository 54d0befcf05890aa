"""tools/predict.py: pictures, a video and detections.json for a folder and a video; the detections are the model's
on the same image through Detectron2's test mapper; bad input is one sentence."""
import importlib.util
import json
import os

import cv2
import numpy as np
import pytest
import torch

import kd_det  # noqa: F401
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetMapper
from detectron2.modeling import build_model

from kd_det.config.detection import load_config
from kd_det.detection.data import register_shapes, shapes_paths

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BASE = os.path.join(REPO, "configs/shapes/faster_rcnn_R_18_FPN_shapes.yaml")
OPTS = ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.27", "MODEL.DEVICE", "cpu"]


def tool(capsys, *args):
    """tools/predict.py's main(args) in this interpreter -> (exit code, stdout, stderr)."""
    spec = importlib.util.spec_from_file_location("predict_tool", os.path.join(REPO, "tools", "predict.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rc = module.main([str(a) for a in args])
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture(scope="module")
def student(tiny_shapes, tmp_path_factory):
    """A random-init shapes student saved as a checkpoint, its config file, and 2 PNG images + a 3-frame video."""
    register_shapes(tiny_shapes)  # the test set's json gives class names and category ids
    folder = tmp_path_factory.mktemp("predict")
    cfg = load_config(BASE, OPTS)
    torch.manual_seed(0)
    DetectionCheckpointer(build_model(cfg), save_dir=str(folder)).save("model_final")
    (folder / "student.yaml").write_text(cfg.dump())
    images = folder / "images"
    images.mkdir()
    val_json, image_root = shapes_paths(tiny_shapes, "val")
    frames = [cv2.imread(os.path.join(image_root, f)) for f in sorted(os.listdir(image_root))[:3]]
    for i, frame in enumerate(frames[:2]):
        cv2.imwrite(str(images / f"img{i}.png"), frame)
    h, w = frames[0].shape[:2]
    video = cv2.VideoWriter(str(folder / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 5, (w, h))
    for frame in frames:
        video.write(frame)
    video.release()
    return {"cfg": str(folder / "student.yaml"), "weights": str(folder / "model_final.pth"), "images": images,
            "video": folder / "clip.mp4", "folder": folder, "val_json": val_json}


def test_predict_writes_pictures_video_and_detections_equal_to_the_models(student, capsys, tmp_path):
    out = tmp_path / "out"
    rc, stdout, err = tool(capsys, "--config-file", student["cfg"], "--weights", student["weights"], "--input",
                           student["images"], student["video"], "--output", out)
    assert rc == 0, err
    assert sorted(os.listdir(out)) == ["clip.mp4", "detections.json", "img0.jpg", "img1.jpg"]
    assert cv2.imread(str(out / "img0.jpg")).shape == cv2.imread(str(student["images"] / "img0.png")).shape
    cap = cv2.VideoCapture(str(out / "clip.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    cap.release()
    dets = json.loads((out / "detections.json").read_text())
    assert stdout.startswith(f"{len(dets)} detections: ")
    assert {d["category_name"] for d in dets} <= {"circle", "square", "triangle"}
    frames = sorted({d["frame"] for d in dets if "frame" in d})
    assert frames and set(frames) <= {0, 1, 2} and all(d["image_id"] == 3 for d in dets if "frame" in d)

    # the same image through Detectron2's test-time mapper (PIL read, same resize) and the model's own forward
    cfg = load_config(student["cfg"])
    model = build_model(cfg).eval()
    DetectionCheckpointer(model).load(student["weights"])
    path = str(student["images"] / "img0.png")
    h, w = cv2.imread(path).shape[:2]
    with torch.no_grad():
        inst = model([DatasetMapper(cfg, is_train=False)({"file_name": path, "height": h, "width": w})])[0]["instances"]
    mine = [d for d in dets if d["image_id"] == 1]
    assert len(mine) == len(inst) > 0
    with open(student["val_json"]) as f:
        ids = {c["name"]: c["id"] for c in json.load(f)["categories"]}
    names = ["circle", "square", "triangle"]  # the shapes test set's thing_classes
    for d, box, score, cls in zip(mine, inst.pred_boxes.tensor.tolist(), inst.scores.tolist(),
                                  inst.pred_classes.tolist()):
        assert d["file_name"] == path and d["category_name"] == names[cls] and d["category_id"] == ids[names[cls]]
        np.testing.assert_allclose(d["bbox"], [box[0], box[1], box[2] - box[0], box[3] - box[1]], atol=2e-3)
        assert abs(d["score"] - score) < 1e-5


@pytest.mark.parametrize("case", ["missing", "extension", "undecodable", "video", "empty_folder", "weights"])
def test_predict_bad_input_is_one_sentence(student, capsys, tmp_path, case):
    bad = {"missing": tmp_path / "nope.jpg", "extension": tmp_path / "notes.txt", "undecodable": tmp_path / "x.png",
           "video": tmp_path / "x.mp4", "empty_folder": tmp_path / "empty", "weights": student["images"]}[case]
    if case in ("extension", "undecodable", "video"):
        bad.write_bytes(os.urandom(64))
    if case == "empty_folder":
        bad.mkdir()
    weights = tmp_path / "missing.pth" if case == "weights" else student["weights"]
    rc, _, err = tool(capsys, "--config-file", student["cfg"], "--weights", weights, "--input", bad, "--output",
                      tmp_path / "out")
    want = {"missing": f"--input {bad} does not exist.",
            "extension": f"--input {bad} has extension '.txt'; predict.py reads images (",
            "undecodable": f"--input {bad} cannot be decoded as an image.",
            "video": f"--input {bad} cannot be opened as a video by OpenCV",
            "empty_folder": f"--input {bad} holds no image (",
            "weights": f"--weights {weights} does not exist."}[case]
    assert rc == 2
    assert err.startswith(f"predict.py: error: {want}") and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out" / "detections.json").exists()
