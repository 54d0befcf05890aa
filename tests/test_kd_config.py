"""One KD schema for both tasks (kd_det/config/schema.py): loss specs and their errors, one loss under two tags,
per-entry command-line overrides, the old detection form, method labels, and tools/migrate_configs.py."""
import os
import subprocess
import sys
import warnings

import pytest
import torch

from kd_det.config.migration import migrate_text, upgrade_dict
from kd_det.errors import ConfigError
from kd_det.config.schema import loss_specs, method_label

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DKD = os.path.join(REPO, "configs/shapes/distill/dkd.yaml")
STUDENT = os.path.join(REPO, "configs/shapes/faster_rcnn_R_18_FPN_shapes.yaml")
CLS_DKD = os.path.join(REPO, "configs/classification/cifar100/resnet32x4-resnet8x4/dkd.yaml")
CLS_STUDENT = os.path.join(REPO, "configs/classification/cifar100/resnet32x4-resnet8x4/student.yaml")


def _det(path, opts=()):
    from kd_det.config.detection import load_config

    return load_config(path, list(opts))


def _cls(path, opts=()):
    from kd_det.config.classification import load_cls_config

    return load_cls_config(path, list(opts))


# -- the spec schema ---------------------------------------------------------------------------------------------

def test_specs_are_normalised():
    (spec,) = loss_specs([{"name": "DKD", "weight": 2, "params": {"beta": 0.5}}])
    assert spec == {"name": "dkd", "weight": 2.0, "params": {"beta": 0.5}, "inputs": {}, "tag": "dkd", "start_iter": 0}


@pytest.mark.parametrize("specs, message", [
    ("dkd", r"^KD\.LOSSES is 'dkd'; it must be a list of loss specs, e.g\. \[\{name: dkd"),
    (["dkd"], r"^KD\.LOSSES entry 0 is 'dkd'; each entry must be a mapping with 'name'"),
    ([{"weight": 1.0}], r"^KD\.LOSSES entry 0 is \{'weight': 1\.0\}; each entry must be a mapping with 'name'"),
    ([{"name": "dkd", "wieght": 1.0}], r"^KD\.LOSSES: dkd: unknown spec key 'wieght'; a spec takes name, weight, "
                                       r"params, inputs, tag, start_iter\.$"),
    ([{"name": "dkdd"}], r"^KD\.LOSSES: Unknown loss 'dkdd'; known losses: ckd, crd, (\w+, )*dkd, "),
    ([{"name": "kd", "weight": -1}], r"^KD\.LOSSES: kd: spec key 'weight' must be a finite number >= 0, got -1\.$"),
    ([{"name": "kd", "weight": "2"}], r"^KD\.LOSSES: kd: spec key 'weight' must be a finite number >= 0, got '2'\.$"),
    ([{"name": "kd", "weight": float("nan")}], r"spec key 'weight' must be a finite number >= 0, got nan\.$"),
    ([{"name": "kd", "start_iter": 2.5}], r"^KD\.LOSSES: kd: spec key 'start_iter' must be an int >= 0 .*got 2\.5\.$"),
    ([{"name": "kd", "params": [1]}], r"^KD\.LOSSES: kd: spec key 'params' must be a mapping, .*got \[1\]\.$"),
    ([{"name": "kd", "inputs": {"emb_s": "x"}}], r"^KD\.LOSSES: kd: spec key 'inputs' remaps \['emb_s'\], which the "
                                                 r"loss does not take; it takes logits_s, logits_t\.$"),
    ([{"name": "kd", "tag": "kd.t4"}], r"^KD\.LOSSES: kd\.t4: spec key 'tag' must be one word of letters"),
    ([{"name": "kd"}, {"name": "kd", "params": {"temperature": 4.0}}],
     r"^KD\.LOSSES entries 0 and 1 share the tag 'kd'; give one of them its own tag \(e\.g\. tag: kd_2\)"),
])
def test_bad_specs_are_one_sentence(specs, message):
    with pytest.raises(ConfigError, match=message):
        loss_specs(specs)


def test_start_iter_is_detection_only():
    assert loss_specs([{"name": "kd", "start_iter": 5}])[0]["start_iter"] == 5
    with pytest.raises(ConfigError, match=r"^KD\.LOSSES entry 0 \('kd'\) sets start_iter 5, which classification"):
        loss_specs([{"name": "kd", "start_iter": 5}], "classification")


