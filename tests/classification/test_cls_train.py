"""1-epoch smoke runs of ``tools/train_cls.py`` for every method, on synthetic CIFAR-format
data, using the real row configs with a small teacher / student; plus the distiller's
teacher-freezing and routing."""
import math
import os

import pytest
import torch

from kd_det.config.classification import load_cls_config
from kd_det.classification.distiller import Distiller, build_distill_loss
from kd_det.classification.models import build_model
from kd_det.errors import UserError

from cls_helpers import (CONFIGS, NUM_CLASSES, SMOKE_STUDENT, SMOKE_TEACHER, read_metrics,
                         tiny_overrides)

PAIR = os.path.join(CONFIGS, "cifar100", "resnet32x4-resnet8x4")
METHODS = ["student", "kd", "dkd", "ckd", "dcd", "dcd_kd", "crd", "crd_kd", "reviewkd", "msd"]


def _small_losses(cfg):
    """The config's loss specs; CRD draws 128 instead of 16384 negatives on 64 images."""
    out = []
    for spec in cfg.KD.LOSSES:
        spec = dict(spec)
        if spec["name"] == "crd":
            spec["params"] = dict(spec.get("params") or {}, nce_k=128)
        out.append(spec)
    return out


@pytest.mark.parametrize("method", METHODS)
def test_one_epoch_per_method(method, tmp_path, tiny_cifar, smoke_teacher, train_cls):
    path = os.path.join(PAIR, f"{method}.yaml")
    cfg = load_cls_config(path)
    argv = ["--config", path, *tiny_overrides(tiny_cifar, str(tmp_path)), "MODEL.ARCH", SMOKE_STUDENT]
    if cfg.KD.LOSSES:
        argv += ["KD.TEACHER.ARCH", SMOKE_TEACHER, "KD.TEACHER.WEIGHTS", smoke_teacher,
                 "KD.LOSSES", repr(_small_losses(cfg))]
    if cfg.DATA.CONTRAST_K:  # CRD rows: the loader's negatives, as many as the loss draws
        argv += ["DATA.CONTRAST_K", "128"]
    result = train_cls.main(argv)
    assert 0.0 <= result["top1"] <= 100.0 and result["top5"] >= result["top1"]
    (record,) = read_metrics(str(tmp_path))
    names = {f"train/loss_{s['name']}" for s in cfg.KD.LOSSES} | {"train/loss_ce"}
    assert names <= set(record), record
    assert all(math.isfinite(record[k]) for k in names)
    assert record["val/num_images"] == 32
    ckpt = torch.load(tmp_path / "last_checkpoint.pth", weights_only=False)
    assert ckpt["epoch"] == 1 and ckpt["arch"] == SMOKE_STUDENT
    learnable = {"dcd", "crd", "reviewkd", "msd"} & {s["name"] for s in cfg.KD.LOSSES}
    assert bool(ckpt["distill"]) == bool(learnable)  # learnable loss parts are checkpointed
    for f in ("model_final.pth", "model_best.pth", "config.yaml"):
        assert (tmp_path / f).is_file()
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path))
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]  # kd_det.core.atomic_write's temporary files


def test_teacher_in_bfloat16_channels_last_hands_float32_to_the_losses():
    """KD.TEACHER.PRECISION bfloat16 + CHANNELS_LAST: the teacher's convolutions run in bf16 / NHWC, the
    losses and the student stay float32."""
    from kd_det.core import resolve_teacher_mode

    torch.manual_seed(0)
    student, teacher = build_model("resnet8", NUM_CLASSES), build_model("resnet8", NUM_CLASSES)
    specs = [{"name": "kd"}, {"name": "reviewkd"}]
    criterion = build_distill_loss(specs, student, teacher, num_samples=8, num_classes=NUM_CLASSES)
    mode = resolve_teacher_mode("cpu", "bfloat16", True)
    distiller = Distiller(student, teacher, criterion, teacher_mode=mode).train()
    assert next(p for p in teacher.parameters() if p.dim() == 4).is_contiguous(memory_format=torch.channels_last)
    seen = {}
    first_conv = next(m for m in teacher.modules() if isinstance(m, torch.nn.Conv2d))
    first_conv.register_forward_hook(lambda m, i, o: seen.update(t=o.dtype) and None)
    criterion.losses["kd"].register_forward_pre_hook(lambda m, a, kw: seen.update(kd=kw["logits_t"].dtype) and None,
                                                     with_kwargs=True)
    losses, logits = distiller(torch.randn(4, 3, 32, 32), torch.randint(0, NUM_CLASSES, (4,)), torch.arange(4))
    assert (seen["t"], seen["kd"], logits.dtype) == (torch.bfloat16, torch.float32, torch.float32)
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert all(p.grad is None for p in teacher.parameters())


