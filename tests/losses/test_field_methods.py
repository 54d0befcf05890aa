"""PKD, CWD, MGD, FGD (issue 21): golden numerics from the authors' code (tests/fixtures/field_methods_golden.pt,
written by tests/fixtures/make_field_methods_golden.py from open-mmlab/mmrazor and yzd-v/FGD), zero loss for equal
maps, gradients, the MGD mask stream, FGD's masks, parameter refusals. The one-step detection runs are in
tests/detection/test_field_methods_step.py."""
from collections import OrderedDict
import re
from pathlib import Path

import pytest
import torch

from kd_det.losses import CWDLoss, FGDLoss, MGDLoss, PKDLoss, build_loss, fgd_masks

GOLDEN = torch.load(Path(__file__).resolve().parents[1] / "fixtures" / "field_methods_golden.pt", weights_only=True)
TOL = dict(rtol=1e-10, atol=1e-12)


def _leaves(maps):
    return [m.clone().requires_grad_(True) for m in maps]


def _check(value, leaves_s, leaves_t, case, params=None, module=None):
    torch.testing.assert_close(value, case["value"], **TOL)
    got = torch.autograd.grad(value, leaves_s + leaves_t + (params or []))
    for g, ref in zip(got, case["grad_s"] + case["grad_t"]):
        torch.testing.assert_close(g, ref, **TOL)
    if params:
        refs = [r for level in case["grad_params"] for r in level.values()]
        names = [n for n, _ in module.named_parameters()]
        assert len(refs) == len(params), names
        for g, ref, name in zip(got[len(leaves_s) * 2:], refs, names):
            torch.testing.assert_close(g, ref, **TOL, msg=name)


@pytest.mark.parametrize("resize_stu", [True, False])
def test_pkd_golden(resize_stu):
    case = GOLDEN["pkd"]
    s, t = _leaves(case["feats_s"]), _leaves(case["feats_t"])
    loss = PKDLoss([3, 3], [3, 3], resize_stu=resize_stu)
    _check(loss(s, t), s, t, case[f"resize_stu={resize_stu}"])


@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_cwd_golden(tau):
    case = GOLDEN["cwd"]
    s, t = _leaves(case["feats_s"]), _leaves(case["feats_t"])
    _check(CWDLoss([3, 3], [3, 3], temperature=tau)(s, t), s, t, case[f"tau={tau}"])


def test_mgd_golden_with_the_authors_mask():
    case = GOLDEN["mgd"]
    s, t = _leaves(case["feats_s"]), _leaves(case["feats_t"])
    loss = MGDLoss([3, 4], [4, 4], mask_ratio=case["mask_ratio"], seed=0).double()
    for level, state in zip(loss.levels, case["state_dicts"]):
        level.load_state_dict(state)
    keep = [u <= 1 - case["mask_ratio"] for u in case["uniform"]]          # the authors: where(u > 1 - lambda, 0, 1)
    assert 0 < sum(int(k.sum()) for k in keep) < sum(k.numel() for k in keep)
    loss.keep_masks = lambda sizes: keep
    _check(loss(s, t), s, t, case, list(loss.parameters()), loss)


def test_fgd_golden_and_each_term():
    case = GOLDEN["fgd"]
    s, t = _leaves(case["feats_s"]), _leaves(case["feats_t"])
    loss = FGDLoss([3, 4], [4, 4], temperature=case["temperature"], strides=case["strides"], **case["weights"]).double()
    for level, state in zip(loss.levels, case["state_dicts"]):
        level.load_state_dict(state)
    _check(loss(s, t, case["gt_boxes"]), s, t, case, list(loss.parameters()), loss)
    for i, key in enumerate(("alpha_fgd", "beta_fgd", "gamma_fgd", "lambda_fgd")):   # a swapped term shows here
        loss.weights = tuple(float(j == i) for j in range(4))
        torch.testing.assert_close(loss(case["feats_s"], case["feats_t"], case["gt_boxes"]), case["terms"][key], **TOL)


@pytest.mark.parametrize("cls", [PKDLoss, CWDLoss])
def test_equal_maps_give_zero(cls):
    maps = [torch.randn(2, 3, 5, 6, dtype=torch.float64), torch.randn(2, 3, 3, 3, dtype=torch.float64)]
    s = _leaves(maps)
    value = cls([3, 3], [3, 3])(s, maps)
    assert abs(value.item()) < 1e-12
    value.backward()
    assert all(g.grad.abs().max() < 1e-10 for g in s)