def test_one_loss_twice_under_two_tags_logs_two_terms():
    """Both tasks build DistillLoss from loss_specs: two kd entries give loss_kd and loss_kd_t4."""
    from kd_det.losses import DistillLoss

    specs = loss_specs([{"name": "kd"}, {"name": "kd", "tag": "kd_t4", "weight": 0.5, "params": {"temperature": 4.0}}])
    loss = DistillLoss(specs, {"logits_s": 5, "logits_t": 5})
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g)
    out = loss(logits_s=s, logits_t=t)
    assert set(out) == {"loss_kd", "loss_kd_t4"} and out["loss_kd"] != out["loss_kd_t4"]
    assert method_label(specs) == "KD+KD_T4"


def test_one_loss_twice_in_a_detection_step(teacher_files):
    from detectron2.modeling import build_model
    from detectron2.structures import Boxes, Instances
    from detectron2.utils.events import EventStorage

    cfg = _det(STUDENT, ["MODEL.META_ARCHITECTURE", "DistillRCNN", "KD.TEACHER.CONFIG_FILE", teacher_files[0],
                         "KD.TEACHER.WEIGHTS", teacher_files[1], "MODEL.FPN.OUT_CHANNELS", "32",
                         "MODEL.ROI_BOX_HEAD.FC_DIM", "64", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "16",
                         "KD.LOSSES", "[{'name': 'kd'}, {'name': 'kd', 'tag': 'kd_t4', "
                                      "'params': {'temperature': 4.0}}]"])
    inst = Instances((128, 160))
    inst.gt_boxes, inst.gt_classes = Boxes(torch.tensor([[10.0, 12.0, 60.0, 70.0]])), torch.tensor([1])
    with EventStorage():
        out = build_model(cfg).train()([{"image": torch.rand(3, 128, 160) * 255, "instances": inst}])
    assert {"loss_kd", "loss_kd_t4"} <= set(out) and torch.isfinite(out["loss_kd_t4"])


def test_one_loss_twice_in_classification():
    from kd_det.classification.distiller import build_distill_loss
    from kd_det.classification.models import build_model

    cfg = _cls(CLS_DKD, ["KD.LOSSES", "[{'name': 'dkd'}, {'name': 'dkd', 'tag': 'dkd_b8', 'params': {'beta': 8.0}}]"])
    with torch.device("meta"):
        student, teacher = build_model("resnet8", 10), build_model("resnet20", 10)
    loss = build_distill_loss(cfg.KD.LOSSES, student, teacher, num_samples=8, num_classes=10)
    assert list(loss.losses) == ["dkd", "dkd_b8"] and cfg.KD.LABEL.METHOD == "DKD+DKD_B8"


# -- one entry changed from the command line ---------------------------------------------------------------------

@pytest.mark.parametrize("load, path", [(_det, DKD), (_cls, CLS_DKD)], ids=["detection", "classification"])
def test_override_one_entry(load, path):
    base = load(path).KD.LOSSES[0]
    cfg = load(path, ["KD.LOSSES.dkd.weight", "2.0", "KD.LOSSES.dkd.params.beta", "0.5",
                      "KD.LOSSES.dkd.inputs.logits_s", "logits_s"])
    (spec,) = cfg.KD.LOSSES
    assert spec["weight"] == 2.0 and spec["inputs"] == {"logits_s": "logits_s"}
    assert spec["params"] == dict(base["params"], beta=0.5)  # the other params stay
    with pytest.raises(ConfigError, match=r"^Override KD\.LOSSES\.dcd\.weight: no KD\.LOSSES entry has the tag 'dcd'; "
                                          r"the tags are dkd\.$"):
        load(path, ["KD.LOSSES.dcd.weight", "2.0"])
    with pytest.raises(ConfigError, match=r"^Override KD\.LOSSES\.dkd\.beta names no field of a loss entry"):
        load(path, ["KD.LOSSES.dkd.beta", "2.0"])


def test_override_start_iter_and_whole_list():
    cfg = _det(DKD, ["KD.LOSSES.dkd.start_iter", "50"])
    assert cfg.KD.LOSSES[0]["start_iter"] == 50
    cfg = _det(DKD, ["KD.LOSSES", "[{'name': 'kd'}, {'name': 'fitnet'}]", "KD.LOSSES.fitnet.weight", "0.5"])
    assert [(s["tag"], s["weight"]) for s in cfg.KD.LOSSES] == [("kd", 1.0), ("fitnet", 0.5)]
    with pytest.raises(ConfigError, match="which classification training does not support"):
        _cls(CLS_DKD, ["KD.LOSSES.dkd.start_iter", "50"])


def test_sweep_plans_with_an_entry_override(tmp_path):
    from kd_det.launch.sweep import plan

    jobs = plan([DKD, CLS_DKD], [0], str(tmp_path), ["KD.LOSSES.dkd.weight", "2.0"])
    assert [j.task for j in jobs] == ["detection", "classification"]
    assert all(j.command()[-6:-4] == ["KD.LOSSES.dkd.weight", "2.0"] for j in jobs)
    with pytest.raises(ConfigError, match=r"no KD\.LOSSES entry has the tag 'kd'; the tags are dkd"):
        plan([DKD], [0], str(tmp_path), ["KD.LOSSES.kd.weight", "2.0"])


