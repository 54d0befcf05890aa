"""ReviewKD loss (ABF + HCL) forward + backward: the previous compute against the current one, side by side.

``OMP_NUM_THREADS=1 python results/benchmarks/reviewkd_old_vs_new.py 256x320 [repeats] [top]``

FPN p2..p6 maps (256 channels, 2 images of HxW) for student and teacher; "old" is the previous forward
(inputs checked, ABF with the concatenated attention input, HCL entered through ``hcl_loss``, which
checked its inputs again and pooled the full maps once per size: tests/losses/test_reviewkd_equivalence.py
keeps that formulation), "new" is ``ReviewKDLoss.forward``. Same module, same inputs, interleaved runs;
figures are process CPU time (robust to other processes on a shared machine), then one
torch.profiler table per variant (each operator's least self time over ``repeats`` profiled runs).
"""
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tests", "losses"))
from test_reviewkd_equivalence import reference_abf, reference_hcl  # noqa: E402

from kd_det.benchmarks.distill import _op_table  # noqa: E402
from kd_det.losses import build_loss  # noqa: E402
from kd_det.losses._common import split_feature_pair  # noqa: E402


def main():
    h, w = (int(v) for v in sys.argv[1].split("x")) if len(sys.argv) > 1 else (256, 320)
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    top = int(sys.argv[3]) if len(sys.argv) > 3 else 20
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    g = torch.Generator().manual_seed(0)
    sizes = [(-(-h // s), -(-w // s)) for s in (4, 8, 16, 32, 64)]
    fs = [torch.randn(2, 256, *hw, generator=g).requires_grad_(True) for hw in sizes]
    ft = [torch.randn(2, 256, *hw, generator=g) for hw in sizes]
    torch.manual_seed(0)
    loss = build_loss("reviewkd", in_channels=[256] * 5, out_channels=[256] * 5)

    def old():
        _, maps_s, maps_t = split_feature_pair("reviewkd", fs, ft)
        preds, residual = [None] * 5, None
        for i in reversed(range(5)):
            preds[i], residual = reference_abf(loss.abfs[i], maps_s[i], residual, maps_t[i].shape[-2:])
        split_feature_pair("hcl", preds, maps_t)  # hcl_loss checked its inputs again
        return reference_hcl(preds, maps_t, loss.pool_sizes)

    def new():
        return loss(fs, ft)

    def step(fn):
        def run():
            value = fn()
            value.backward()
            for t in list(fs) + list(loss.parameters()):
                t.grad = None
            return value.item()
        return run

    steps = {"old": step(old), "new": step(new)}
    values = {k: fn() for k, fn in steps.items()}
    times = {k: [] for k in steps}
    for _ in range(repeats):
        for k, fn in steps.items():
            c0 = time.process_time()
            fn()
            times[k].append(time.process_time() - c0)
    print(f"ReviewKD loss fwd+bwd, 2 x {h}x{w} (FPN {sizes}), 256 ch, {torch.get_num_threads()} thread(s), "
          f"torch {torch.__version__}, load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    for k in steps:
        print(f"{k}: value {values[k]:.9g}, process CPU median {1000 * statistics.median(times[k]):.1f} ms, "
              f"min {1000 * min(times[k]):.1f} ms over {repeats}")
    print(f"new / old (medians): {statistics.median(times['new']) / statistics.median(times['old']):.3f}")
    tables = {k: _op_table(fn, repeats=3) for k, fn in steps.items()}
    ops = sorted(set(tables["old"]) | set(tables["new"]), key=lambda op: -tables["old"].get(op, (0, 0))[0])
    print(f"\n{'operator':<44}{'calls old':>10}{'calls new':>10}{'self ms old':>12}{'self ms new':>12}")
    for op in ops[:top]:
        (so, co), (sn, cn) = tables["old"].get(op, (0, 0)), tables["new"].get(op, (0, 0))
        print(f"{op[:43]:<44}{co:>10}{cn:>10}{1000 * so:>12.1f}{1000 * sn:>12.1f}")
    print(f"{'self CPU total':<64}{sum(v[0] for v in tables['old'].values()) * 1000:>12.1f}"
          f"{sum(v[0] for v in tables['new'].values()) * 1000:>12.1f}")


if __name__ == "__main__":
    main()
