"""The report built from fake run directories: rows, gains, paper deltas, files, missing runs."""
import csv
import os

import numpy as np
import pytest
from fake_runs import cls_run, det_run
from PIL import Image

from kd_det.evaluation.report import PAPER_CSV, build_report, load_paper_results
from kd_det.evaluation.runs import loss_curves, read_run


@pytest.fixture(scope="module")
def coco_report(tmp_path_factory):
    """Teacher, student and DCD runs on coco_2017_val (R101 -> R18), plus a missing run."""
    root = tmp_path_factory.mktemp("runs")
    dirs = [det_run(str(root / "dcd"), "DCD", "R101", "R18", 37.5, kd_losses=("loss_dcd",)),
            det_run(str(root / "teacher"), "teacher", "R101", "", 42.5),
            det_run(str(root / "student"), "student", "", "R18", 33.0),
            str(root / "never_ran")]
    out = str(tmp_path_factory.mktemp("report"))
    return build_report(dirs, out), out


def _rows(result, status="complete"):
    return [r for r in result["rows"] if r["status"] == status]


def test_rows_in_order_with_gain_and_paper_delta(coco_report):
    result, _ = coco_report
    rows = _rows(result)
    assert [r["method"] for r in rows] == ["teacher", "student", "DCD"]
    dcd = rows[2]
    assert dcd["baseline_run"] == "student"
    assert dcd["gain_AP"] == pytest.approx(37.5 - 33.0)
    assert dcd["paper_AP"] == pytest.approx(36.98)  # DCD paper, Table 4, R101 -> R18
    assert dcd["diff_AP"] == pytest.approx(37.5 - 36.98)
    assert dcd["diff_AP75"] == pytest.approx(40.5 - 39.79)
    assert dcd["paper_source"].startswith("DCD paper")
    teacher = rows[0]
    assert teacher["paper_AP"] == pytest.approx(42.04) and teacher["gain_AP"] == pytest.approx(42.5 - 33.0)
    assert "gain_AP" not in rows[1]  # the baseline has no gain over itself
    assert rows[1]["diff_AP"] == pytest.approx(33.0 - 33.26)


def test_markdown_and_csv(coco_report):
    result, out = coco_report
    md = open(os.path.join(out, "report.md")).read()
    assert md == result["markdown"]
    assert "| DCD | dcd | complete | 40/40 it | 37.50 |" in md
    assert "+4.50" in md and "36.98 (+0.52)" in md and "DCD paper (Giakoumoglou & Stathaki), Table 4" in md
    assert "| person |" in md  # per-category AP
    with open(os.path.join(out, "report.csv"), newline="") as f:
        table = list(csv.DictReader(f))
    assert [r["run"] for r in table] == ["teacher", "student", "dcd", "never_ran"]
    dcd = table[2]
    assert float(dcd["AP"]) == 37.5 and float(dcd["gain_AP"]) == pytest.approx(4.5)
    assert float(dcd["paper_AP"]) == 36.98 and float(dcd["diff_AP"]) == pytest.approx(0.52)
    assert float(dcd["AP-car"]) == 38.5 and dcd["dataset"] == "coco_2017_val" and dcd["paper_dataset"] == "coco2017_val"


def test_missing_run_is_listed_not_dropped(coco_report):
    result, out = coco_report
    missing = [r for r in result["rows"] if r["run"] == "never_ran"]
    assert len(missing) == 1 and missing[0]["status"] == "missing"
    md = result["markdown"]
    assert "## Missing or incomplete runs" in md and "| never_ran |" in md and "is not a directory" in md
    assert result["problems"] == [f"never_ran: missing ({missing[0]['dir']} is not a directory)"]


def test_pngs_open_and_are_not_blank(coco_report):
    result, out = coco_report
    pngs = [f for f in result["files"] if f.endswith(".png")]
    names = sorted(os.path.basename(p) for p in pngs)
    assert names == ["AP_detection_coco_2017_val_R101_R18.png", "curves_dcd.png", "curves_student.png",
                     "curves_teacher.png"]
    for p in pngs:
        assert os.path.getsize(p) > 0
        img = np.asarray(Image.open(p).convert("RGB"), dtype=np.int32)
        assert img.shape[0] > 100 and img.shape[1] > 100 and img.std() > 5, p
        # the data are drawn: bars / loss curves in blue; total loss (curves) or teacher line (AP) in red
        assert _pixels(img, BLUE) > 200 and _pixels(img, RED) > 50, p
        assert os.path.relpath(p, out) in result["markdown"]  # embedded in report.md