# -- the old detection form --------------------------------------------------------------------------------------

OLD = """_BASE_: "{base}"
KD:
  LOSSES: ["dcd", "kd"]
  LOSS_WEIGHTS: [1.0, 0.5]  # beta 1, lambda .5
  LOSS_START_ITERS: [0, 10]
  PARAMS:
    dcd: {{alpha: 0.5, proj_dim: 64}}  # DCD source
  INPUTS:
    dcd: {{emb_s: logits_s, emb_t: logits_t}}
"""
NEW = """_BASE_: "{base}"
KD:
  LOSSES:
    - {{name: dcd, weight: 1.0, params: {{alpha: 0.5, proj_dim: 64}}, inputs: {{emb_s: logits_s, emb_t: logits_t}}}}
    - {{name: kd, weight: 0.5, start_iter: 10}}
"""


def test_old_form_is_refused_with_the_migration_command(tmp_path):
    """The old detection form was removed in 0.2 (no release read it): files and overrides in it are refused with
    one sentence naming tools/migrate_configs.py, which turns the old file into the new one."""
    from kd_det.config.migration import migrate_text

    (tmp_path / "old.yaml").write_text(OLD.format(base=STUDENT))
    with pytest.raises(ConfigError, match=r"old\.yaml: KD\.LOSS_WEIGHTS belongs to the old detection form of "
                                          r"KD\.LOSSES, removed in kd_det 0\.2; .*python tools/migrate_configs\.py"):
        _det(str(tmp_path / "old.yaml"))
    for opts in (["KD.LOSSES", "['dcd', 'kd']"], ["KD.PARAMS.dcd.alpha", "0.5"], ["KD.LOSS_WEIGHTS", "[1.0]"]):
        with pytest.raises(ConfigError, match=r"old detection form.*removed in kd_det 0\.2.*tools/migrate_configs"):
            _det(STUDENT, opts)
    (tmp_path / "new.yaml").write_text(NEW.format(base=STUDENT))
    (tmp_path / "migrated.yaml").write_text(migrate_text(OLD.format(base=STUDENT)))
    new, migrated = _det(str(tmp_path / "new.yaml")), _det(str(tmp_path / "migrated.yaml"))
    assert migrated.KD.LOSSES == new.KD.LOSSES and migrated.KD.LABEL.METHOD == new.KD.LABEL.METHOD == "DCD+KD"
    assert "LOSS_WEIGHTS" not in new.KD and "PARAMS" not in new.KD  # no placeholder keys in the live defaults


# -- method labels -----------------------------------------------------------------------------------------------

def test_method_label_follows_losses_set_over_a_student_config(tmp_path):
    """A DKD file on top of the student config (METHOD: student) is labelled DKD, not a second "student"."""
    path = tmp_path / "dkd.yaml"
    path.write_text(f'_BASE_: "{STUDENT}"\nKD:\n  LOSSES:\n    - {{name: dkd, params: {{beta: 0.25}}}}\n')
    assert _det(STUDENT).KD.LABEL.METHOD == "student"
    assert _det(str(path)).KD.LABEL.METHOD == "DKD"
    assert _det(STUDENT, ["KD.LOSSES", "[{'name': 'dcd'}, {'name': 'kd'}]"]).KD.LABEL.METHOD == "DCD+KD"
    assert _det(DKD).KD.LABEL.METHOD == "DKD"  # the file sets both: its own label stays
    cls = tmp_path / "cls_dkd.yaml"
    cls.write_text(f"_BASE_: {CLS_STUDENT}\nKD:\n  TEACHER: {{ARCH: resnet32x4, WEIGHTS: t.pth}}\n  LOSSES:\n"
                   "    - {name: dkd}\n    - {name: reviewkd}\n")
    assert _cls(str(cls)).KD.LABEL.METHOD == "DKD+ReviewKD"


