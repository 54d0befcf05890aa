"""Mask R-CNN runs: the report shows mask (segm) AP columns beside box AP, and only where a run has them."""
import csv

from fake_runs import det_run

from kd_det.evaluation.report import build_report


def test_mask_columns_appear_only_for_runs_with_segm(tmp_path):
    mask = [det_run(str(tmp_path / f"mask_{m}_{s}"), m, "R34-Mask", "R18-Mask", ap, dataset="shapes_val", seed=s,
                    mask_ap=ap - 2.0, kd_losses=("loss_reviewkd",) if m == "ReviewKD" else ())
            for m, ap0 in (("student", 30.0), ("ReviewKD", 31.0)) for s, ap in ((1, ap0), (2, ap0 + 0.5))]
    box = [det_run(str(tmp_path / "box"), "student", "R34", "R18", 33.0, dataset="shapes_val")]
    result = build_report(mask + box, str(tmp_path / "out"), plots=False)
    text = result["markdown"]
    mask_table, box_table = (text.split("student R18-Mask")[1].split("## ")[0],
                             text.split("student R18\n")[1].split("## ")[0])
    assert "| mask_AP | mask_AP50 | mask_AP75 |" in mask_table and "mask_AP" not in box_table
    arms = {a["method"]: a for a in result["arms"] if a["runs"][0]["student"] == "R18-Mask"}
    assert arms["student"]["stats"]["mask_AP"]["mean"] == 28.25
    assert arms["ReviewKD"]["gain"]["mask_AP"]["mean"] == 1.0 and arms["ReviewKD"]["gain"]["mask_AP"]["paired"]
    with open(tmp_path / "out" / "report.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["mask_AP"] for r in rows if r["student"] == "R18-Mask"} == {"28.0", "28.5", "29.0", "29.5"}
    assert [r["mask_AP"] for r in rows if r["student"] == "R18"] == [""]