BLUE, RED = (31, 119, 180), (214, 39, 40)  # matplotlib's tab:blue and tab:red


def _pixels(img, rgb, tol=40):
    return int((np.abs(img - np.array(rgb)).sum(-1) < tol).sum())


def test_dataset_without_paper_rows_shows_no_delta(tmp_path):
    dirs = [det_run(str(tmp_path / "s"), "student", "R101", "R18", 30.0, dataset="shapes_val"),
            det_run(str(tmp_path / "d"), "DCD", "R101", "R18", 31.0, dataset="shapes_val")]
    result = build_report(dirs, str(tmp_path / "out"), plots=False)
    rows = _rows(result)
    assert [r["method"] for r in rows] == ["student", "DCD"] and rows[1]["gain_AP"] == pytest.approx(1.0)
    assert not any(k.startswith(("paper_AP", "diff_")) for r in rows for k in r)
    assert "No paper delta" in result["markdown"] and "Paper AP" not in result["markdown"]


def test_incomplete_runs_are_listed(tmp_path):
    dirs = [det_run(str(tmp_path / "not_evaluated"), "DKD", "R101", "R18", 35.0, evaluated=False, max_iter=60),
            det_run(str(tmp_path / "student"), "student", "", "R18", 33.0),
            str(tmp_path / "student" / "metrics.json")]  # a file, not a run directory
    os.makedirs(tmp_path / "empty")
    dirs.append(str(tmp_path / "empty"))
    result = build_report(dirs, str(tmp_path / "out"), plots=False)
    status = {r["run"]: (r["status"], r["note"]) for r in result["runs"]}
    assert status["not_evaluated"] == ("incomplete", "trained to iteration 60 of 60; no evaluation.json "
                                                     "(not evaluated yet)")
    assert status["metrics.json"][0] == "missing" and "is not a directory" in status["metrics.json"][1]
    assert status["empty"][0] == "missing" and "holds no config.yaml" in status["empty"][1]
    assert len(result["problems"]) == 3 and len(result["rows"]) == 4
    row = next(r for r in result["rows"] if r["run"] == "not_evaluated")
    assert row["group"] and "gain_AP" not in row  # in its group's table, without numbers
    assert "| DKD | not_evaluated | incomplete |" in result["markdown"]


def test_stopped_training_is_incomplete(tmp_path):
    path = det_run(str(tmp_path / "r"), "DCD", "R101", "R18", 35.0, max_iter=40)
    import yaml

    cfg = yaml.safe_load(open(os.path.join(path, "config.yaml")))
    cfg["SOLVER"]["MAX_ITER"] = 300  # evaluated at 40 of 300 iterations
    yaml.safe_dump(cfg, open(os.path.join(path, "config.yaml"), "w"))
    run = read_run(path)
    assert run["status"] == "incomplete" and "iteration 40 of 300" in run["note"]


def test_classification_top1_top5(tmp_path):
    pair = ("resnet32x4", "resnet8x4")
    dirs = [cls_run(str(tmp_path / "t"), "teacher", *pair, 79.0), cls_run(str(tmp_path / "s"), "student", *pair, 72.0),
            cls_run(str(tmp_path / "dcd"), "DCD", *pair, 74.5, kd_losses=("loss_dcd",)),
            cls_run(str(tmp_path / "kd"), "KD", *pair, 70.0, epochs=5, done=2)]
    result = build_report(dirs, str(tmp_path / "out"))
    rows = {r["run"]: r for r in result["rows"]}
    assert rows["dcd"]["metrics"] == {"top1": 74.5, "top5": 89.5, "best_top1": 74.5}
    assert rows["dcd"]["gain_top1"] == pytest.approx(2.5)
    assert rows["dcd"]["paper_top1"] == pytest.approx(74.23) and rows["dcd"]["diff_top1"] == pytest.approx(0.27)
    assert rows["kd"]["status"] == "incomplete" and "trained 2 of 5 epochs" in rows["kd"]["note"]
    assert "| top1 | top5 | best_top1 |" in result["markdown"]
    curves = loss_curves(rows["dcd"])
    assert set(curves) == {"loss_ce", "loss_dcd", "loss_total"} and curves["loss_ce"][0] == [1, 2, 3]


