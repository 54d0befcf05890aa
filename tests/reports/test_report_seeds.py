"""Seeds in the report: runs equal but for SEED / OUTPUT_DIR are pooled (mean ± std, n), the gain is paired
by seed with a 95% t interval and a verdict, checked against scipy's own paired t-test; one-seed runs keep
today's row marked n = 1; plots get error bars; run_info.json gives the processes x images column."""
import csv
import json
import os
import random

import numpy as np
import pytest
from fake_runs import cls_run, det_run, run_info
from PIL import Image
from scipy import stats

from kd_det.evaluation.report import build_report
from kd_det.evaluation.runs import read_run

SEEDS = (0, 1, 2)
RNG = np.random.default_rng(5)
BASE = dict(zip(SEEDS, 33.0 + RNG.normal(0, 0.6, len(SEEDS))))  # the seed moves every arm alike
# per-seed effect of each method over the baseline: clearly positive, clearly negative, around zero
EFFECT = {"DCD": [1.1, 0.8, 1.3], "KD": [-0.9, -1.2, -0.7], "DKD": [0.6, -0.5, 0.3]}


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    dirs = []
    for k in SEEDS:
        dirs.append(det_run(str(root / "student" / f"seed{k}"), "student", "R101", "R18", BASE[k], seed=k,
                            scale=(4, 2)))
        for method, eff in EFFECT.items():
            dirs.append(det_run(str(root / method.lower() / f"seed{k}"), method, "R101", "R18", BASE[k] + eff[k],
                                seed=k, kd_losses=(f"loss_{method.lower()}",), scale=(4, 2)))
    # same label, another config (one more loss term): its own arm, never pooled with "DCD" above
    dirs.append(det_run(str(root / "dcd_rkd" / "seed0"), "DCD", "R101", "R18", 40.0, seed=0,
                        kd_losses=("loss_dcd", "loss_reviewkd")))
    dirs.append(det_run(str(root / "teacher"), "teacher", "R101", "", 42.5))
    random.Random(0).shuffle(dirs)  # pairing must follow the seeds, not the order of the arguments
    out = str(tmp_path_factory.mktemp("report"))
    return build_report(dirs, out, plots=False), out


def arm(result, method, n=None):
    found = [a for a in result["arms"] if a["method"] == method and (n is None or a["n"] == n)]
    assert len(found) == 1, [(a["method"], a["label"]) for a in result["arms"]]
    return found[0]


def test_arms_pool_seeds_only(seeded):
    result, _ = seeded
    assert sorted((a["method"], a["n"]) for a in result["arms"]) == [
        ("DCD", 1), ("DCD", 3), ("DKD", 3), ("KD", 3), ("student", 3), ("teacher", 1)]
    dcd = arm(result, "DCD", 3)
    assert dcd["seeds"] == list(SEEDS) and "dcd_rkd" not in dcd["label"]
    assert dcd["label"].count("seed") == 1 and dcd["label"].endswith(f"seeds {SEEDS[0]}-{SEEDS[-1]}"), dcd["label"]


@pytest.mark.parametrize("method", sorted(EFFECT))
def test_mean_std_ci_match_scipy(seeded, method):
    result, _ = seeded
    a, base = arm(result, method, 3), arm(result, "student")
    ours = np.array([BASE[k] + EFFECT[method][k] for k in SEEDS])
    ref = np.array([BASE[k] for k in SEEDS])
    assert a["stats"]["AP"]["mean"] == pytest.approx(ours.mean())
    assert a["stats"]["AP"]["std"] == pytest.approx(ours.std(ddof=1))
    assert base["stats"]["AP"]["std"] == pytest.approx(ref.std(ddof=1)) and base["verdict"] == "baseline"
    test = stats.ttest_rel(ours, ref)  # scipy's paired t-test, computed independently
    ci = test.confidence_interval(0.95)
    g = a["gain"]["AP"]
    assert g["paired"] and g["n"] == 3
    assert g["mean"] == pytest.approx((ours - ref).mean())
    assert (g["ci_low"], g["ci_high"]) == (pytest.approx(ci.low), pytest.approx(ci.high))
    expected = "within noise" if test.pvalue >= 0.05 else ("better" if test.statistic > 0 else "worse")
    assert a["verdict"] == expected
    assert expected == {"DCD": "better", "KD": "worse", "DKD": "within noise"}[method]  # the data do what we meant