def test_teacher_is_frozen_and_outside_the_state_dict():
    torch.manual_seed(0)
    student, teacher = build_model("resnet8", NUM_CLASSES), build_model("resnet8", NUM_CLASSES)
    specs = [{"name": "msd", "weight": 0.8}, {"name": "dcd", "weight": 1.0}, {"name": "kd"}]
    criterion = build_distill_loss(specs, student, teacher, num_samples=8, num_classes=NUM_CLASSES)
    distiller = Distiller(student, teacher, criterion).train()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, NUM_CLASSES, (4,))
    losses, logits = distiller(x, y, torch.arange(4))
    assert set(losses) == {"loss_ce", "loss_msd", "loss_dcd", "loss_kd"}
    sum(losses.values()).backward()
    assert not teacher.training
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    after = teacher.state_dict()  # eval mode: BN statistics untouched too
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is not None for p in criterion.parameters() if p.requires_grad)
    assert not any(k.startswith("_teacher") or k.startswith("teacher") for k in distiller.state_dict())
    assert logits.shape == (4, NUM_CLASSES)


def test_a_loss_needing_what_classification_does_not_provide_is_refused_at_build():
    """From the specs (before any parameter error) and from a built loss handed to the Distiller directly."""
    from kd_det.errors import ConfigError
    from kd_det.losses import DistillLoss

    student, teacher = build_model("resnet8", NUM_CLASSES), build_model("resnet8", NUM_CLASSES)
    provides = ", ".join(k for k in ("logits_s", "logits_t", "target", "emb_s", "emb_t", "feats_s", "feats_t",
                                     "stage_feats_s", "stage_feats_t", "preact_feats_s", "preact_feats_t", "index",
                                     "contrast_index", "teacher_classifier"))
    assert set(Distiller.PROVIDED_INPUTS) == set(provides.split(", "))
    sentence = (rf"^KD\.LOSSES: fgfi needs anchors, gt_boxes, which classification does not provide \(it provides "
                rf"{provides}\)\.$")
    with pytest.raises(ConfigError, match=sentence):
        build_distill_loss([{"name": "fgfi"}], student, teacher, num_samples=8, num_classes=NUM_CLASSES)
    fgfi = DistillLoss([{"name": "fgfi"}], {"feats_s": [16, 32, 64], "feats_t": [16, 32, 64]})
    with pytest.raises(ConfigError, match=sentence):
        Distiller(student, teacher, fgfi)


def test_the_teacher_runs_only_when_a_loss_takes_its_outputs():
    """Without distillation losses the teacher is never called; with a logit loss once per step."""
    student, teacher = build_model("resnet8", NUM_CLASSES), build_model("resnet8", NUM_CLASSES)
    calls = []
    teacher.register_forward_hook(lambda *a: calls.append(1))
    x, y = torch.randn(2, 3, 32, 32), torch.randint(0, NUM_CLASSES, (2,))
    Distiller(student, teacher, None)(x, y, torch.arange(2))
    assert calls == []
    kd = build_distill_loss([{"name": "kd"}], student, teacher, num_samples=8, num_classes=NUM_CLASSES)
    Distiller(student, teacher, kd)(x, y, torch.arange(2))
    assert calls == [1]


def test_reviewkd_gets_the_reference_maps_and_the_pooled_level():
    """ReviewKD's CIFAR code: student post-activation stage maps, teacher pre-activation maps,
    plus the pooled embeddings as a last 1x1 level (ABF without residual, HCL at 1x1 only)."""
    torch.manual_seed(0)
    student, teacher = build_model("resnet8", NUM_CLASSES), build_model("wrn_16_2", NUM_CLASSES)
    specs = [{"name": "reviewkd", "weight": 1.0, "params": {"pooled_level": True},
              "inputs": {"feats_s": "stage_feats_s", "feats_t": "preact_feats_t"}}]
    criterion = build_distill_loss(specs, student, teacher, num_samples=8, num_classes=NUM_CLASSES)
    loss = criterion.losses["reviewkd"]
    assert (loss.in_channels, loss.out_channels) == ([16, 32, 64, 64], [32, 64, 128, 128])
    assert set(criterion.required_inputs()) == {"stage_feats_s", "preact_feats_t", "emb_s", "emb_t"}
    distiller = Distiller(student, teacher, criterion).train()
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, NUM_CLASSES, (4,))
    losses, _ = distiller(x, y)
    out_s = student(x, with_features=True)
    with torch.no_grad():
        out_t = teacher(x, with_features=True, preact=True)
    want = loss(out_s["stage_feats"], out_t["preact_feats"], out_s["emb"], out_t["emb"])
    torch.testing.assert_close(losses["loss_reviewkd"], want)
    post = loss(out_s["stage_feats"], out_t["feats"], out_s["emb"], out_t["emb"])
    assert abs(post.item() - want.item()) > 1e-4                # the teacher maps are the pre-activation ones
    with pytest.raises(ValueError, match=r"^reviewkd: inputs 'emb_s' and 'emb_t' are required"):
        loss(out_s["stage_feats"], out_t["preact_feats"])
    # the pooled level is the last ABF output, compared with the teacher embedding at 1x1 only
    preds = loss.fuse(out_s["stage_feats"] + [out_s["emb"][:, :, None, None]],
                      [t.shape[-2:] for t in out_t["preact_feats"]] + [(1, 1)])
    assert preds[-1].shape == (4, 128, 1, 1)


