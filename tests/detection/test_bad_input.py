"""Bad input through the real command line: exit code 2, one sentence on stderr naming what is wrong,
and nothing written that could be mistaken for a result."""
import json
import os
import pickle
import shutil

import pytest
import torch

from kd_det.detection.data.shapes import shapes_paths

CFG = "configs/shapes/faster_rcnn_R_18_FPN_shapes.yaml"


def one_sentence(r):
    assert r.returncode == 2, (r.returncode, r.stderr[-3000:])
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr[-3000:]
    assert lines[0].startswith("train_net.py: error: ") and lines[0].endswith("."), lines[0]
    return lines[0]


def coco_variant(root, tmp_path, edit):
    """A copy of the tiny shapes train json edited by ``edit(dict)``; returns DATASETS.COCO_FORMAT opts."""
    json_file, image_root = shapes_paths(root, "train")
    with open(json_file) as f:
        data = json.load(f)
    edit(data)
    out = tmp_path / "edited.json"
    out.write_text(json.dumps(data))
    return ["DATASETS.COCO_FORMAT", str([["edited", str(out), image_root]]), "DATASETS.TRAIN", "('edited',)",
            "DATASETS.TEST", "()"], str(out)


def train(run_tool, root, tmp_path, tiny_opts, *opts, args=()):
    return run_tool("train_net.py", ["--config-file", CFG, *args, "OUTPUT_DIR", str(tmp_path / "out"), *tiny_opts,
                                     "SOLVER.MAX_ITER", "1", *opts], root)


def test_missing_config_file(tmp_path, run_tool, tiny_shapes):
    r = run_tool("train_net.py", ["--config-file", str(tmp_path / "nope.yaml")], tiny_shapes)
    assert "nope.yaml does not exist" in one_sentence(r)


def test_config_is_the_same_as_config_file(tmp_path, run_tool, tiny_shapes):
    """train_cls.py's spelling works in train_net.py too."""
    r = run_tool("train_net.py", ["--config", str(tmp_path / "nope.yaml")], tiny_shapes)
    assert one_sentence(r) == f"train_net.py: error: Config file {tmp_path / 'nope.yaml'} does not exist."


def test_error_in_spawned_processes_is_one_sentence(tmp_path, run_tool, tiny_shapes):
    """Raised inside 2 Gloo worker processes: the parent prints the sentence once, no mp.spawn traceback."""
    r = run_tool("train_net.py", ["--config-file", str(tmp_path / "nope.yaml"), "--num-gpus", "2",
                                  "--dist-url", "auto"], tiny_shapes)
    assert "nope.yaml does not exist" in one_sentence(r)


@pytest.mark.parametrize("edit, expected", [
    (lambda d: d.update(images=[], annotations=[]), r"has no images\."),
    (lambda d: d.update(annotations=[]), r"has no annotations: there is nothing to train on"),
    (lambda d: d.pop("categories"), r"lacks the key 'categories'"),
])
def test_unusable_coco_json(edit, expected, tmp_path, run_tool, tiny_shapes, tiny_opts):
    import re

    opts, json_file = coco_variant(tiny_shapes, tmp_path, edit)
    msg = one_sentence(train(run_tool, tiny_shapes, tmp_path, tiny_opts, *opts))
    assert re.search(rf"COCO json {re.escape(json_file)} \(dataset 'edited'\) {expected}", msg), msg
    assert not os.path.exists(tmp_path / "out" / "last_checkpoint")


def test_category_count_must_match_model(tmp_path, run_tool, tiny_shapes, tiny_opts):
    msg = one_sentence(train(run_tool, tiny_shapes, tmp_path, tiny_opts, "MODEL.ROI_HEADS.NUM_CLASSES", "5"))
    assert "Dataset 'shapes_train'" in msg and "has 3 categories but MODEL.ROI_HEADS.NUM_CLASSES is 5" in msg


def test_bad_boxes_are_skipped_with_a_count(tmp_path, run_tool, tiny_shapes, tiny_opts):
    def edit(d):
        anns = d["annotations"]
        anns[0]["bbox"][2] = 0.0  # zero width
        anns[1]["bbox"][3] = -4.0  # negative height
        anns[2]["bbox"][0] = 10_000.0  # entirely outside its image
        anns[3]["bbox"][0] = -3.0  # partly outside: kept (Detectron2 clips it)

    opts, json_file = coco_variant(tiny_shapes, tmp_path, edit)
    r = train(run_tool, tiny_shapes, tmp_path, tiny_opts, *opts)
    assert r.returncode == 0, r.stderr[-3000:]
    with open(json_file) as f:
        total = len(json.load(f)["annotations"])
    with open(tmp_path / "out" / "log.txt") as f:
        log = f.read()
    assert f"skipped 3 of {total} boxes with zero/negative width or height or entirely outside their image" in log


