"""Real data: scikit-learn's digits. A teacher trains, then a student distilled with DCD and
one with CKD; the accuracies are printed. The only bound is twice chance level (10 classes),
i.e. "it learned something", not a value fitted to what these runs give."""
import math

from kd_det.classification.digits import run_digits, write_digits
from kd_det.classification.data import CifarPickleDataset

CHANCE = 100.0 / 10


def test_digits_pickles(tmp_path):
    write_digits(str(tmp_path))
    train = CifarPickleDataset(str(tmp_path), "train", lambda img: img, num_classes=10)
    val = CifarPickleDataset(str(tmp_path), "val", lambda img: img, num_classes=10)
    assert (len(train), len(val)) == (1347, 450)
    assert sorted(set(train.targets.tolist())) == list(range(10))
    img = train.images[0]
    assert img.shape == (32, 32, 3) and (img[:4, :4] == img[0, 0]).all()  # 4x nearest upsampling


def test_teacher_then_dcd_and_ckd_students(tmp_path):
    # a short schedule: a few epochs at lr 0.05, the last one at 0.005
    short = ["SOLVER.BATCH_SIZE", "32", "MODEL.ARCH", "resnet8"]
    results = run_digits(str(tmp_path), ["teacher"], short + ["SOLVER.EPOCHS", "5", "SOLVER.STEPS", "(4,)"])
    results.update(run_digits(str(tmp_path), ["dcd", "ckd"], short + [
        "SOLVER.EPOCHS", "4", "SOLVER.STEPS", "(3,)", "KD.TEACHER.ARCH", "resnet8"]))
    print({name: round(r["top1"], 2) for name, r in results.items()})
    for name, r in results.items():
        assert math.isfinite(r["loss"]) and r["num_images"] == 450
        assert r["top1"] > 2 * CHANCE, (name, r["top1"])
