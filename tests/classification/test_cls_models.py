"""The model zoo: published parameter counts, the one interface, checkpoint-compatible names."""
import csv
import functools

import pytest
import torch
import torchvision

from kd_det.classification.models import (CSV_ARCH, IMAGENET_ARCHS, MODEL_REGISTRY, build_model,
                                          count_parameters, parameter_table)

from cls_helpers import paper_csv


@functools.lru_cache(maxsize=None)
def _model(arch):
    torch.manual_seed(0)
    return build_model(arch, 1000 if arch in IMAGENET_ARCHS else 100).eval()

# Parameter counts (millions, CIFAR-100 head) of the CRD / DKD model zoo as published.
PUBLISHED_M = {"resnet8x4": 1.23, "resnet32x4": 7.43, "resnet56": 0.86, "resnet110": 1.74,
               "resnet20": 0.28, "wrn_40_2": 2.26, "wrn_16_2": 0.70, "wrn_40_1": 0.57,
               "vgg13": 9.46, "vgg8": 3.96, "resnet50_cifar": 23.71, "mobilenetv2_cifar": 0.81,
               "shufflenetv1": 0.95, "shufflenetv2": 1.36}


@pytest.mark.parametrize("arch", sorted(PUBLISHED_M))
def test_parameter_count_matches_published_zoo(arch):
    n = count_parameters(_model(arch)) / 1e6
    assert abs(n - PUBLISHED_M[arch]) < 0.006, f"{arch}: {n:.4f} M"


def test_parameter_table_prints_counts():
    table = parameter_table(["resnet8x4", "wrn_40_1"])
    print(table)
    assert "resnet8x4" in table and "1.23 M" in table and "0.57 M" in table


def test_every_csv_model_is_registered():
    assert set(CSV_ARCH.values()) <= set(MODEL_REGISTRY)


@pytest.mark.parametrize("arch", sorted(MODEL_REGISTRY))
def test_one_interface(arch):
    """logits, embedding, stage maps and classifier agree for every model."""
    model = _model(arch)
    size = 64 if arch in IMAGENET_ARCHS else 32
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        out = model(x, with_features=True)
        plain = model(x)
    feats = out["feats"]
    assert [f.shape[1] for f in feats] == list(model.stage_channels)
    assert out["emb"].shape == (2, model.embed_dim)
    torch.testing.assert_close(out["emb"], feats[-1].mean((2, 3)))
    torch.testing.assert_close(out["logits"], model.get_classifier()(out["emb"]))
    torch.testing.assert_close(plain, out["logits"])
    assert out["logits"].shape == (2, 1000 if arch in IMAGENET_ARCHS else 100)
    # stages go from fine to coarse
    sizes = [f.shape[-1] for f in feats]
    assert sizes == sorted(sizes, reverse=True)


# Models whose CRD-code stage maps (``stage_feats``) end in a ReLU: there relu(preact) == stage map.
RELU_ENDED = ("resnet8", "resnet20", "resnet32x4", "resnet50_cifar", "vgg8", "vgg13", "shufflenetv1",
              "resnet18", "resnet34", "resnet50", "mobilenet_v1")


@pytest.mark.parametrize("arch", sorted(MODEL_REGISTRY))
def test_stage_feats_and_preact_feats(arch):
    """The maps ReviewKD's reference code distils: CRD's ``is_feat`` stage maps and their
    pre-activation versions (``preact=True``; mdistiller's ``feats`` / ``preact_feats``)."""
    model = _model(arch)
    size = 64 if arch in IMAGENET_ARCHS else 32
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        out = model(x, with_features=True, preact=True)
        plain = model(x, with_features=True)
    assert plain["preact_feats"] is None                      # kept only when asked for
    torch.testing.assert_close(out["logits"], plain["logits"])
    taps, pres = out["stage_feats"], out["preact_feats"]
    assert [f.shape[1] for f in taps] == [f.shape[1] for f in pres] == list(model.stage_feat_channels)
    assert [f.shape for f in taps] == [f.shape for f in pres]
    if arch in RELU_ENDED:
        for tap, pre in zip(taps, pres):
            torch.testing.assert_close(torch.relu(pre), tap)
            assert (pre < 0).any()                            # really before the ReLU
        assert all(a is b for a, b in zip(taps, out["feats"]))


def test_stage_feats_differ_from_feats_as_in_the_crd_code():
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        wrn = _model("wrn_40_2")
        out = wrn(x, with_features=True, preact=True)
        f1, f2, f3 = out["stage_feats"]
        # CRD WideResNet(is_feat, preact): block outputs; preact = the next BN applied to them
        torch.testing.assert_close(out["preact_feats"][0], wrn.block2.layer[0].bn1(f1))
        torch.testing.assert_close(out["preact_feats"][1], wrn.block3.layer[0].bn1(f2))
        torch.testing.assert_close(out["preact_feats"][2], wrn.bn1(f3))
        torch.testing.assert_close(out["feats"][2], torch.relu(wrn.bn1(f3)))
        mv2 = _model("mobilenetv2_cifar")                      # CRD: f1..f4 = blocks 1, 2, 4, 6
        out = mv2(x, with_features=True, preact=True)
        assert [f.shape[1] for f in out["stage_feats"]] == [12, 16, 48, 160]
        assert [f.shape[1] for f in out["feats"]] == [12, 16, 48, 1280]
        sv2 = _model("shufflenetv2")                           # CRD: f1..f3 = layer1..3
        out = sv2(x, with_features=True, preact=True)
        assert [f.shape[1] for f in out["stage_feats"]] == [116, 232, 464]
        assert [f.shape[1] for f in out["feats"]] == [116, 232, 1024]


def test_stage_counts_match_within_every_paper_pair():
    """ReviewKD / MSD pair stages one to one: teacher and student must have as many."""
    path = paper_csv()
    with open(path) as f:
        pairs = {(r["dataset"], r["teacher"], r["student"]) for r in csv.DictReader(f)
                 if r["task"] == "classification"}
    for ds, t, s in pairs:
        assert len(_model(CSV_ARCH[(ds, t)]).stage_channels) == len(
            _model(CSV_ARCH[(ds, s)]).stage_channels), (ds, t, s)


def test_torchvision_names_and_weights_load():
    for ours, theirs in (("resnet18", torchvision.models.resnet18),
                         ("resnet50", torchvision.models.resnet50),
                         ("mobilenet_v2", torchvision.models.mobilenet_v2)):
        ref = theirs(num_classes=10).eval()
        model = build_model(ours, 10).eval()
        model.load_state_dict(ref.state_dict(), strict=True)
        x = torch.randn(1, 3, 64, 64)
        with torch.no_grad():
            torch.testing.assert_close(model(x), ref(x))


def test_crd_parameter_names():
    """Names follow RepDistiller so its published teacher checkpoints load strictly."""
    assert "layer1.0.downsample.0.weight" in build_model("resnet8x4", 100).state_dict()
    assert "block1.layer.0.convShortcut.weight" in build_model("wrn_40_2", 100).state_dict()
    assert "block4.0.weight" in build_model("vgg13", 100).state_dict()
    assert "blocks.6.0.conv.0.weight" in build_model("mobilenetv2_cifar", 100).state_dict()
    assert "layer3.0.conv1.weight" in build_model("shufflenetv1", 100).state_dict()
    assert "linear.weight" in build_model("resnet50_cifar", 100).state_dict()


def test_unknown_arch_names_the_choices():
    with pytest.raises(KeyError, match="resnet8x4"):
        build_model("resnet9000", 10)