@pytest.mark.parametrize("name", ["pkd", "cwd", "mgd", "fgd"])
def test_gradients_reach_the_student_and_the_learnable_parts_only(name):
    torch.manual_seed(0)
    c_s = 4 if name in ("pkd", "cwd") else 3
    loss = build_loss(name, in_channels=[c_s, c_s], out_channels=[4, 4],
                      **({"strides": [8, 16]} if name == "fgd" else {}))
    s = [torch.randn(2, c_s, 6, 8, requires_grad=True), torch.randn(2, c_s, 3, 4, requires_grad=True)]
    t = [torch.randn(2, 4, 6, 8), torch.randn(2, 4, 3, 4)]
    t_before = [x.clone() for x in t]
    extra = {"gt_boxes": [torch.tensor([[3.0, 5.0, 30.0, 22.0]]), torch.zeros(0, 4)]} if name == "fgd" else {}
    if name == "fgd":           # the zero-initialised GcBlock convs would give half the blocks no gradient yet
        with torch.no_grad():
            for p in loss.parameters():
                p.add_(torch.randn_like(p) * 0.1)
    loss(s, t, **extra).backward()
    assert all(x.grad is not None and x.grad.abs().sum() > 0 for x in s)
    assert all(not x.requires_grad and x.grad is None for x in t)
    assert all(torch.equal(a, b) for a, b in zip(t, t_before))
    params = dict(loss.named_parameters())
    assert bool(params) == (name in ("mgd", "fgd"))
    # FGD's conv_mask_* feed a softmax over positions, which a constant shift leaves unchanged: their bias's
    # gradient is zero in exact arithmetic, so rounding alone decides whether it prints 0 or 1e-9 (CI saw 0).
    shift_free = {k for k in params if k.endswith(("conv_mask_s.bias", "conv_mask_t.bias"))}
    assert all(params[k].grad is None or params[k].grad.abs().max() < 1e-6 for k in shift_free)
    assert [k for k, p in params.items()
            if k not in shift_free and (p.grad is None or p.grad.abs().sum() == 0)] == []


def test_mgd_mask_stream_repeats_from_the_seed_and_resumes_from_a_checkpoint():
    s, t = [torch.randn(2, 3, 8, 8)], [torch.randn(2, 4, 8, 8)]
    torch.manual_seed(5)
    a = MGDLoss([3], [4], mask_ratio=0.45)                   # seed drawn from the (seeded) global generator
    torch.manual_seed(5)
    b = MGDLoss([3], [4], mask_ratio=0.45)
    assert int(a.mask_seed) == int(b.mask_seed)
    first = [a.keep_masks([(2, 8, 8)])[0] for _ in range(2)]
    assert torch.equal(*first)                               # no training call: the stream does not move
    values = [a(s, t) for _ in range(3)]                     # training mode: one step of the stream per call
    assert int(a.draws) == 3 and len({v.item() for v in values}) == 3
    assert [b(s, t).item() for _ in range(3)] == [v.item() for v in values]
    c = MGDLoss([3], [4], mask_ratio=0.45, seed=123)
    c.load_state_dict(a.state_dict())                        # seed and position come back with a checkpoint
    assert torch.equal(c(s, t), a(s, t))
    keep = MGDLoss([3], [4], mask_ratio=0.45, seed=7).keep_masks([(64, 32, 32)])[0]
    assert keep.shape == (64, 1, 32, 32) and abs(1 - keep.float().mean().item() - 0.45) < 0.01
    a.eval()
    assert torch.equal(a(s, t), a(s, t)) and int(a.draws) == 4


def test_fgd_masks_by_hand():
    # box (8, 8)-(24, 16) at stride 8: columns floor(1) .. ceil(3), rows floor(1) .. ceil(2), both ends included
    fg, bg = fgd_masks([torch.tensor([[8.0, 8.0, 24.0, 16.0]]), torch.zeros(0, 4)], (4, 5), 8.0, torch.float64)
    expected = torch.zeros(4, 5, dtype=torch.float64)
    expected[1:3, 1:4] = 1 / 6
    torch.testing.assert_close(fg[0], expected)
    torch.testing.assert_close(bg[0], (expected == 0).double() / 14)
    assert fg[1].sum() == 0 and torch.allclose(bg[1], torch.full((4, 5), 1 / 20, dtype=torch.float64))
    # overlapping boxes: the smaller box's (larger) weight wins
    fg, _ = fgd_masks([torch.tensor([[0.0, 0.0, 32.0, 32.0], [8.0, 8.0, 15.0, 15.0]])], (5, 5), 8.0)
    assert fg[0, 1, 1].item() == pytest.approx(1 / 4) and fg[0, 0, 0].item() == pytest.approx(1 / 25)


