"""Backbone conversion: a classification ResNet / MobileNetV2 checkpoint becomes Detectron2
weights with every backbone key matched and the same stage features."""
import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

import kd_det  # noqa: F401  (Detectron2 0.6 compatibility, before importing detectron2)
from kd_det.classification.convert import convert_checkpoint, detectron2_settings
from kd_det.classification.models import build_model

from cls_helpers import CONFIGS, REPO

d2 = pytest.importorskip("detectron2")
from detectron2.checkpoint import DetectionCheckpointer  # noqa: E402
from detectron2.config import get_cfg  # noqa: E402
from detectron2.modeling import build_model as build_d2_model  # noqa: E402

STAGES = ("res2", "res3", "res4", "res5")


def _randomise_bn(model):
    """Non-trivial BN statistics, so a wrong mapping cannot go unnoticed."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(1 + 0.1 * torch.randn(m.num_features, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.num_features, generator=g))
    return model.eval()


def _detector(depth, weights):
    """The R-{depth} Faster R-CNN FPN detection student of configs/COCO-Detection, on CPU."""
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs", "COCO-Detection", "faster_rcnn_R_18_FPN_3x.yaml"))
    cfg.merge_from_list(detectron2_settings("resnet", depth) + ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", weights])
    if depth >= 50:
        cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 256
    model = build_d2_model(cfg).eval()
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    return model


def _check_same_backbone(detector, source, dst):
    with open(dst, "rb") as f:
        blob = pickle.load(f)
    assert blob["__author__"] == "kd_det" and blob["matching_heuristics"] is False
    own = {k: v for k, v in detector.state_dict().items() if k.startswith("backbone.bottom_up.")}
    assert set(blob["model"]) == set(own)  # no missing, no unexpected backbone key
    for k, v in blob["model"].items():
        assert torch.equal(own[k], torch.as_tensor(v)), k
    assert all(type(m).__name__ == "FrozenBatchNorm2d" for n, m in detector.backbone.bottom_up.named_modules()
               if n.endswith("norm"))
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        got = detector.backbone.bottom_up(x)
        want = source.eval().forward_stages(x)
    for name, ref in zip(STAGES, want):
        torch.testing.assert_close(got[name], ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("arch,depth", [("resnet18", 18), ("resnet50", 50)])
def test_resnet_round_trip(tmp_path, arch, depth):
    torch.manual_seed(0)
    source = _randomise_bn(build_model(arch, 10))
    torch.save({"model": source.state_dict()}, tmp_path / "cls.pth")
    dst = str(tmp_path / "backbone.pkl")
    assert convert_checkpoint(str(tmp_path / "cls.pth"), dst)[:2] == ("resnet", depth)
    _check_same_backbone(_detector(depth, dst), source, dst)


def test_mobilenet_v2_keeps_torchvision_layout(tmp_path):
    torch.manual_seed(0)
    source = _randomise_bn(build_model("mobilenet_v2", 10))
    torch.save(source.state_dict(), tmp_path / "mv2.pth")  # a bare torchvision state dict
    dst = str(tmp_path / "mv2.pth.pkl")
    convert_checkpoint(str(tmp_path / "mv2.pth"), dst)
    with open(dst, "rb") as f:
        weights = pickle.load(f)["model"]
    bottom_up = torch.nn.Module()
    bottom_up.features = build_model("mobilenet_v2", 10).features
    holder = torch.nn.Module()
    holder.backbone = torch.nn.Module()
    holder.backbone.bottom_up = bottom_up
    expected = {k for k in holder.state_dict() if not k.endswith("num_batches_tracked")}
    assert set(weights) == expected
    holder.load_state_dict({k: torch.as_tensor(v) for k, v in weights.items()}, strict=False)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(bottom_up.eval().features(x), source.features(x))


def test_mobilenet_v2_loads_into_the_mv2_fpn_detector(tmp_path):
    """The converted file initialises kd_det's MobileNetV2-FPN student: every bottom-up key, same stages."""
    from kd_det.config.detection import load_config
    from kd_det.detection.modeling.mobilenetv2 import STAGES as MV2_STAGES

    torch.manual_seed(0)
    source = _randomise_bn(build_model("mobilenet_v2", 10)).eval()
    torch.save(source.state_dict(), tmp_path / "mv2.pth")
    dst = str(tmp_path / "mv2.pkl")
    convert_checkpoint(str(tmp_path / "mv2.pth"), dst)
    cfg = load_config(os.path.join(REPO, "configs/COCO-Detection/faster_rcnn_MV2_FPN_1x.yaml"),
                      ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", dst])
    model = build_d2_model(cfg).eval()
    ckpt = DetectionCheckpointer(model)
    incompatible = ckpt._load_model(ckpt._load_file(dst))
    assert not [k for k in incompatible.missing_keys if "bottom_up" in k]
    assert all(k.startswith("backbone.bottom_up.features.18.") for k in incompatible.unexpected_keys)  # 1280-d conv
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        got = model.backbone.bottom_up(x)
        for name, (start, end, _, _) in MV2_STAGES.items():
            x = source.features[start:end](x)
            torch.testing.assert_close(got[name], x, rtol=1e-4, atol=1e-4)


def test_cli_refuses_cifar_models(tmp_path, convert_tool, capsys):
    torch.save({"model": build_model("resnet8x4", 10).state_dict()}, tmp_path / "c.pth")
    assert convert_tool.main([str(tmp_path / "c.pth"), str(tmp_path / "o.pkl")]) == 2
    assert "CIFAR models cannot be converted" in capsys.readouterr().err


def test_chain_distilled_student_to_detection_student(tmp_path, train_cls, convert_tool, capsys):
    """train_cls (ImageNet layout) -> convert_backbone -> Detectron2 R-18 FPN MODEL.WEIGHTS."""
    for split, n in (("train", 3), ("val", 1)):
        for c in ("n01", "n02"):
            os.makedirs(tmp_path / "imagenet" / split / c)
            for i in range(n):
                pixels = np.random.default_rng(i).integers(0, 255, (40, 40, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(tmp_path / "imagenet" / split / c / f"{i}.png")
    out = tmp_path / "student"
    train_cls.main(["--config", os.path.join(CONFIGS, "imagenet", "resnet34-resnet18", "student.yaml"),
                    "DATA.ROOT", str(tmp_path / "imagenet"), "DATA.NUM_CLASSES", "2", "DATA.NUM_WORKERS", "0",
                    "INPUT.SIZE", "32", "SOLVER.EPOCHS", "1", "SOLVER.BATCH_SIZE", "6", "OUTPUT_DIR", str(out)])
    dst = str(tmp_path / "r18_student.pkl")
    assert convert_tool.main([str(out / "model_final.pth"), dst]) == 0
    assert "MODEL.RESNETS.STRIDE_IN_1X1 False" in capsys.readouterr().out
    source = build_model("resnet18", 2)
    source.load_state_dict(torch.load(out / "model_final.pth", weights_only=False)["model"])
    _check_same_backbone(_detector(18, dst), source, dst)


# ---------------------------------------------------------------- recorded input normalisation
OLD_BGR = ["INPUT.FORMAT", "BGR", "MODEL.PIXEL_MEAN", "[103.53, 116.28, 123.675]", "MODEL.PIXEL_STD", "[1.0, 1.0, 1.0]"]


@pytest.mark.parametrize("name", ["faster_rcnn_R_18_FPN_1x.yaml", "faster_rcnn_R_18_FPN_3x.yaml",
                                  "faster_rcnn_R_34_FPN_1x.yaml", "faster_rcnn_MV2_FPN_1x.yaml"])
def test_torchvision_student_configs_use_the_converter_normalisation(name):
    """The students initialised from converted torchvision weights read RGB with torchvision's mean / std."""
    from kd_det.classification.convert import TORCHVISION_INPUT
    from kd_det.config.detection import load_config

    cfg = load_config(os.path.join(REPO, "configs", "COCO-Detection", name))
    assert cfg.INPUT.FORMAT == TORCHVISION_INPUT["INPUT.FORMAT"]
    assert list(cfg.MODEL.PIXEL_MEAN) == TORCHVISION_INPUT["MODEL.PIXEL_MEAN"]
    assert list(cfg.MODEL.PIXEL_STD) == TORCHVISION_INPUT["MODEL.PIXEL_STD"]


def _torchvision_file(tmp_path, arch):
    """A random torchvision ResNet saved as a bare state dict .pth, converted to Detectron2 weights."""
    import torchvision

    torch.manual_seed(0)
    torch.save(getattr(torchvision.models, arch)(weights=None).state_dict(), tmp_path / f"{arch}.pth")
    dst = str(tmp_path / f"{arch}-d2.pkl")
    convert_checkpoint(str(tmp_path / f"{arch}.pth"), dst)
    return dst


def _coco_model(name, weights, extra=()):
    from kd_det.config.detection import load_config

    cfg = load_config(os.path.join(REPO, "configs", "COCO-Detection", name),
                      ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", weights, *extra])
    return build_d2_model(cfg)


def test_converted_r18_loads_with_the_r18_config_and_is_refused_with_bgr_settings(tmp_path):
    from kd_det.detection.engine.checkpoint import KDCheckpointer
    from kd_det.errors import ConfigError

    dst = _torchvision_file(tmp_path, "resnet18")
    with open(dst, "rb") as f:
        blob = pickle.load(f)
    assert blob["required_settings"] == {
        "INPUT.FORMAT": "RGB", "MODEL.PIXEL_MEAN": [123.675, 116.28, 103.53],
        "MODEL.PIXEL_STD": [58.395, 57.12, 57.375]}  # BasicBlock: no STRIDE_IN_1X1
    model = _coco_model("faster_rcnn_R_18_FPN_1x.yaml", dst)
    KDCheckpointer(model).load(dst)  # (a) the R-18 config as shipped
    stem = "backbone.bottom_up.stem.conv1.weight"
    assert torch.equal(model.state_dict()[stem], torch.as_tensor(blob["model"][stem]))
    bgr = _coco_model("faster_rcnn_R_18_FPN_1x.yaml", dst, OLD_BGR)
    with pytest.raises(ConfigError) as e:  # (b) Detectron2's BGR / std-1 settings
        KDCheckpointer(bgr).load(dst)
    assert str(e.value) == (
        f"MODEL.WEIGHTS {dst} was converted for INPUT.FORMAT RGB, MODEL.PIXEL_MEAN [123.675, 116.28, 103.53] and "
        "MODEL.PIXEL_STD [58.395, 57.12, 57.375] but the config has INPUT.FORMAT BGR, MODEL.PIXEL_MEAN "
        "[103.53, 116.28, 123.675] and MODEL.PIXEL_STD [1, 1, 1]; set INPUT.FORMAT RGB, MODEL.PIXEL_MEAN "
        "[123.675, 116.28, 103.53] and MODEL.PIXEL_STD [58.395, 57.12, 57.375] (as tools/convert_backbone.py printed).")
    from kd_det.detection.modeling.teacher import _load_checked  # the teacher loader refuses the same way

    with pytest.raises(ConfigError, match=r"^KD\.TEACHER\.WEIGHTS .* but KD\.TEACHER\.CONFIG_FILE t\.yaml has "
                                          r"INPUT\.FORMAT BGR"):
        _load_checked(bgr, dst, 0.0, "t.yaml")


def test_converted_r50_is_refused_by_the_stock_bgr_r50_config(tmp_path):
    """A converted torchvision R-50 used with Detectron2's MSRA settings (BGR, std 1, STRIDE_IN_1X1 True)."""
    from kd_det.detection.engine.checkpoint import KDCheckpointer
    from kd_det.errors import ConfigError

    dst = _torchvision_file(tmp_path, "resnet50")
    with pytest.raises(ConfigError, match=r"^MODEL\.WEIGHTS .*resnet50-d2\.pkl was converted for INPUT\.FORMAT RGB, "
                                          r".* and MODEL\.RESNETS\.STRIDE_IN_1X1 False but the config has .*"
                                          r"MODEL\.RESNETS\.STRIDE_IN_1X1 True; set .*\.$"):
        KDCheckpointer(_coco_model("faster_rcnn_R_50_FPN_1x.yaml", dst)).load(dst)
    settings = detectron2_settings("resnet", 50)
    KDCheckpointer(_coco_model("faster_rcnn_R_50_FPN_1x.yaml", dst, settings)).load(dst)  # the printed settings fit
