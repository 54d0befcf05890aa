"""Deploying a student: export_student.py --format torchscript | onnx gives the model's own detections (onnxruntime
on the CPU) at sizes other than the traced one, for Faster R-CNN, Mask R-CNN, RetinaNet, FCOS and MobileNetV2
students; bad input."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import kd_det  # noqa: F401
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

from kd_det.config.detection import load_config
from kd_det.detection.modeling.export import export_student

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOL = os.path.join(REPO, "tools", "export_student.py")
# More proposals survive NMS than POST_NMS_TOPK_TEST keeps, and a score threshold most detections fail: both counts
# then depend on the image, which a trace that froze them at the traced image would get wrong.
VARYING = ["MODEL.RPN.POST_NMS_TOPK_TEST", "1000", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.27"]
SIZES = [(128, 160), (96, 208)]  # the traced size (INPUT.MIN_SIZE_TEST 128, 4/3 of it capped at 160), another
TOL = {"boxes": 0.1, "scores": 1e-3}  # px / probability: onnxruntime's and torch's kernels round differently


def images():
    g = torch.Generator().manual_seed(5)
    return [torch.rand(3, h, w, generator=g) * 255 for h, w in SIZES]


def save_student(tmp_path, base, opts=()):
    """A randomly initialised student of ``base`` saved as a train_net.py checkpoint; (config file, weights, model)."""
    cfg = load_config(os.path.join(REPO, base), VARYING + list(opts))
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save("model_final")
    cfg_file = tmp_path / "student.yaml"
    cfg_file.write_text(cfg.dump())
    return str(cfg_file), str(tmp_path / "model_final.pth"), model


def reference(model, image):
    """The model's own detections (Detectron2's batched inference path), as numpy arrays."""
    with torch.no_grad():
        inst = model([{"image": image}])[0]["instances"]
    out = {"boxes": inst.pred_boxes.tensor, "scores": inst.scores, "classes": inst.pred_classes}
    if inst.has("pred_masks"):
        out["masks"] = inst.pred_masks.to(torch.uint8)
    return {k: v.numpy() for k, v in out.items()}


def assert_same_detections(got, ref):
    """Same detections up to order among near-equal scores: each one matches a reference one of the same class
    within TOL (and the same mask up to a few border pixels)."""
    assert len(got["scores"]) == len(ref["scores"]) > 0
    assert set(got) == set(ref)
    used = set()
    for i in range(len(got["scores"])):
        box_err = np.abs(ref["boxes"] - got["boxes"][i]).max(axis=1)
        ok = [j for j in np.argsort(box_err) if j not in used and ref["classes"][j] == got["classes"][i]
              and box_err[j] <= TOL["boxes"] and abs(ref["scores"][j] - got["scores"][i]) <= TOL["scores"]]
        assert ok, f"detection {i} ({got['classes'][i]}, {got['boxes'][i]}, {got['scores'][i]}) has no match"
        used.add(ok[0])
        if "masks" in got:
            assert (got["masks"][i] != ref["masks"][ok[0]]).mean() < 0.01


def run_onnx(path, image):
    import onnxruntime as ort

    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, {"image": image.numpy()})))


# Dense students at random init score every anchor near their prior 0.01: thresholds just above it vary the counts.
DENSE = {"configs/shapes/retinanet_R_18_FPN_shapes.yaml": ["MODEL.RETINANET.SCORE_THRESH_TEST", "0.015",
                                                           "TEST.DETECTIONS_PER_IMAGE", "1000"],
         "configs/shapes/fcos_R_18_FPN_shapes.yaml": ["MODEL.FCOS.SCORE_THRESH_TEST", "0.0103"]}


@pytest.mark.parametrize("base", ["configs/shapes/faster_rcnn_R_18_FPN_shapes.yaml",
                                  "configs/shapes/mask_rcnn_R_18_FPN_shapes.yaml", *DENSE])
def test_onnx_and_torchscript_give_the_models_detections_at_two_sizes(base, tmp_path):
    cfg_file, weights, model = save_student(tmp_path, base, DENSE.get(base, ()))
    refs = [reference(model, x) for x in images()]
    assert len(refs[0]["scores"]) != len(refs[1]["scores"])  # the counts differ: a frozen trace would fail
    onnx = export_student(cfg_file, weights, str(tmp_path / "onnx"), fmt="onnx")
    ts = export_student(cfg_file, weights, str(tmp_path / "ts"), fmt="torchscript")
    assert onnx["outputs"] == ["boxes", "scores", "classes"] + (["masks"] if "mask" in base else [])
    traced = torch.jit.load(ts["graph"])
    for x, ref in zip(images(), refs):
        assert_same_detections(run_onnx(onnx["graph"], x), ref)
        with torch.no_grad():
            assert_same_detections({k: v.numpy() for k, v in zip(ts["outputs"], traced(x))}, ref)


RUN_TS = """
import sys, torch, torchvision  # torchvision registers the nms / roi_align ops; no kd_det, no Detectron2
m = torch.jit.load(sys.argv[1])
with torch.no_grad():
    boxes, scores, classes = m(torch.load(sys.argv[2]))
