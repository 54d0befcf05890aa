"""CUDA checks: AMP (float16 + GradScaler) distillation through train_net, float32 losses under
float16 autocast, and --num-gpus above the GPU count. Skipped on machines without a GPU."""
import json
import math
import os

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

CFG = "configs/shapes/faster_rcnn_R_18_FPN_shapes.yaml"
# configs/shapes/distill/dcd.yaml's DCD and KD entries plus ReviewKD, weight 1 each
DCD_KD_REVIEWKD = str([{"name": "dcd", "params": {"alpha": 0.5, "proj_dim": 128, "tau_max": 10.0,
                                                   "same_object": "exclude"}},
                       {"name": "kd", "params": {"temperature": 1.0}}, {"name": "reviewkd"}])


def test_amp_distillation_trains_and_resumes_on_cuda(tiny_shapes, tmp_path, run_tool, tiny_opts, teacher_files):
    cfg_file, weights = teacher_files
    out = str(tmp_path)
    common = ["--config-file", "configs/shapes/distill/dcd.yaml", "OUTPUT_DIR", out, *tiny_opts,
              "MODEL.DEVICE", "cuda", "SOLVER.AMP.ENABLED", "True", "KD.TEACHER.CONFIG_FILE", cfg_file,
              "KD.TEACHER.WEIGHTS", weights, "KD.LOSSES", DCD_KD_REVIEWKD,
              "SOLVER.LOG_PERIOD", "1", "SOLVER.CHECKPOINT_PERIOD", "3", "DATASETS.TEST", "()"]
    r = run_tool("train_net.py", [*common, "SOLVER.MAX_ITER", "6"], tiny_shapes)
    assert r.returncode == 0, r.stderr[-3000:]
    with open(os.path.join(out, "metrics.json")) as f:
        rows = [json.loads(line) for line in f if "total_loss" in line]
    assert [r["iteration"] for r in rows] == list(range(6))
    assert all(math.isfinite(r["loss_dcd"]) and math.isfinite(r["loss_reviewkd"]) for r in rows)
    ckpt = torch.load(os.path.join(out, "model_0000002.pth"), weights_only=True)
    assert "grad_scaler" in ckpt["trainer"]["_trainer"] and "cuda" in ckpt["trainer"]["_trainer"]["rng"]
    r = run_tool("train_net.py", ["--resume", *common, "SOLVER.MAX_ITER", "8"], tiny_shapes)
    assert r.returncode == 0, r.stderr[-3000:]
    with open(os.path.join(out, "log.txt")) as f:
        assert "Starting training from iteration 6" in f.read()


def test_bfloat16_amp_on_cuda(tiny_shapes, tmp_path, run_tool, tiny_opts):
    r = run_tool("train_net.py", ["--config-file", CFG, "OUTPUT_DIR", str(tmp_path), *tiny_opts, "MODEL.DEVICE", "cuda",
                                  "SOLVER.AMP.ENABLED", "True", "SOLVER.AMP.PRECISION", "bfloat16",
                                  "SOLVER.MAX_ITER", "3", "DATASETS.TEST", "()"], tiny_shapes)
    assert r.returncode == 0, r.stderr[-3000:]
    ckpt = torch.load(os.path.join(str(tmp_path), "model_final.pth"), weights_only=True)
    assert "grad_scaler" not in ckpt["trainer"]["_trainer"]  # bfloat16 needs no loss scaling


def test_float32_losses_under_float16_autocast(teacher_files):
    from detectron2.modeling import build_model
    from detectron2.structures import Boxes, Instances
    from detectron2.utils.events import EventStorage

    from kd_det.config.detection import load_config

    cfg_file, weights = teacher_files
    cfg = load_config(CFG, ["MODEL.DEVICE", "cuda", "MODEL.META_ARCHITECTURE", "DistillRCNN",
                            "KD.TEACHER.CONFIG_FILE", cfg_file, "KD.TEACHER.WEIGHTS", weights,
                            "KD.LOSSES", str([{"name": n} for n in ("kd", "dkd", "ckd", "reviewkd")])])
    model = build_model(cfg).train()
    inst = Instances((128, 160))
    inst.gt_boxes = Boxes(torch.tensor([[10.0, 12.0, 60.0, 70.0]]))
    inst.gt_classes = torch.tensor([1])
    batch = [{"image": torch.randint(0, 255, (3, 128, 160)).float(), "instances": inst} for _ in range(2)]
    seen = {}
    model.roi_heads.box_predictor.register_forward_hook(lambda m, i, o: seen.update(dtype=o[0].dtype) and None)
    with EventStorage(), torch.autocast("cuda", dtype=torch.float16):
        out = model(batch)
    assert seen["dtype"] == torch.float16
    for name in ("kd", "dkd", "ckd", "reviewkd"):
        assert out[f"loss_{name}"].dtype == torch.float32 and torch.isfinite(out[f"loss_{name}"])


def test_num_gpus_above_the_count_is_one_sentence(tiny_shapes, tmp_path, run_tool):
    n = torch.cuda.device_count() + 1
    r = run_tool("train_net.py", ["--config-file", CFG, "--num-gpus", str(n), "OUTPUT_DIR", str(tmp_path)], tiny_shapes)
    assert r.returncode == 2
    assert r.stderr.strip() == (f"train_net.py: error: --num-gpus {n} is larger than the {n - 1} GPUs this "
                                "machine has.")