def test_markdown_and_summary_csv(seeded):
    result, out = seeded
    md = result["markdown"]
    dcd = arm(result, "DCD", 3)
    g = dcd["gain"]["AP"]
    st = dcd["stats"]["AP"]
    assert (f"| {st['mean']:.2f} ± {st['std']:.2f} |" in md and f"| {g['mean']:+.2f} | "
            f"[{g['ci_low']:+.2f}, {g['ci_high']:+.2f}] | better | 3 | 4 x 2 |" in md)
    single = arm(result, "DCD", 1)
    assert "| DCD | dcd_rkd/seed0 | complete | 40/40 it | 40.00 |" in md  # one seed: a plain row as before
    assert f"| {single['gain']['AP']['mean']:+.2f} | - | n = 1 | 1 | - |" in md
    assert "Verdicts: 3 method(s) compared with their baseline" in md and "no multiplicity correction" in md
    with open(os.path.join(out, "summary.csv"), newline="") as f:
        lines = {(r["method"], r["n"]): r for r in csv.DictReader(f)}
    row = lines[("DCD", "3")]
    assert float(row["mean_AP"]) == pytest.approx(st["mean"]) and float(row["std_AP"]) == pytest.approx(st["std"])
    assert float(row["gain_ci_low_AP"]) == pytest.approx(g["ci_low"]) and row["verdict"] == "better"
    assert row["seeds"] == "0 1 2" and row["scale"] == "4 x 2" and lines[("DCD", "1")]["verdict"] == "n = 1"
    with open(os.path.join(out, "report.csv"), newline="") as f:
        per_run = [r for r in csv.DictReader(f) if r["method"] == "KD"]
    assert len(per_run) == 3 and all(r["world_size"] == "4" and r["images_per_process"] == "2" for r in per_run)
    for r in per_run:  # each run's own gain is over the baseline run of its seed
        k = int(r["seed"])
        assert float(r["gain_AP"]) == pytest.approx(EFFECT["KD"][k])


ORANGE = (255, 127, 14)  # matplotlib's tab:orange, the error bars


def _orange(path):
    img = np.asarray(Image.open(path).convert("RGB"), dtype=np.int32)
    return int((np.abs(img - np.array(ORANGE)).sum(-1) < 40).sum())


def test_plot_has_error_bars_only_with_seeds(tmp_path):
    def report(seeds, name):
        dirs = [det_run(str(tmp_path / name / f"{m}{k}"), m, "R101", "R18", 33.0 + k + (m == "DCD"), seed=k)
                for m in ("student", "DCD") for k in seeds]
        result = build_report(dirs, str(tmp_path / name / "out"))
        return result, next(f for f in result["files"] if f.endswith("AP_detection_coco_2017_val_R101_R18.png"))

    result, png = report((0, 1), "two")
    assert _orange(png) > 100  # mean ± std over two seeds as an error bar
    assert [a["n"] for a in result["arms"]] == [2, 2]
    result, png = report((0,), "one")
    assert _orange(png) == 0
    assert "Verdicts: none" in result["markdown"] and "| n = 1 | 1 |" in result["markdown"]


def test_classification_seeds_and_unpaired(tmp_path):
    pair = ("resnet32x4", "resnet8x4")
    dirs = [cls_run(str(tmp_path / f"s{k}"), "student", *pair, 72.0 + k, seed=k) for k in (0, 1)]
    dirs += [cls_run(str(tmp_path / f"d{k}"), "DCD", *pair, 74.0 + 0.5 * k, seed=k, kd_losses=("loss_dcd",))
             for k in (0, 1)]
    dirs += [cls_run(str(tmp_path / f"k{k}"), "KD", *pair, 73.0 + k, seed=k + 10) for k in (0, 1)]  # no common seed
    result = build_report(dirs, str(tmp_path / "out"), plots=False)
    dcd, kd = arm(result, "DCD"), arm(result, "KD")
    ci = stats.ttest_rel([74.0, 74.5], [72.0, 73.0]).confidence_interval(0.95)
    assert dcd["gain"]["top1"]["ci_low"] == pytest.approx(ci.low) and dcd["verdict"] == "within noise"
    assert kd["verdict"] == "not paired" and kd["gain"]["top1"]["ci_low"] is None
    assert kd["gain"]["top1"]["mean"] == pytest.approx(73.5 - 72.5)
    assert "'not paired'" in result["markdown"]


def test_run_info_column_and_resume_on_other_scale(tmp_path):
    path = det_run(str(tmp_path / "r"), "DCD", "R101", "R18", 35.0, seed=0, scale=(1, 8))
    run_info(path, "detection", 2, 4, seed=0)  # resumed on two processes
    run = read_run(path)
    assert (run["world_size"], run["images_per_process"], run["scale"]) == (2, 4, "1 x 8, then 2 x 4")
    with open(os.path.join(path, "run_info.json")) as f:
        assert [x["world_size"] for x in json.load(f)["launches"]] == [1, 2]
    result = build_report([path], str(tmp_path / "out"), plots=False)
    assert "| 1 x 8, then 2 x 4 |" in result["markdown"] and "Procs × imgs/proc" in result["markdown"]