def test_fgd_strides_from_level_names_or_refused():
    torch.manual_seed(0)
    loss = FGDLoss([4, 4], [4, 4])
    maps = [torch.randn(1, 4, 8, 8), torch.randn(1, 4, 4, 4)]
    boxes = [torch.tensor([[3.0, 5.0, 17.0, 22.0]])]
    by_name = loss(OrderedDict(p2=maps[0], p3=maps[1]), OrderedDict(p2=maps[1].new_zeros(1, 4, 8, 8) + 1,
                                                                   p3=maps[1] * 0 + 1), boxes)
    loss.strides = [4.0, 8.0]
    by_param = loss([maps[0], maps[1]], [maps[1].new_zeros(1, 4, 8, 8) + 1, maps[1] * 0 + 1], boxes)
    torch.testing.assert_close(by_name, by_param)
    loss.strides = None
    with pytest.raises(ValueError, match=r"^fgd: levels \['0', '1'\] are not named p<k>, so parameter 'strides' "
                                         r"must give their strides\.$"):
        loss(maps, maps, boxes)
    with pytest.raises(ValueError, match=r"^fgd: got GT boxes for 2 images but features for 1\.$"):
        loss(maps, maps, boxes * 2)


@pytest.mark.parametrize("name", ["pkd", "mgd", "fgd"])
def test_a_level_missing_on_one_side_is_refused(name):
    loss = build_loss(name, in_channels=[4, 4], out_channels=[4, 4])
    s = OrderedDict(p2=torch.randn(1, 4, 8, 8), p3=torch.randn(1, 4, 4, 4))
    t = OrderedDict(p2=torch.randn(1, 4, 8, 8))
    extra = {"gt_boxes": [torch.zeros(0, 4)]} if name == "fgd" else {}
    with pytest.raises(ValueError, match=rf"^{name}: 'feats_s' \(\['p2', 'p3'\]\) and 'feats_t' \(\['p2'\]\) must "
                                         r"hold the same levels\.$"):
        loss(s, t, **extra)


BAD = [
    ("pkd", {"in_channels": [4], "out_channels": [8]}, r"'in_channels' \[4\] must equal 'out_channels' \[8\] \(PKD has no adapter\)"),
    ("pkd", {"in_channels": [4], "out_channels": [4], "resize_stu": 1}, r"'resize_stu' must be True or False, got 1"),
    ("cwd", {"in_channels": [4], "out_channels": [8]}, r"'in_channels' \[4\] must equal 'out_channels' \[8\] \(CWD has no adapter\)"),
    ("cwd", {"in_channels": [4], "out_channels": [4], "temperature": 0}, r"'temperature' must be a finite number > 0, got 0"),
    ("mgd", {"in_channels": [4], "out_channels": [4], "mask_ratio": 0.0}, r"'mask_ratio' must be a number in \(0, 1\) \(the fraction of positions masked\), got 0\.0"),
    ("mgd", {"in_channels": [4], "out_channels": [4], "mask_ratio": 1.0}, r"'mask_ratio' must be a number in \(0, 1\) \(the fraction of positions masked\), got 1\.0"),
    ("mgd", {"in_channels": [4], "out_channels": [4], "seed": -1}, r"'seed' must be None or an int in \[0, 2\*\*62\), got -1"),
    ("fgd", {"in_channels": [4], "out_channels": [4], "temperature": -0.5}, r"'temperature' must be a finite number > 0, got -0\.5"),
    ("fgd", {"in_channels": [4], "out_channels": [4], "beta_fgd": -1e-5}, r"'beta_fgd' must be a finite number >= 0, got -1e-05"),
    ("fgd", {"in_channels": [4], "out_channels": [1]}, r"'out_channels' must be >= 2 on every level \(the global block halves them\), got \[1\]"),
    ("fgd", {"in_channels": [4, 4], "out_channels": [4, 4], "strides": [8]}, r"'strides' must be None or 2 positive numbers \(one per level\), got \[8\]"),
]


@pytest.mark.parametrize("name,params,pattern", BAD)
def test_bad_parameters_are_one_sentence(name, params, pattern):
    with pytest.raises(ValueError) as err:
        build_loss(name, **params)
    message = str(err.value)
    assert re.match(rf"^{name}: parameter {pattern}\.$", message), message
    assert ". " not in message and "\n" not in message

