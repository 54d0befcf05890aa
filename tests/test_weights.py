"""The weights catalog (kd_det/data/weights.csv), tools/fetch_weights.py against file:// mirrors, and the
sentence a missing MODEL.WEIGHTS / KD.TEACHER.WEIGHTS gets. No network: every URL is a file:// mirror."""
import hashlib
import os
import pickle
import re
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from kd_det import REPO_ROOT
from kd_det import weights_catalog as wc
from kd_det.errors import UserError

sys.path.insert(0, os.path.join(REPO_ROOT, "tools"))
import fetch_weights  # noqa: E402

HEADER = "file,url,hash_kind,hash,size_mb,conversion,configs\n"


def _sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _tiny_resnet18():
    """A torchvision-layout ResNet-18 state dict with 1-element tensors (the names are what conversion reads)."""
    sd = {"conv1.weight": torch.ones(1), "fc.weight": torch.ones(1), "fc.bias": torch.ones(1)}
    bn = lambda p: {f"{p}.{k}": torch.ones(1) for k in ("weight", "bias", "running_mean", "running_var")}  # noqa: E731
    sd.update(bn("bn1"))
    for layer in range(1, 5):
        for block in range(2):
            p = f"layer{layer}.{block}"
            sd.update({f"{p}.conv1.weight": torch.ones(1), f"{p}.conv2.weight": torch.ones(1)},
                      **bn(f"{p}.bn1"), **bn(f"{p}.bn2"))
            if layer > 1 and block == 0:
                sd.update({f"{p}.downsample.0.weight": torch.ones(1)}, **bn(f"{p}.downsample.1"))
    return sd


@pytest.fixture
def mirror(tmp_path):
    """A mirror folder with a torchvision file named by its real SHA-256 prefix, an MSRA-style pickle and a
    model-zoo-style pickle, and a catalog csv naming them (URLs on a host that is never reached)."""
    m = tmp_path / "mirror"
    m.mkdir()
    tv = m / "tmp.pth"
    torch.save(_tiny_resnet18(), tv)
    tv_name = f"resnet18-{_sha(tv)[:8]}.pth"
    tv.rename(m / tv_name)
    with open(m / "R-50.pkl", "wb") as f:
        pickle.dump({"blobs": {"conv1_w": [1.0, 2.0]}}, f)
    zoo = pickle.dumps({"model": {"w": [0.5]}, "__author__": "Detectron2 Model Zoo"})
    zoo_name = f"model_final_{hashlib.md5(zoo).hexdigest()[:6]}.pkl"
    (m / zoo_name).write_bytes(zoo)
    catalog = tmp_path / "weights.csv"
    catalog.write_text(HEADER + f"R-18.pkl,https://nowhere.invalid/m/{tv_name},sha256_prefix,{tv_name[9:17]},,"
                       "torchvision,a.yaml\n"
                       "R-50.pkl,https://nowhere.invalid/MSRA/R-50.pkl,pinned_sha256,,,none,b.yaml\n"
                       f"zoo.pkl,https://nowhere.invalid/z/1/{zoo_name},md5_prefix,{zoo_name[12:18]},,rename,c.yaml\n")
    return SimpleNamespace(dir=m, catalog=str(catalog), dest=tmp_path / "pretrained", tv_name=tv_name)


def _fetch(mirror, *names, capsys=None):
    rc = fetch_weights.main([*names, "--mirror", str(mirror.dir), "--dest", str(mirror.dest),
                             "--catalog", mirror.catalog])
    return rc, capsys.readouterr() if capsys else None


def test_catalog_covers_every_pretrained_file_the_configs_name():
    named = wc.configs_naming()
    assert named, "no config names a pretrained/ file: the scan is broken"
    assert {f: list(e.configs) for f, e in wc.read_catalog().items()} == named, \
        "kd_det/data/weights.csv: its files and configs columns must equal the configs' pretrained/ files"
    for e in wc.read_catalog().values():  # a published prefix is the one in the URL's file name
        assert e.hash_kind == "pinned_sha256" or re.search(rf"[-_]{e.hash}\.(pth|pkl)$", e.url), e


