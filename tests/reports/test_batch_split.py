"""The report flags a contrastive COCO run whose images per process differ from the reference codes' 2."""
from fake_runs import det_run, run_info

from kd_det.evaluation.batch_split import REFERENCE_IMAGES_PER_PROCESS, batch_split_flags
from kd_det.evaluation.report import build_report
from kd_det.evaluation.runs import read_run


def test_only_contrastive_coco_runs_off_the_reference_split_are_flagged(tmp_path):
    runs = tmp_path / "runs"
    dirs = [det_run(str(runs / "dcd_8gpu"), "DCD", "R101", "R18", 37.0, kd_losses=("loss_dcd",), scale=(8, 1)),
            det_run(str(runs / "ckd_4gpu"), "CKD", "R101", "R18", 36.0, kd_losses=("loss_ckd",), scale=(4, 2)),
            det_run(str(runs / "ckd_rkd_2gpu"), "CKD+ReviewKD", "R101", "R18", 36.5,
                    kd_losses=("loss_ckd", "loss_reviewkd"), scale=(2, 4)),
            det_run(str(runs / "kd_8gpu"), "KD", "R101", "R18", 34.0, kd_losses=("loss_kd",), scale=(8, 1)),
            det_run(str(runs / "dcd_no_info"), "DCD", "R101", "R18", 37.0, kd_losses=("loss_dcd",)),
            det_run(str(runs / "dcd_shapes"), "DCD", "R34", "R18", 27.0, kd_losses=("loss_dcd",), dataset="shapes_val",
                    scale=(1, 4))]
    # resumed at the reference split: the first launch was off it, and that is enough
    resumed = det_run(str(runs / "dcd_resumed"), "DCD", "R101", "R18", 37.0, kd_losses=("loss_dcd",), scale=(8, 1))
    run_info(resumed, "detection", 4, 2)
    dirs.append(resumed)

    flags = batch_split_flags([read_run(d) for d in dirs])
    assert [f.split(":")[0] for f in flags] == ["dcd_8gpu", "ckd_rkd_2gpu", "dcd_resumed"]
    assert flags[0] == ("dcd_8gpu: trained at 8 x 1 (processes x images per process) where the reference ran 4 x 2; "
                        "DCD draws negatives from each process's RoIs, so this is not the paper's setting "
                        "(use --num-gpus SOLVER.IMS_PER_BATCH / 2).")
    assert flags[2].startswith("dcd_resumed: trained at 8 x 1, then 4 x 2 ")
    assert REFERENCE_IMAGES_PER_PROCESS == 2

    result = build_report(dirs, str(tmp_path / "report"), plots=False)
    assert result["batch_split_flags"] == flags
    section = result["markdown"].split("## Batch split unlike the reference\n\n")[1]
    assert section.startswith("- " + flags[0] + "\n")
    assert result["problems"] == []  # a flag, not a missing run: --strict is unaffected


def test_no_section_when_every_run_matches(tmp_path):
    d = det_run(str(tmp_path / "dcd"), "DCD", "R101", "R18", 37.0, kd_losses=("loss_dcd",), scale=(4, 2))
    result = build_report([d], str(tmp_path / "report"), plots=False)
    assert result["batch_split_flags"] == [] and "Batch split" not in result["markdown"]