def test_missing_teacher_weights_is_one_clear_error(tmp_path, tiny_cifar, train_cls, capsys):
    argv = ["--config", os.path.join(PAIR, "kd.yaml"), *tiny_overrides(tiny_cifar, str(tmp_path)),
            "KD.TEACHER.WEIGHTS", str(tmp_path / "missing.pth")]
    with pytest.raises(SystemExit) as e:
        train_cls.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: KD.TEACHER.WEIGHTS ") and err.endswith("missing.pth does not exist.") and "\n" not in err


def test_wrong_teacher_checkpoint_names_the_file(tmp_path, smoke_teacher):
    with pytest.raises(UserError, match="does not fit"):
        from kd_det.classification.checkpoint import load_weights
        load_weights(build_model("resnet8", NUM_CLASSES), smoke_teacher)


def test_nan_loss_stops_with_one_sentence(tmp_path, tiny_cifar, train_cls, capsys):
    """An absurd learning rate overflows the weights after the first update: the run stops naming the term."""
    argv = ["--config", os.path.join(PAIR, "student.yaml"), *tiny_overrides(tiny_cifar, str(tmp_path), epochs=2),
            "MODEL.ARCH", SMOKE_STUDENT, "SOLVER.BASE_LR", "1e30"]
    with pytest.raises(SystemExit) as e:
        train_cls.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().replace("\r", "\n").splitlines()[-1]  # after tqdm's progress bar
    assert err.startswith("error: Loss term loss_ce is ") and ": training stopped before the optimizer step; " in err
    assert not os.path.exists(tmp_path / "model_final.pth")


def test_config_file_is_the_same_as_config(train_cls):
    """train_net.py's spelling works in train_cls.py too."""
    assert train_cls.parse_args(["--config-file", "a.yaml", "--eval-only"]).config == "a.yaml"


def test_eval_only_of_a_distillation_config_needs_no_teacher(tmp_path, tiny_cifar, train_cls):
    """Scoring a student needs its weights only: the config's teacher checkpoint may be gone."""
    weights = str(tmp_path / "student.pth")
    torch.save({"model": build_model(SMOKE_STUDENT, NUM_CLASSES).state_dict()}, weights)
    result = train_cls.main(["--config", os.path.join(PAIR, "dcd_kd.yaml"), "--eval-only",
                             *tiny_overrides(tiny_cifar, str(tmp_path / "out")), "MODEL.ARCH", SMOKE_STUDENT,
                             "MODEL.WEIGHTS", weights, "KD.TEACHER.ARCH", SMOKE_TEACHER,
                             "KD.TEACHER.WEIGHTS", str(tmp_path / "gone.pth")])
    assert result["num_images"] == 32 and 0.0 <= result["top1"] <= 100.0


def test_wandb_offline_run_holds_the_epoch_record(tmp_path, tiny_cifar, train_cls, monkeypatch):
    from wandb_history import read_wandb_history

    monkeypatch.setenv("WANDB_MODE", "offline")
    argv = ["--config", os.path.join(PAIR, "student.yaml"), *tiny_overrides(tiny_cifar, str(tmp_path)),
            "MODEL.ARCH", SMOKE_STUDENT, "SOLVER.WANDB.ENABLED", "True"]
    train_cls.main(argv)
    (record,) = read_metrics(str(tmp_path))
    (logged,) = read_wandb_history(str(tmp_path))
    assert logged["_step"] == record["epoch"] == 1
    assert {k: v for k, v in logged.items() if not k.startswith("_")} == {k: v for k, v in record.items()
                                                                          if k != "epoch"}
    assert "train/loss_ce" in logged
