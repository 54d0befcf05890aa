"""End to end through the real command line: train a few iterations, evaluate, --eval-only."""
import json
import math
import os

import pytest

import kd_det  # noqa: F401  (applies kd_det.compat before the teacher_files fixture imports Detectron2)

CFG = "configs/shapes/faster_rcnn_R_18_FPN_shapes.yaml"


@pytest.fixture(scope="module")
def trained(tiny_shapes, tmp_path_factory, run_tool, tiny_opts):
    out = str(tmp_path_factory.mktemp("train"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_MODE", "offline")  # W&B writes its run under OUTPUT_DIR/wandb, nothing is sent
        r = run_tool("train_net.py", ["--config-file", CFG, "SOLVER.MAX_ITER", "6", "SOLVER.CHECKPOINT_PERIOD", "3",
                                      "OUTPUT_DIR", out, "SOLVER.WANDB.ENABLED", "True", *tiny_opts], tiny_shapes)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return out


def test_training_writes_outputs(trained):
    files = os.listdir(trained)
    for name in ("model_final.pth", "model_0000002.pth", "last_checkpoint", "metrics.json", "config.yaml"):
        assert name in files, files
    assert any(f.startswith("events.out.tfevents") for f in files)
    with open(os.path.join(trained, "last_checkpoint")) as f:
        assert f.read().strip() == "model_final.pth"
    with open(os.path.join(trained, "metrics.json")) as f:
        rows = [json.loads(line) for line in f]
    losses = [r["total_loss"] for r in rows if "total_loss" in r]
    assert losses and all(math.isfinite(v) for v in losses)
    assert any("bbox/AP" in r for r in rows)  # the final evaluation reached metrics.json


def test_wandb_offline_run_holds_what_metrics_json_holds(trained):
    from wandb_history import read_wandb_history

    with open(os.path.join(trained, "metrics.json")) as f:
        rows = [json.loads(line) for line in f]
    history = {row["_step"]: row for row in read_wandb_history(trained)}
    assert sorted(history) == [row["iteration"] for row in rows]
    for row in rows:
        logged = history[row["iteration"]]
        assert {k: v for k, v in row.items() if k != "iteration"} == {k: v for k, v in logged.items()
                                                                      if not k.startswith("_")}
    assert any("loss_cls" in row for row in rows)


def test_wandb_without_the_package_is_refused_at_start(monkeypatch):
    import sys

    from kd_det.config.detection import load_config
    from kd_det.core.wandb_log import require_wandb
    from kd_det.errors import ConfigError

    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(ConfigError, match=r"^SOLVER.WANDB.ENABLED True needs the wandb package, which is not "
                                          r"installed; install kd_det's wandb extra \(pip install -e \"\.\[wandb\]\"\)"):
        require_wandb(load_config(CFG, ["SOLVER.WANDB.ENABLED", "True"]))


def test_evaluation_is_finite(trained):
    with open(os.path.join(trained, "evaluation.json")) as f:
        ev = json.load(f)
    bbox = ev["results"]["shapes_val"]["bbox"]
    assert ev["mode"] == "train" and ev["iteration"] == 6  # final evaluation, after MAX_ITER iterations
    for k in ("AP", "AP50", "AP75"):
        assert math.isfinite(bbox[k]) and 0 <= bbox[k] <= 100
    with open(os.path.join(trained, "inference", "shapes_val", "coco_instances_results.json")) as f:
        assert len(json.load(f)) > 0  # SCORE_THRESH_TEST 0: the model does output boxes


def test_eval_only_reproduces(trained, tiny_shapes, tmp_path, run_tool, tiny_opts):
    r = run_tool("train_net.py", ["--config-file", CFG, "--eval-only", "MODEL.WEIGHTS",
                                  os.path.join(trained, "model_final.pth"), "OUTPUT_DIR", str(tmp_path), *tiny_opts],
                 tiny_shapes)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    with open(os.path.join(tmp_path, "evaluation.json")) as f:
        ev = json.load(f)
    with open(os.path.join(trained, "evaluation.json")) as f:
        ref = json.load(f)
    assert ev["mode"] == "eval-only"
    assert ev["results"] == ref["results"]

    def dets(d):
        with open(os.path.join(d, "inference", "shapes_val", "coco_instances_results.json")) as f:
            return sorted((r["image_id"], r["category_id"], round(r["score"], 5)) for r in json.load(f))

    assert dets(str(tmp_path)) == dets(trained)


def test_resume_continues_from_last_checkpoint(trained, tiny_shapes, tmp_path, run_tool, tiny_opts):
    import shutil

    out = str(tmp_path / "run")
    shutil.copytree(trained, out)
    r = run_tool("train_net.py", ["--config-file", CFG, "--resume", "SOLVER.MAX_ITER", "8", "OUTPUT_DIR", out,
                                  *tiny_opts], tiny_shapes)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    with open(os.path.join(out, "log.txt")) as f:
        log = f.read()
    # last_checkpoint names model_final.pth (iteration 5): training continues after it, not from 0
    assert log.count("Starting training from iteration") == 2 and "Starting training from iteration 6" in log
    with open(os.path.join(out, "metrics.json")) as f:
        iters = [json.loads(line)["iteration"] for line in f if "total_loss" in line]
    assert iters[-1] == 7


def test_two_gloo_processes_on_cpu(tiny_shapes, tmp_path, run_tool, tiny_opts, teacher_files):
    """--num-gpus 2 without GPUs: two real torch.distributed processes (Gloo), DDP, one checkpoint.

    The student is distilled with ReviewKD switched off (weight 0): its fusion modules still get
    (zero) gradients, so DDP raises no "parameters that were not used" error.
    """
    cfg_file, weights = teacher_files
    r = run_tool("train_net.py", ["--config-file", CFG, "--num-gpus", "2", "--dist-url", "auto",
                                  "SOLVER.MAX_ITER", "2", "OUTPUT_DIR", str(tmp_path), *tiny_opts,
                                  "DATASETS.TEST", "()", "MODEL.META_ARCHITECTURE", "DistillRCNN",
                                  "KD.TEACHER.CONFIG_FILE", cfg_file, "KD.TEACHER.WEIGHTS", weights,
                                  "KD.LOSSES", "[{'name': 'kd'}, {'name': 'reviewkd', 'weight': 0.0}]"], tiny_shapes)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    with open(os.path.join(tmp_path, "log.txt")) as f:
        log = f.read()
    assert "World size: 2" in log
    assert os.path.isfile(os.path.join(tmp_path, "log.txt.rank1"))  # the second process ran and logged
    assert os.path.isfile(os.path.join(tmp_path, "model_final.pth"))


def test_missing_dataset_is_one_sentence(tmp_path, run_tool):
    r = run_tool("train_net.py", ["--config-file", CFG, "DATASETS.TRAIN", '("coco_2017_train",)',
                                  "OUTPUT_DIR", str(tmp_path)], str(tmp_path / "nowhere"))
    assert r.returncode == 2
    err = r.stderr.strip().splitlines()
    assert len(err) == 1, r.stderr
    assert "coco_2017_train" in err[0] and "DETECTRON2_DATASETS" in err[0] and "does not exist" in err[0]


def test_unknown_override_is_one_sentence(tmp_path, tiny_shapes, run_tool):
    r = run_tool("train_net.py", ["--config-file", CFG, "SOLVER.NOT_A_KEY", "1"], tiny_shapes)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0
    assert "SOLVER.NOT_A_KEY" in r.stderr


def test_eval_only_of_a_distillation_config_needs_no_teacher(teacher_files, tiny_shapes, tmp_path, run_tool, tiny_opts):
    """Scoring the student of a DistillRCNN checkpoint builds the student alone: the teacher's weights may be gone."""
    import torch
    from detectron2.modeling import build_model

    from kd_det.detection.engine.checkpoint import KDCheckpointer
    from kd_det.config.detection import load_config

    cfg_file, weights = teacher_files
    opts = ["MODEL.META_ARCHITECTURE", "DistillRCNN", "KD.TEACHER.CONFIG_FILE", cfg_file,
            "KD.LOSSES", "[{'name': 'kd'}, {'name': 'fitnet'}]", *tiny_opts]
    torch.manual_seed(0)
    model = build_model(load_config(CFG, [*opts, "KD.TEACHER.WEIGHTS", weights]))
    assert any(k.startswith("distill.") for k in model.state_dict())  # FitNet's adapters
    KDCheckpointer(model, save_dir=str(tmp_path)).save("distilled")  # student, distill.*, the teacher's identity
    out = tmp_path / "eval"
    r = run_tool("train_net.py", ["--config-file", CFG, "--eval-only", "MODEL.WEIGHTS", str(tmp_path / "distilled.pth"),
                                  "OUTPUT_DIR", str(out), *opts, "KD.TEACHER.WEIGHTS", str(tmp_path / "gone.pth")],
                 tiny_shapes)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    with open(out / "evaluation.json") as f:
        ev = json.load(f)
    assert ev["mode"] == "eval-only" and "shapes_val" in ev["results"]
    with open(out / "log.txt") as f:
        log = f.read()
    assert "not found in the checkpoint" not in log  # every student tensor was loaded
    assert "not used by the model" not in log  # the distillation tensors were left out quietly


def test_eval_teacher_runs_it_as_distillation_does(teacher_files, tiny_shapes, tmp_path, run_tool, tiny_opts):
    """--eval-teacher scores the teacher in KD.TEACHER.PRECISION / CHANNELS_LAST and records both in its config."""
    import yaml

    cfg_file, weights = teacher_files
    out = tmp_path / "t"
    r = run_tool("train_net.py", ["--config-file", CFG, "--eval-teacher", "MODEL.META_ARCHITECTURE", "DistillRCNN",
                                  "KD.TEACHER.CONFIG_FILE", cfg_file, "KD.TEACHER.WEIGHTS", weights,
                                  "KD.LOSSES", "[{'name': 'kd'}]", "KD.TEACHER.PRECISION", "bfloat16",
                                  "KD.TEACHER.CHANNELS_LAST", "True", "OUTPUT_DIR", str(out), *tiny_opts], tiny_shapes)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    with open(out / "teacher_eval" / "config.yaml") as f:
        teacher = yaml.safe_load(f)["KD"]["TEACHER"]
    assert (teacher["PRECISION"], teacher["CHANNELS_LAST"]) == ("bfloat16", True)
    with open(out / "teacher_eval" / "evaluation.json") as f:
        assert "shapes_val" in json.load(f)["results"]
