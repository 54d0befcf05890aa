"""tools/report.py: bad RUN_DIR arguments give one warning line each and are listed, not dropped."""
import csv
import os

from fake_runs import det_run


def test_bad_run_dirs_warn_and_are_listed(tmp_path, run_tool):
    good = det_run(str(tmp_path / "good"), "student", "", "R18", 30.0, dataset="shapes_val")
    not_dir = os.path.join(good, "metrics.json")
    gone = str(tmp_path / "gone")
    out = str(tmp_path / "report")
    r = run_tool("report.py", [good, not_dir, gone, "--out", out], str(tmp_path))
    assert r.returncode == 0, r.stderr
    warnings = r.stderr.strip().splitlines()
    assert len(warnings) == 2, r.stderr
    assert warnings[0] == (f"report.py: warning: metrics.json: missing ({not_dir} is not a directory); "
                           "listed in the report.")
    assert warnings[1].startswith("report.py: warning: gone: missing (") and warnings[1].endswith(".")
    with open(os.path.join(out, "report.csv"), newline="") as f:
        assert [(row["run"], row["status"]) for row in csv.DictReader(f)] == [
            ("good", "complete"), ("metrics.json", "missing"), ("gone", "missing")]
    md = open(os.path.join(out, "report.md")).read()
    assert "| gone |" in md and "| metrics.json |" in md
    assert os.path.isfile(os.path.join(out, "plots", "AP_detection_shapes_val_R18.png"))


def test_strict_and_bad_paper_csv(tmp_path, run_tool):
    r = run_tool("report.py", [str(tmp_path / "gone"), "--out", str(tmp_path / "o"), "--strict", "--no-plots"],
                 str(tmp_path))
    assert r.returncode == 1 and not os.path.isdir(tmp_path / "o" / "plots")
    r = run_tool("report.py", [str(tmp_path), "--paper-csv", str(tmp_path / "none.csv")], str(tmp_path))
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].endswith("none.csv is not a file.")
    bad = tmp_path / "bad.csv"
    bad.write_text("dataset,value\nx,1\n")
    r = run_tool("report.py", [str(tmp_path), "--paper-csv", str(bad), "--out", str(tmp_path / "o")], str(tmp_path))
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "lacks the column(s)" in r.stderr