torch.save({"boxes": boxes, "scores": scores, "classes": classes}, sys.argv[3])
assert "kd_det" not in sys.modules and "detectron2" not in sys.modules
"""


def test_mobilenet_student_runs_from_torchscript_without_kd_det(tmp_path):
    small = ["INPUT.MIN_SIZE_TEST", "128", "INPUT.MAX_SIZE_TEST", "160", "MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu",
             "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"]  # 80 classes at random init: no score reaches 0.27
    cfg_file, weights, model = save_student(tmp_path, "configs/COCO-Detection/faster_rcnn_MV2_FPN_1x.yaml", small)
    out = export_student(cfg_file, weights, str(tmp_path / "ts"), fmt="torchscript")
    x = images()[1]
    torch.save(x, tmp_path / "x.pt")
    r = subprocess.run([sys.executable, "-c", RUN_TS, out["graph"], str(tmp_path / "x.pt"), str(tmp_path / "y.pt")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    got = {k: v.numpy() for k, v in torch.load(tmp_path / "y.pt").items()}
    assert_same_detections(got, reference(model, x))


def tool(capsys, *args):
    """tools/export_student.py's main(args) in this interpreter -> (exit code, stderr)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("export_student_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rc = module.main(list(args))
    return rc, capsys.readouterr().err


def test_bad_format_is_one_sentence(tmp_path, capsys):
    rc, err = tool(capsys, "--config-file", "x.yaml", "--weights", "w.pth", "--output", str(tmp_path / "o"),
                   "--format", "tflite")
    assert rc == 2
    assert err.strip() == "export_student.py: error: --format 'tflite' is not one of pth, torchscript, onnx."
    assert not (tmp_path / "o").exists()


def test_onnx_without_the_package_names_the_extra(monkeypatch, tmp_path):
    from kd_det.errors import ConfigError

    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ConfigError, match=r'^--format onnx needs the onnx package, which is not installed; install '
                                          r'kd_det\'s deploy extra: pip install -e "\.\[deploy\]"'):
        export_student("x.yaml", "w.pth", str(tmp_path / "o"), fmt="onnx")
    assert not (tmp_path / "o").exists()


def test_checkpoint_that_does_not_fit_is_refused_and_nothing_written(tmp_path, capsys):
    cfg_file, weights, _ = save_student(tmp_path, "configs/shapes/faster_rcnn_R_18_FPN_shapes.yaml")
    other = load_config(os.path.join(REPO, "configs/shapes/faster_rcnn_R_34_FPN_shapes_teacher.yaml"))
    (tmp_path / "r34.yaml").write_text(other.dump())
    rc, err = tool(capsys, "--config-file", str(tmp_path / "r34.yaml"), "--weights", weights, "--output",
                   str(tmp_path / "o"), "--format", "onnx")
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"export_student.py: error: --weights {weights} does not fit the "
                                                   "config's student (GeneralizedRCNN, build_resnet_fpn_backbone): "
                                                   "tensors "), lines
    assert not (tmp_path / "o").exists()