def test_reference_label_with_losses_is_refused(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(f'_BASE_: "{STUDENT}"\nKD:\n  LOSSES:\n    - {{name: dkd}}\n  LABEL: {{METHOD: student}}\n')
    with pytest.raises(ConfigError, match=rf"^KD\.LABEL\.METHOD is 'student' \(set by {path}\) but KD\.LOSSES "
                                          r"configures dkd; a distilled run is labelled by its method: set "
                                          r"KD\.LABEL\.METHOD 'DKD' or leave it unset where KD\.LOSSES is set\.$"):
        _det(str(path))
    with pytest.raises(ConfigError, match=r"^KD\.LABEL\.METHOD is 'teacher' \(set by the command line\)"):
        _cls(CLS_DKD, ["KD.LABEL.METHOD", "teacher"])


def test_old_run_folder_labels_are_read_from_the_one_place():
    old = {"ROW": {"DATASET": "cifar100", "TEACHER": "resnet32x4", "STUDENT": "resnet8x4", "METHOD": "KD",
                   "PAPER_TOP1": 73.33}, "TEACHER": {"ARCH": "resnet32x4", "WEIGHTS": "t.pth"},
           "SOLVER": {"AMP": True}, "KD": {"CE_WEIGHT": 0.1, "LOSSES": [{"name": "kd"}]}, "DATA": {"NAME": "cifar100"}}
    new = upgrade_dict(old)
    assert new["KD"]["LABEL"]["METHOD"] == "KD" and new["KD"]["TEACHER"] == {"ARCH": "resnet32x4", "WEIGHTS": "t.pth"}
    assert "ROW" not in new and "TEACHER" not in new and new["SOLVER"]["AMP"]["ENABLED"] is True
    from kd_det.evaluation.runs import config_labels, config_task

    assert config_task(new) == "classification"
    assert config_labels(new, "classification") == ("cifar100", "resnet32x4", "resnet8x4", "KD", False)


# -- tools/migrate_configs.py ------------------------------------------------------------------------------------

OLD_CLS = """# Reproduces a row (source comment).
_BASE_: ../Base-CIFAR100.yaml
ROW:
  DATASET: cifar100
  METHOD: KD  # the row's method
MODEL:
  ARCH: resnet8x4
TEACHER:
  # the teacher checkpoint
  ARCH: resnet32x4
  WEIGHTS: t.pth
SOLVER:
  AMP: True  # mixed precision
KD:
  LOSSES:
    - {name: kd, weight: 0.9, params: {temperature: 4.0}}  # CRD's setting
OUTPUT_DIR: out
"""


def _migrate(*args):
    return subprocess.run([sys.executable, os.path.join(REPO, "tools", "migrate_configs.py"), *args],
                          capture_output=True, text=True, cwd=REPO)


def _comments(text):
    return [line.split("#", 1)[1].strip() for line in text.splitlines() if "#" in line]


@pytest.mark.slow  # tools/migrate_configs.py in a fresh interpreter
def test_migrate_configs_rewrites_keeps_comments_and_is_idempotent(tmp_path):
    det, cls = tmp_path / "det.yaml", tmp_path / "cls.yaml"
    det.write_text(OLD.format(base=STUDENT))
    cls.write_text(OLD_CLS)
    r = _migrate("--check", str(tmp_path))
    assert r.returncode == 1 and "2 of 2 file(s) in the old form" in r.stdout
    assert det.read_text() == OLD.format(base=STUDENT)  # --check writes nothing
    assert _migrate(str(tmp_path)).returncode == 0
    new_det, new_cls = det.read_text(), cls.read_text()
    assert "  LOSSES:\n    - {name: dcd, weight: 1.0, params: {alpha: 0.5, proj_dim: 64}, inputs: {emb_s: logits_s, " \
           "emb_t: logits_t}}  # DCD source\n    - {name: kd, weight: 0.5, start_iter: 10}\n" in new_det
    assert "  # weights: beta 1, lambda .5\n" in new_det and "LOSS_WEIGHTS" not in new_det
    assert "KD:\n  TEACHER:\n    # the teacher checkpoint\n    ARCH: resnet32x4\n" in new_cls
    assert "  LABEL:\n    DATASET: cifar100\n    METHOD: KD  # the row's method\n" in new_cls
    assert "  AMP:\n    ENABLED: True  # mixed precision\n" in new_cls and "ROW" not in new_cls
    for old, new in ((OLD.format(base=STUDENT), new_det), (OLD_CLS, new_cls)):
        assert all(any(c in n for n in _comments(new)) for c in _comments(old))  # every comment kept
        assert migrate_text(new) == new
    assert _migrate(str(tmp_path)).stdout.startswith("0 of 2 file(s) rewritten")
    assert _migrate("--check", str(tmp_path)).returncode == 0
    with warnings.catch_warnings(record=True) as seen:  # the rewritten file loads without the old form's warning
        warnings.simplefilter("always")
        assert [s["tag"] for s in _det(str(det)).KD.LOSSES] == ["dcd", "kd"]
    assert not [w for w in seen if "old detection form" in str(w.message)]


@pytest.mark.slow  # tools/migrate_configs.py in a fresh interpreter
def test_every_config_is_in_the_new_form():
    r = _migrate("--check")
    assert r.returncode == 0, r.stdout + r.stderr