def test_doc_is_the_rendering_of_the_csv():
    with open(wc.DOC) as f:
        assert f.read() == wc.render(wc.read_catalog()), \
            "docs/weights.md is stale: run python tools/fetch_weights.py --render"


def test_list_covers_the_configs(capsys):
    assert fetch_weights.main(["--list"]) == 0
    out = capsys.readouterr().out
    for name, configs in wc.configs_naming().items():
        line = next(x for x in out.splitlines() if x.startswith(name + "\t"))
        assert "https://" in line and all(c in line for c in configs), line
    assert "model_final_f6e8b1.pkl\tmd5_prefix f6e8b1" in out and "resnet18-f37072fd.pth\tsha256_prefix f37072fd" in out


def test_torchvision_file_verified_converted_placed(mirror, capsys):
    rc, out = _fetch(mirror, "R-18.pkl", capsys=capsys)
    assert rc == 0, out.err
    assert "verified, converted" in out.out and mirror.tv_name in out.out
    with open(mirror.dest / "R-18.pkl", "rb") as f:
        data = pickle.load(f)
    assert "backbone.bottom_up.res5.1.conv2.weight" in data["model"]
    assert "backbone.bottom_up.fc.weight" not in data["model"]
    assert data["required_settings"]["INPUT.FORMAT"] == "RGB"
    assert os.listdir(mirror.dest) == ["R-18.pkl"]  # no temporary file left


def test_model_zoo_file_renamed(mirror, capsys):
    assert _fetch(mirror, "zoo.pkl", capsys=capsys)[0] == 0
    zoo = next(p for p in os.listdir(mirror.dir) if p.startswith("model_final_"))
    assert (mirror.dest / "zoo.pkl").read_bytes() == (mirror.dir / zoo).read_bytes()


def test_corrupted_file_refused_nothing_placed(mirror, capsys):
    for name in ("R-18.pkl", "zoo.pkl"):
        src = next(p for p in mirror.dir.iterdir() if p.name.startswith(("resnet18-", "model_final_"))
                   and (name == "R-18.pkl") == p.name.startswith("resnet18-"))
        src.write_bytes(src.read_bytes()[:-10] + b"0123456789")  # same length, other bytes
        rc, out = _fetch(mirror, name, capsys=capsys)
        assert rc == 2 and out.err.count("\n") == 1, out.err
        assert re.search(r"has (SHA-256|MD5) \w+… but its published prefix is \w+; nothing was placed",
                         out.err), out.err
        assert os.listdir(mirror.dest) == []  # neither the file nor a partial one


def test_pinned_file_that_changes_is_refused(mirror, capsys):
    assert _fetch(mirror, "R-50.pkl", capsys=capsys)[0] == 0
    sums = (mirror.dest / wc.SUMS).read_text()
    assert sums == f"{_sha(mirror.dir / 'R-50.pkl')}  R-50.pkl\n"
    assert "already there, kept" in _fetch(mirror, "R-50.pkl", capsys=capsys)[1].out
    os.remove(mirror.dest / "R-50.pkl")
    with open(mirror.dir / "R-50.pkl", "wb") as f:
        pickle.dump({"blobs": {"conv1_w": [9.0]}}, f)
    rc, out = _fetch(mirror, "R-50.pkl", capsys=capsys)
    assert rc == 2 and "SHA256SUMS pinned" in out.err and "nothing was placed" in out.err, out.err
    assert sorted(os.listdir(mirror.dest)) == [wc.SUMS] and (mirror.dest / wc.SUMS).read_text() == sums


def test_bad_fetch_inputs(mirror, tmp_path, capsys):
    assert fetch_weights.main(["R-19.pkl", "--catalog", mirror.catalog]) == 2
    assert "Unknown weights file 'R-19.pkl'; the catalog" in capsys.readouterr().err
    os.remove(mirror.dir / "R-50.pkl")
    rc, out = _fetch(mirror, "R-50.pkl", capsys=capsys)
    assert rc == 2 and f"Could not download file://{mirror.dir}/R-50.pkl" in out.err and "--mirror" in out.err
    (tmp_path / "afile").write_text("")
    assert fetch_weights.main(["R-50.pkl", "--dest", str(tmp_path / "afile"), "--catalog", mirror.catalog]) == 2
    assert "cannot be created" in capsys.readouterr().err
    assert wc.mirror_url("https://h/a/b/f.pkl", "http://m/x/") == "http://m/x/f.pkl"


