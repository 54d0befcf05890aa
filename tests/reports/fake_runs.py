"""Small fake run directories in the real on-disk formats of train_net.py and train_cls.py."""
import json
import os

DET_LOSSES = ("loss_cls", "loss_box_reg", "loss_rpn_cls", "loss_rpn_loc")


def run_info(path, task, world_size, images_per_process, seed=None):
    """``run_info.json`` as train_net.py / train_cls.py write it (one launch)."""
    from kd_det.evaluation.runs import write_run_info

    return write_run_info(path, {"task": task, "world_size": world_size, "images_per_process": images_per_process,
                                 "seed": seed})


def det_run(path, method, teacher, student, ap, dataset="coco_2017_val", max_iter=40, evaluated=True,
            kd_losses=(), categories=("person", "car"), seed=None, scale=None, mask_ap=None):
    """A detection OUTPUT_DIR: config.yaml (kd_det get_cfg dump), metrics.json, evaluation.json.

    Args:
        ap: the run's AP; AP50 / AP75 / APs / APm / APl and per-category APs are derived from it.
        evaluated: write evaluation.json and the evaluation line of metrics.json.
        kd_losses: distillation terms logged as "loss_<name>" in metrics.json.
        seed: the config's SEED (default: get_cfg's -1, a random seed).
        scale: (world size, images per process) to record in run_info.json (default: none written).
        mask_ap: a Mask R-CNN run's mask AP: evaluation.json also gets "segm" (AP50 / AP75 ... derived alike).
    """
    from kd_det.config.detection import get_cfg

    os.makedirs(path, exist_ok=True)
    cfg = get_cfg()
    cfg.KD.LABEL.TEACHER, cfg.KD.LABEL.STUDENT, cfg.KD.LABEL.METHOD = teacher, student, method
    cfg.KD.LOSSES = [{"name": k.replace("loss_", "")} for k in kd_losses]
    cfg.DATASETS.TEST = (dataset,)
    cfg.SOLVER.MAX_ITER = max_iter
    cfg.OUTPUT_DIR = path
    if seed is not None:
        cfg.SEED = seed
    if scale:
        run_info(path, "detection", *scale, seed=cfg.SEED)
    with open(os.path.join(path, "config.yaml"), "w") as f:
        f.write(cfg.dump())
    bbox = {"AP": ap, "AP50": ap + 20.0, "AP75": ap + 3.0, "APs": ap - 15.0, "APm": ap + 1.0, "APl": float("nan")}
    bbox.update({f"AP-{c}": ap + i for i, c in enumerate(categories)})
    lines = []
    for it in range(19, max_iter, 20):
        terms = {k: 1.0 / (it + 1) + 0.1 * j for j, k in enumerate(DET_LOSSES + tuple(kd_losses))}
        lines.append(dict(terms, iteration=it, total_loss=sum(terms.values()), lr=0.01, data_time=0.01, time=0.5,
                          **{"fast_rcnn/cls_accuracy": 0.9, "rpn/num_pos_anchors": 3.0}))
    if evaluated:
        lines.append(dict({f"bbox/{k}": v for k, v in bbox.items()}, iteration=max_iter))
        record = {"mode": "train", "iteration": max_iter, "weights": "final model of this run",
                  "meta_architecture": "GeneralizedRCNN", "time": "2026-01-01 00:00:00",
                  "results": {dataset: {"bbox": bbox}}}
        if mask_ap is not None:
            record["results"][dataset]["segm"] = {"AP": mask_ap, "AP50": mask_ap + 20.0, "AP75": mask_ap + 3.0,
                                                  "APs": mask_ap - 15.0, "APm": mask_ap + 1.0, "APl": float("nan")}
        with open(os.path.join(path, "evaluation.json"), "w") as f:
            json.dump(record, f, indent=2)
    with open(os.path.join(path, "metrics.json"), "w") as f:
        f.write("".join(json.dumps(line) + "\n" for line in lines))
    return path


def cls_run(path, method, teacher, student, top1, epochs=3, done=None, dataset="cifar100", kd_losses=(), seed=None,
            scale=None):
    """A classification OUTPUT_DIR: config.yaml (get_cls_cfg dump) and metrics.json (one record per epoch).

    Args:
        done: epochs actually trained (default: all of them).
        seed: the config's SEED (default: get_cls_cfg's 0).
        scale: (world size, images per process) to record in run_info.json (default: none written).
    """
    from kd_det.config.classification import get_cls_cfg

    os.makedirs(path, exist_ok=True)
    cfg = get_cls_cfg()
    label = cfg.KD.LABEL
    label.DATASET, label.TEACHER, label.STUDENT, label.METHOD = dataset, teacher, student, method
    cfg.MODEL.ARCH = student if method != "teacher" else teacher
    cfg.SOLVER.EPOCHS = epochs
    cfg.OUTPUT_DIR = path
    if seed is not None:
        cfg.SEED = seed
    if scale:
        run_info(path, "classification", *scale, seed=cfg.SEED)
    with open(os.path.join(path, "config.yaml"), "w") as f:
        f.write(cfg.dump())
    with open(os.path.join(path, "metrics.json"), "w") as f:
        for e in range(1, (epochs if done is None else done) + 1):
            acc = top1 - (epochs - e)
            terms = {"train/loss_ce": 2.0 / e, **{f"train/{k}": 0.5 / e for k in kd_losses}}
            rec = dict(terms, epoch=e, lr=0.05, **{"train/loss_total": sum(terms.values()), "train/top1": acc,
                       "val/top1": acc, "val/top5": acc + 15.0, "val/loss": 1.0, "val/num_images": 100,
                       "val/best_top1": acc, "time/epoch_s": 1.0})
            f.write(json.dumps(rec) + "\n")
    return path
