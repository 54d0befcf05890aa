"""ReviewKD's faster ABF / HCL compute equals the straightforward formulation it replaced.

The reference below is the previous compute (the reference codes' formulation): ABF concatenates
``[x, up(residual)]`` before its 1x1 attention conv, and HCL pools the full student and teacher maps once per
pool size (results/benchmarks/reviewkd_old_vs_new.py times it against the current loss). The
loss now splits the attention conv (its residual half applied before the nearest resampling) and pools
each size from the previous, finer grid when that is exact; both only reorder sums, so values and
gradients agree to rounding (float64: 1e-12 relative).
"""
import pytest
import torch
import torch.nn.functional as F

from kd_det.losses import ReviewKDLoss, hcl_loss


def reference_hcl(maps_s, maps_t, pool_sizes=(4, 2, 1)):
    total = 0.0
    for s, t in zip(maps_s, maps_t):
        level, weight, weight_sum = F.mse_loss(s, t), 1.0, 1.0
        for k in pool_sizes:
            if k >= min(s.shape[-2:]):
                continue
            weight /= 2.0
            level = level + weight * F.mse_loss(F.adaptive_avg_pool2d(s, k), F.adaptive_avg_pool2d(t, k))
            weight_sum += weight
        total = total + level / weight_sum
    return total


def reference_abf(abf, x, residual, out_size):
    x = abf.conv1(x)
    if abf.att_conv is not None:
        residual = F.interpolate(residual, size=x.shape[-2:], mode="nearest")
        att = abf.att_conv(torch.cat([x, residual], dim=1))
        x = x * att[:, 0:1] + residual * att[:, 1:2]
    if tuple(x.shape[-2:]) != tuple(out_size):
        x = F.interpolate(x, size=tuple(out_size), mode="nearest")
    return abf.conv2(x), x


def reference_reviewkd(loss, maps_s, maps_t):
    preds, residual = [None] * len(maps_s), None
    for i in reversed(range(len(maps_s))):
        preds[i], residual = reference_abf(loss.abfs[i], maps_s[i], residual, maps_t[i].shape[-2:])
    return reference_hcl(preds, maps_t, loss.pool_sizes)


def _maps(shapes, seed, dtype, grad=False):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=g, dtype=dtype).requires_grad_(grad) for s in shapes]


def _grads(value, tensors):
    return torch.autograd.grad(value, tensors)


# FPN sizes of 256x320 (all divisible by 4), of 800x1344 (p5 25x42, p6 13x21: not), odd and tiny maps
HW_CASES = {
    "fpn_256x320": [(64, 80), (32, 40), (16, 20), (8, 10), (4, 5)],
    "fpn_800x1344": [(40, 68), (20, 34), (10, 17), (5, 9), (3, 5)],
    "odd": [(9, 12), (6, 6), (3, 7), (2, 2), (1, 1)],
}


@pytest.mark.parametrize("case", sorted(HW_CASES))
@pytest.mark.parametrize("pool_sizes", [(4, 2, 1), (2, 4, 1), (8, 4, 2, 1), (3, 1)])
def test_hcl_equals_reference(case, pool_sizes):
    shapes = [(2, 3) + hw for hw in HW_CASES[case]]
    fs, ft = _maps(shapes, 0, torch.float64, grad=True), _maps(shapes, 1, torch.float64)
    new, ref = hcl_loss(fs, ft, pool_sizes), reference_hcl(fs, ft, pool_sizes)
    assert new.item() == pytest.approx(ref.item(), rel=1e-12, abs=0)
    for a, b in zip(_grads(new, fs), _grads(ref, fs)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("case", sorted(HW_CASES))
@pytest.mark.parametrize("t_scale", [1, 2])
def test_reviewkd_equals_reference(case, t_scale):
    """Values and gradients (student maps and every ABF parameter); t_scale 2: teacher maps twice as large
    (the ABF output is resampled to the teacher size)."""
    torch.manual_seed(0)
    in_ch, out_ch = [3, 5, 4, 6, 2], [4, 2, 7, 3, 5]
    loss = ReviewKDLoss(in_ch, out_ch, mid_channels=4).double()
    with torch.no_grad():  # non-trivial BN affine parameters and attention bias
        for m in loss.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    hw = HW_CASES[case]
    fs = _maps([(2, c) + s for c, s in zip(in_ch, hw)], 2, torch.float64, grad=True)
    ft = _maps([(2, c, h * t_scale, w * t_scale) for c, (h, w) in zip(out_ch, hw)], 3, torch.float64)
    params = list(loss.parameters())
    new = loss(fs, ft)
    ref = reference_reviewkd(loss, fs, ft)
    assert new.item() == pytest.approx(ref.item(), rel=1e-12, abs=0)
    for a, b in zip(_grads(new, fs + params), _grads(ref, fs + params)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_reviewkd_float32_equals_reference_to_rounding():
    torch.manual_seed(1)
    loss = ReviewKDLoss([16] * 5, [16] * 5)
    shapes = [(2, 16) + hw for hw in HW_CASES["fpn_256x320"]]
    fs, ft = _maps(shapes, 4, torch.float32, grad=True), _maps(shapes, 5, torch.float32)
    new, ref = loss(fs, ft), reference_reviewkd(loss, fs, ft)
    assert new.item() == pytest.approx(ref.item(), rel=1e-6)
    for a, b in zip(_grads(new, fs), _grads(ref, fs)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_reviewkd_pooled_level_equals_reference():
    torch.manual_seed(2)
    loss = ReviewKDLoss([3, 4], [5, 6], pooled_level=True, pooled_channels=[7, 8]).double()
    fs = _maps([(3, 3, 8, 8), (3, 4, 4, 4)], 6, torch.float64, grad=True)
    ft = _maps([(3, 5, 8, 8), (3, 6, 4, 4)], 7, torch.float64)
    emb_s, emb_t = _maps([(3, 7)], 8, torch.float64, grad=True)[0], _maps([(3, 8)], 9, torch.float64)[0]
    new = loss(fs, ft, emb_s, emb_t)
    ref = reference_reviewkd(loss, fs + [emb_s[:, :, None, None]], ft + [emb_t[:, :, None, None]])
    assert new.item() == pytest.approx(ref.item(), rel=1e-12, abs=0)
    for a, b in zip(_grads(new, fs + [emb_s]), _grads(ref, fs + [emb_s])):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
