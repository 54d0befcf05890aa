"""tools/sweep.py: configs x seeds through the real training scripts, skip / resume on a re-run, N runs at a
time with cores / N threads each, the Slurm job function under submitit's LocalExecutor (2 tasks = one
2-process Gloo run), table-row names, and one sentence for bad input."""
import csv
import json
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DET = "configs/shapes/faster_rcnn_R_18_FPN_shapes.yaml"
CLS = "configs/classification/cifar100/resnet56-resnet20/student.yaml"
SHORT = ["SOLVER.MAX_ITER", "2", "SOLVER.CHECKPOINT_PERIOD", "1"]


def _fail(r):
    return r.stdout[-3000:] + r.stderr[-3000:]


def _info(run_dir):
    with open(os.path.join(run_dir, "run_info.json")) as f:
        return json.load(f)


def _sweep_tool():
    import importlib.util

    spec = importlib.util.spec_from_file_location("tool_sweep", os.path.join(REPO, "tools", "sweep.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rows_globs_and_bad_input(tmp_path, capsys):
    from kd_det.launch.sweep import plan

    jobs = plan(["coco2017_val:R101-R18:DKD", "cifar100:resnet56-resnet20:CKD", "configs/shapes/distill/d*.yaml"],
                [0, 2], str(tmp_path))
    assert [(os.path.relpath(j.config, REPO), j.seed, j.task) for j in jobs] == [
        ("configs/COCO-Detection/distill/R101-R18/dkd.yaml", 0, "detection"),
        ("configs/COCO-Detection/distill/R101-R18/dkd.yaml", 2, "detection"),
        ("configs/classification/cifar100/resnet56-resnet20/ckd.yaml", 0, "classification"),
        ("configs/classification/cifar100/resnet56-resnet20/ckd.yaml", 2, "classification"),
        ("configs/shapes/distill/dcd.yaml", 0, "detection"), ("configs/shapes/distill/dcd.yaml", 2, "detection"),
        ("configs/shapes/distill/dkd.yaml", 0, "detection"), ("configs/shapes/distill/dkd.yaml", 2, "detection")]
    assert jobs[1].out_dir == os.path.join(str(tmp_path), "COCO-Detection/distill/R101-R18/dkd/seed2")
    assert jobs[1].command()[-4:] == ["SEED", "2", "OUTPUT_DIR", jobs[1].out_dir] and "--resume" in jobs[1].command()
    cases = [(["--configs", "coco2017_val:R101-R18:DKX"], "did you mean coco2017_val:R101-R18:DKD"),
             (["--configs", "configs/none/*.yaml"], "--configs configs/none/*.yaml matches no .yaml file"),
             (["--configs", DET, "SEED", "3"], "Override SEED: the sweep sets SEED"),
             (["--configs", DET, "SOLVER.NOT_A_KEY", "1"], "Override SOLVER.NOT_A_KEY (not a key"),
             (["--configs", DET, "--seeds", "-1"], "seeds must be >= 0")]
    tool = _sweep_tool()
    for args, sentence in cases:
        rc = tool.main([*args[:2], "--output-dir", str(tmp_path), *args[2:], "--dry-run"])
        err = capsys.readouterr().err
        assert rc == 2 and sentence in err and err.count("\n") == 1 and err.startswith("sweep.py: error: "), (args, err)


def test_serial_detection_sweep_skips_done_and_resumes(tiny_shapes, tmp_path, run_tool, tiny_opts):
    out = str(tmp_path / "sweep")
    args = ["--configs", DET, "--seeds", "0", "1", "--output-dir", out, "--no-plots", *tiny_opts, *SHORT]
    r = run_tool("sweep.py", args, tiny_shapes)
    assert r.returncode == 0, _fail(r)
    runs = {k: os.path.join(out, "shapes/faster_rcnn_R_18_FPN_shapes", f"seed{k}") for k in (0, 1)}
    for k, d in runs.items():
        assert os.path.isfile(os.path.join(d, "evaluation.json")) and f"SEED: {k}\n" in open(f"{d}/config.yaml").read()
        info = _info(d)
        assert (info["world_size"], info["images_per_process"], info["seed"]) == (1, 2, k)
    with open(os.path.join(out, "report", "summary.csv"), newline="") as f:
        arms = list(csv.DictReader(f))
    assert [(a["method"], a["n"], a["seeds"], a["scale"]) for a in arms] == [("student", "2", "0 1", "1 x 2")]
    md = open(os.path.join(out, "report", "report.md")).read()
    assert "| faster_rcnn_R_18_FPN_shapes, seeds 0-1 |" in md  # the arm named once, its seeds compact

    # seed 1 "crashed" after its first checkpoint; seed 0 finished
    final0 = os.path.getmtime(os.path.join(runs[0], "model_final.pth"))
    for name in ("model_final.pth", "evaluation.json"):
        os.remove(os.path.join(runs[1], name))
    with open(os.path.join(runs[1], "last_checkpoint"), "w") as f:
        f.write("model_0000000.pth")
    r = run_tool("sweep.py", args, tiny_shapes)
    assert r.returncode == 0, _fail(r)
    assert "seed0: complete in" in r.stdout and "skipped" in r.stdout and "seed1: resuming in" in r.stdout
    assert os.path.getmtime(os.path.join(runs[0], "model_final.pth")) == final0  # not retrained
    log = open(os.path.join(runs[1], "log.txt")).read()
    assert "Starting training from iteration 1" in log  # resumed after the checkpoint of iteration 0
    assert os.path.isfile(os.path.join(runs[1], "evaluation.json"))
    assert [x["start_iter"] for x in _info(runs[1])["launches"]] == [0, 1]


def _tiny_cifar(root):
    """The classification tests' tiny CIFAR-format set (tests/classification/cls_helpers.py), 5 classes."""
    from kd_det.classification.data import write_cifar_pickles

    sys.path.insert(0, os.path.join(REPO, "tests", "classification"))
    from cls_helpers import NUM_CLASSES, synthetic_split

    write_cifar_pickles(root, synthetic_split(64, 0), synthetic_split(32, 1), NUM_CLASSES)
    return root


def test_local_executor_two_classification_runs_at_a_time(tmp_path, run_tool):
    data = _tiny_cifar(str(tmp_path / "cifar"))
    out = str(tmp_path / "sweep")
    r = run_tool("sweep.py", ["--configs", CLS, "--seeds", "0", "1", "--output-dir", out, "--executor", "local",
                              "--jobs", "2", "--no-plots", "DATA.ROOT", data, "DATA.NUM_CLASSES", "5",
                              "DATA.NUM_WORKERS", "0", "SOLVER.EPOCHS", "1", "SOLVER.BATCH_SIZE", "32", "TEST.BATCH_SIZE", "32"], str(tmp_path))
    assert r.returncode == 0, _fail(r)
    threads = max(1, len(os.sched_getaffinity(0)) // 2)  # run_tool's environment asks for 2 (OMP_NUM_THREADS)
    for k in (0, 1):
        info = _info(os.path.join(out, "classification/cifar100/resnet56-resnet20/student", f"seed{k}"))
        assert (info["task"], info["world_size"], info["images_per_process"], info["seed"]) == (
            "classification", 1, 32, k)
        assert info["torch_threads"] == threads
    with open(os.path.join(out, "report", "summary.csv"), newline="") as f:
        assert [(a["method"], a["n"]) for a in csv.DictReader(f)] == [("student", "2")]


def test_submitit_local_executor_runs_one_two_process_job(tiny_shapes, tmp_path, run_tool, tiny_opts):
    """The Slurm job function through submitit.LocalExecutor: 2 tasks -> ranks 0/1 of one Gloo run."""
    pytest.importorskip("submitit")
    out = str(tmp_path / "sweep")
    r = run_tool("sweep.py", ["--configs", DET, "--seeds", "3", "--output-dir", out, "--executor", "submitit-local",
                              "--num-gpus", "2", "--no-plots", *tiny_opts, "SOLVER.MAX_ITER", "1"], tiny_shapes)
    assert r.returncode == 0, _fail(r)
    run = os.path.join(out, "shapes/faster_rcnn_R_18_FPN_shapes/seed3")
    info = _info(run)
    assert (info["world_size"], info["images_per_process"], info["processes_per_machine"]) == (2, 1, 2)
    assert os.path.isfile(os.path.join(run, "log.txt.rank1"))  # the second task trained as rank 1
    assert os.path.isfile(os.path.join(run, "evaluation.json")) and "submitted as job" in r.stdout
    assert os.path.isdir(os.path.join(out, ".submitit"))


def test_slurm_request_and_missing_sbatch(tmp_path, monkeypatch):
    """What one run asks Slurm for (sbatch file written by submitit, nothing submitted); no sbatch: one sentence."""
    from kd_det.errors import ConfigError
    from kd_det.launch.sweep import _submitit_executor, plan, run_sweep

    jobs = plan([DET], [0], str(tmp_path / "sweep"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(ConfigError, match=r"--executor slurm needs Slurm's sbatch on PATH"):
        run_sweep(jobs, "slurm", processes=8, nodes=2, echo=lambda line: None)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("sbatch", "srun"):  # stand-ins so submitit accepts the machine as a Slurm host
        (bin_dir / tool).write_text("#!/bin/sh\nexit 1\n")
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    ex = _submitit_executor("slurm", str(tmp_path / "sub"), 2, 8, 8, {
        "timeout_min": 90, "cpus_per_task": 10, "partition": "gpu", "slurm_args": [("account", "proj")]})
    text = ex._executor._make_submission_file_text("python -u job.py", "uid")
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=8", "#SBATCH --gpus-per-node=8", "#SBATCH --time=90",
                 "#SBATCH --cpus-per-task=10", "#SBATCH --partition=gpu", "#SBATCH --account=proj"):
        assert line in text, text


def test_a_paper_row_swept_on_own_class_folders_is_reported_under_its_data(tmp_path, run_tool):
    """Issue 22's wrong comparison, end to end: the CIFAR-100 row run by the sweep on one's own class folders is
    reported as that data ("folders"), with no CIFAR-100 paper top-1 or delta beside it."""
    from PIL import Image

    data = tmp_path / "folders"
    rng = __import__("numpy").random.default_rng(0)
    for split, n in (("train", 8), ("val", 4)):
        for c in ("cat", "dog"):
            (data / split / c).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype="uint8")).save(data / split / c / f"{i}.png")
    out = str(tmp_path / "sweep")
    r = run_tool("sweep.py", ["--configs", CLS, "--seeds", "0", "--output-dir", out, "--no-plots",
                              "DATA.NAME", "imagenet", "DATA.ROOT", str(data), "DATA.NUM_CLASSES", "2",
                              "INPUT.SIZE", "32", "DATA.NUM_WORKERS", "0", "SOLVER.EPOCHS", "1",
                              "SOLVER.BATCH_SIZE", "8", "TEST.BATCH_SIZE", "8"], str(tmp_path))
    assert r.returncode == 0, _fail(r)
    with open(os.path.join(out, "report", "report.md")) as f:
        md = f.read()
    assert "## classification: folders" in md and "classification: cifar100" not in md
    assert "| Paper" not in md  # no paper column, so no delta either
    assert "No paper delta: the papers report on cifar100, coco2017_val, imagenet, not on folders." in md