def test_metrics_json_tolerates_cut_line_and_resume(tmp_path):
    path = det_run(str(tmp_path / "r"), "student", "", "R18", 30.0, max_iter=60)
    with open(os.path.join(path, "metrics.json"), "a") as f:
        f.write('{"iteration": 39, "total_loss": 9.0, "loss_cls": 9.0}\n{"iteration": 59, "total_lo')
    run = read_run(path)
    assert "1 unparsable line(s)" in run["note"]
    xs, ys = loss_curves(run)["total_loss"]
    assert xs == [19, 39, 59] and ys[1] == 9.0  # the resumed record of iteration 39 wins


def test_packaged_paper_results():
    paper = load_paper_results()
    assert os.path.basename(PAPER_CSV) == "paper_results.csv" and len(paper) >= 247
    dcd = paper[("coco2017_val", "R101", "R18", "DCD", "AP")]
    assert dcd == (36.98, "DCD paper (Giakoumoglou & Stathaki), Table 4", "")  # "": the row config's own harness
    assert paper[("imagenet", "ResNet-34", "ResNet-18", "CKD", "top1")][0] == 72.24
    assert all(src for _, src, _ in paper.values())
    with open(PAPER_CSV, newline="") as f:
        keys = [tuple(r[k] for k in ("dataset", "teacher", "student", "method", "metric")) for r in csv.DictReader(f)]
    assert len(keys) == len(set(keys))  # one value per row of a paper table


def test_unlabelled_runs_get_derived_roles(tmp_path):
    """Classification configs without KD.LABEL.*: labels from MODEL.ARCH / KD.TEACHER.ARCH / KD.LOSSES."""
    import yaml

    dirs = [cls_run(str(tmp_path / n), m, "resnet20", "resnet8", 90.0 + i)
            for i, (n, m) in enumerate([("teacher", "teacher"), ("student", "student"), ("dcd", "DCD")])]
    for d, arch, teacher, losses in zip(dirs, ["resnet20", "resnet8", "resnet8"], ["", "", "resnet20"],
                                        [[], [], [{"name": "dcd", "weight": 1.0}]]):
        cfg = yaml.safe_load(open(os.path.join(d, "config.yaml")))
        cfg["KD"]["LABEL"] = {k: "" for k in cfg["KD"]["LABEL"]}
        cfg["DATA"]["NUM_CLASSES"], cfg["MODEL"]["ARCH"], cfg["KD"]["TEACHER"]["ARCH"] = 10, arch, teacher
        cfg["KD"]["LOSSES"] = losses
        yaml.safe_dump(cfg, open(os.path.join(d, "config.yaml"), "w"))
    result = build_report(dirs, str(tmp_path / "out"), plots=False)
    group = "classification / cifar100-format data, 10 classes / resnet20 / resnet8"  # not CIFAR-100 itself
    assert [(r["method"], r["run"], r["group"]) for r in result["rows"]] == [
        ("teacher", "teacher", group), ("student", "student", group), ("DCD", "dcd", group)]
    assert "Labels derived from the config" in result["markdown"] and "No paper delta" in result["markdown"]


def test_a_paper_number_from_another_harness_is_marked(tmp_path):
    """PKD's published R101 -> R50 number is mmdetection 2x: its delta carries a mark and the sentence saying so;
    the same-harness rows (DCD's) carry none."""
    dirs = [det_run(str(tmp_path / "pkd"), "PKD", "R101", "R50", 39.0, kd_losses=("loss_pkd",)),
            det_run(str(tmp_path / "dcd"), "DCD", "R101", "R50", 39.0, kd_losses=("loss_dcd",)),
            det_run(str(tmp_path / "student"), "student", "", "R50", 37.0)]
    result = build_report(dirs, str(tmp_path / "report"), plots=False)
    md = result["markdown"]
    assert "40.30 (-1.30)†" in md and "mmdetection Faster R-CNN FPN 2x" in md
    assert "† published on another harness (named in Source)" in md
    dcd_line = next(line for line in md.splitlines() if line.startswith("| DCD |"))
    assert "†" not in dcd_line
    with open(os.path.join(str(tmp_path / "report"), "summary.csv"), newline="") as f:
        harness = {a["method"]: a["paper_harness"] for a in csv.DictReader(f)}
    assert harness["PKD"].startswith("mmdetection") and harness["DCD"] == ""
