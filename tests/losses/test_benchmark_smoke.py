"""The loss benchmark runs end to end on tiny sizes and writes one JSON row per case."""
import json

from kd_det.benchmarks.losses import ALL, main


def test_benchmark_tiny(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["--sizes", "1,5", "--rois", "8", "--image-size", "64x64", "--channels", "4",
                 "--losses", ",".join(n for n in ALL if n != "crd"), "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    names = [r["loss"] for r in data["rows"]]
    assert set(names) == set(ALL) - {"crd"}
    assert names.count("ckd") == 2 and names.count("dcd") == 2          # one row per size (N <= chunk size)
    assert all(r["ms"] >= 0 and r["peak_mb"] >= 0 for r in data["rows"])
    assert "device: cpu" in capsys.readouterr().out


def test_benchmark_rejects_unknown_loss(capsys):
    assert main(["--losses", "kd,nope"]) == 2
    assert "unknown loss(es) ['nope']" in capsys.readouterr().out
