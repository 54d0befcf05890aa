"""The report's check of how a contrastive COCO run split its batch over processes.

The reference codes of the COCO rows trained on 4 GPUs with ``SOLVER.IMS_PER_BATCH 8``, i.e. 2
images per process (``--num-gpus 4`` in dvlab-research/ReviewKD Detection/README.md, whose
configs megvii-research/mdistiller's detection code reuses). CKD and DCD draw their negatives from
the RoIs of one process (about 512 per image), so at the same total batch ``--num-gpus 8`` (1 image
per process) halves their negatives and ``--num-gpus 2`` doubles them: such a run is not the
paper's row, and the report says so.
"""
REFERENCE_IMAGES_PER_PROCESS = 2  # 4 GPUs x 2 images = SOLVER.IMS_PER_BATCH 8 of the reference runs
IN_BATCH_NEGATIVES = ("ckd", "dcd")  # losses whose negatives are the other RoIs of the same process
COCO_PREFIX = "coco2017"  # the papers' COCO datasets (coco2017_val, coco2017_test-dev)


def batch_split_flags(runs):
    """One sentence per COCO detection run with CKD or DCD whose images per process differ from the reference's 2.

    Args:
        runs: run dicts of :func:`kd_det.evaluation.runs.read_run`; a run without ``run_info.json``
            (split unknown) is not flagged.

    Returns:
        list of str, one per flagged run, in the order of ``runs``.
    """
    flags = []
    for r in runs:
        if r["task"] != "detection" or not str(r["paper_dataset"]).startswith(COCO_PREFIX):
            continue
        specs = ((r["config"] or {}).get("KD") or {}).get("LOSSES") or []
        names = {s.get("name") if isinstance(s, dict) else s for s in specs}
        losses = [n for n in IN_BATCH_NEGATIVES if n in names]
        info = r["run_info"] or {}
        split = {x.get("images_per_process") for x in info.get("launches") or ([info] if info else [])}
        if losses and split - {REFERENCE_IMAGES_PER_PROCESS}:
            who = " and ".join(losses).upper() + (" draws" if len(losses) == 1 else " draw")
            flags.append(f"{r['run']}: trained at {r['scale']} (processes x images per process) where the reference "
                         f"ran 4 x {REFERENCE_IMAGES_PER_PROCESS}; {who} negatives from each process's RoIs, so this "
                         f"is not the paper's setting (use --num-gpus SOLVER.IMS_PER_BATCH / "
                         f"{REFERENCE_IMAGES_PER_PROCESS}).")
    return flags