def test_missing_weights_sentences(tmp_path, monkeypatch):
    from kd_det.detection.modeling.teacher import _load_checked

    with pytest.raises(UserError, match=r"^KD\.TEACHER\.WEIGHTS pretrained/faster_rcnn_R_101_FPN_3x\.pkl does not exist; "
                                        r"fetch it with `python tools/fetch_weights\.py "
                                        r"faster_rcnn_R_101_FPN_3x\.pkl`\.$"):
        _load_checked(None, "pretrained/faster_rcnn_R_101_FPN_3x.pkl", 0.9)
    with pytest.raises(UserError, match=r"fetch_weights\.py R-18\.pkl --dest /w/other`\.$"):
        _load_checked(None, "/w/other/R-18.pkl", 0.9)
    with pytest.raises(UserError, match=r"output/demo/teacher/model_final\.pth does not exist; "
                                        r"train it with `make demo`\.$"):
        _load_checked(None, "output/demo/teacher/model_final.pth", 0.9)
    with pytest.raises(UserError, match=r"^KD\.TEACHER\.WEIGHTS output/x/model_final.pth does not exist; train it with "
                                        r"`python tools/train_net\.py --config-file t\.yaml OUTPUT_DIR output/x`\.$"):
        _load_checked(None, "output/x/model_final.pth", 0.9, "t.yaml")
    from kd_det.classification.checkpoint import load_weights

    with pytest.raises(UserError, match=r"train it with `python tools/train_cls\.py --config configs/classification/"
                                        r"digits/teacher\.yaml`\.$"):
        load_weights(None, "output/classification/digits/teacher/model_final.pth", "KD.TEACHER.WEIGHTS")
    from kd_det.detection.engine.setup import setup

    monkeypatch.chdir(tmp_path)  # no pretrained/ here
    args = SimpleNamespace(config_file=os.path.join(REPO_ROOT, "configs/COCO-Detection/faster_rcnn_R_18_FPN_1x.yaml"),
                           opts=["MODEL.DEVICE", "cpu"], resume=False, eval_only=True)
    with pytest.raises(UserError, match=r"^MODEL\.WEIGHTS pretrained/R-18\.pkl does not exist; fetch it with "
                                        r"`python tools/fetch_weights\.py R-18\.pkl`\.$"):
        setup(args)


def test_train_cls_missing_teacher_exit_2(tmp_path, monkeypatch, capsys):
    import train_cls

    monkeypatch.chdir(tmp_path)  # no output/ here
    with pytest.raises(SystemExit) as e:
        train_cls.main(["--config", os.path.join(REPO_ROOT, "configs/classification/digits/kd.yaml")])
    assert e.value.code == 2
    assert capsys.readouterr().err == (
        "error: KD.TEACHER.WEIGHTS output/classification/digits/teacher/model_final.pth does not exist; train it "
        "with `python tools/train_cls.py --config configs/classification/digits/teacher.yaml`.\n")


def test_train_net_missing_weights_exit_2(tmp_path):
    cfg = os.path.join(REPO_ROOT, "configs/COCO-Detection/distill/R101-R18/student.yaml")
    p = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "tools/train_net.py"), "--config-file", cfg,
                        "--eval-only", "MODEL.DEVICE", "cpu"], cwd=tmp_path, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": REPO_ROOT})
    assert p.returncode == 2, p.stderr[-2000:]
    assert p.stderr.strip().splitlines() == [
        "train_net.py: error: MODEL.WEIGHTS pretrained/R-18.pkl does not exist; "
        "fetch it with `python tools/fetch_weights.py R-18.pkl`."], p.stderr[-2000:]