def test_corrupt_checkpoint_on_resume(tmp_path, run_tool, tiny_shapes, tiny_opts):
    out = tmp_path / "out"
    out.mkdir()
    (out / "model_0000009.pth").write_bytes(b"\x80\x02 half a checkpoint")
    (out / "last_checkpoint").write_text("model_0000009.pth")
    msg = one_sentence(train(run_tool, tiny_shapes, tmp_path, tiny_opts, args=["--resume"]))
    assert f"Checkpoint {out / 'model_0000009.pth'} is truncated or not a torch checkpoint" in msg
    assert (out / "model_0000009.pth").read_bytes() == b"\x80\x02 half a checkpoint"  # left as it was


class _Exploit:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (shutil.copyfile, (__file__, self.path))  # would run while unpickling


def test_pickle_weights_that_run_code_are_refused(tmp_path, run_tool, tiny_shapes, tiny_opts):
    evil = tmp_path / "evil.pkl"
    marker = tmp_path / "ran"
    with open(evil, "wb") as f:
        pickle.dump({"model": {"backbone.x": _Exploit(str(marker))}, "__author__": "x"}, f)
    msg = one_sentence(train(run_tool, tiny_shapes, tmp_path, tiny_opts, "MODEL.WEIGHTS", str(evil)))
    assert f"Checkpoint {evil} asks to build shutil.copyfile" in msg and "refuses to unpickle it" in msg
    assert not marker.exists()


def test_pth_weights_with_code_are_refused(tmp_path, run_tool, tiny_shapes, tiny_opts):
    evil = tmp_path / "evil.pth"
    marker = tmp_path / "ran"
    torch.save({"model": {}, "payload": _Exploit(str(marker))}, evil)
    msg = one_sentence(train(run_tool, tiny_shapes, tmp_path, tiny_opts, "MODEL.WEIGHTS", str(evil)))
    assert f"Checkpoint {evil} asks to build shutil.copyfile, which torch.load(weights_only=True) refuses" in msg
    assert not marker.exists()


def distill_config(tmp_path, teacher_files, spec="{name: kd}"):
    """A DistillRCNN config file with one KD.LOSSES entry ``spec`` (a yaml flow map)."""
    cfg_file, weights = teacher_files
    path = tmp_path / "distill.yaml"
    path.write_text(f'_BASE_: "{os.path.abspath(CFG)}"\nMODEL:\n  META_ARCHITECTURE: DistillRCNN\n'
                    f"KD:\n  TEACHER: {{CONFIG_FILE: '{cfg_file}', WEIGHTS: '{weights}'}}\n  LOSSES:\n    - {spec}\n")
    return ["--config-file", str(path)]


def test_negative_temperature(tmp_path, run_tool, tiny_shapes, tiny_opts, teacher_files):
    args = distill_config(tmp_path, teacher_files, "{name: kd, params: {temperature: -1.0}}")
    msg = one_sentence(run_tool("train_net.py", [*args, "OUTPUT_DIR", str(tmp_path / "out"), *tiny_opts], tiny_shapes))
    assert "KD.LOSSES: kd: parameter 'temperature' must be" in msg and "-1.0" in msg


def test_negative_loss_weight(tmp_path, run_tool, tiny_shapes, tiny_opts, teacher_files):
    args = distill_config(tmp_path, teacher_files, "{name: kd, weight: -0.5}")
    msg = one_sentence(run_tool("train_net.py", [*args, "OUTPUT_DIR", str(tmp_path / "out"), *tiny_opts], tiny_shapes))
    assert "kd: spec key 'weight' must be a finite number >= 0, got -0.5" in msg


def test_unknown_loss_is_named_with_the_known_ones(tmp_path, run_tool, tiny_shapes, tiny_opts, teacher_files):
    """A typo in KD.LOSSES: the sentence names it and the known losses, not the KD.PARAMS entry it orphans."""
    args = distill_config(tmp_path, teacher_files, "{name: dkd, params: {temperature: 2.0}}")
    msg = one_sentence(run_tool("train_net.py", [*args, "OUTPUT_DIR", str(tmp_path / "out"), *tiny_opts,
                                                 "KD.LOSSES", "[{'name': 'dkdd'}]"], tiny_shapes))
    from kd_det.losses import LOSS_REGISTRY

    assert msg == (f"train_net.py: error: KD.LOSSES: Unknown loss 'dkdd'; known losses: "
                   f"{', '.join(sorted(LOSS_REGISTRY))}."), msg
