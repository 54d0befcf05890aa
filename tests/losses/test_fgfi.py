"""FGFI: imitation mask against explicit Python loops over anchors, masked loss against NumPy."""
import numpy as np
import pytest
import torch

from kd_det.losses import FGFILoss, build_loss, fgfi_mask, fgfi_masks


def grid_anchors(h, w, stride, sizes=(32.0,), ratios=(0.5, 1.0, 2.0)):
    """Detectron2 DefaultAnchorGenerator layout: (H * W * A, 4), location-major, anchor-minor."""
    base = []
    for size in sizes:
        for r in ratios:
            aw = (size * size / r) ** 0.5
            ah = r * aw
            base.append([-aw / 2, -ah / 2, aw / 2, ah / 2])
    base = torch.tensor(base)
    ys, xs = torch.meshgrid(torch.arange(h) * stride, torch.arange(w) * stride, indexing="ij")
    shifts = torch.stack([xs.reshape(-1), ys.reshape(-1), xs.reshape(-1), ys.reshape(-1)], dim=1).float()
    return (shifts[:, None, :] + base[None]).reshape(-1, 4)


def py_iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def ref_masks(anchors, gts, sizes, psi, max_over="level"):
    out = [np.zeros((len(gts), h, w), dtype=bool) for h, w in sizes]
    for b, boxes in enumerate(gts):
        for g in boxes.tolist():
            ious = [[py_iou(a, g) for a in level.tolist()] for level in anchors]
            best = [max(v) for v in ious]
            if max_over == "all":
                best = [max(best)] * len(best)
            for lvl, ((h, w), values) in enumerate(zip(sizes, ious)):
                per_loc = len(values) // (h * w)
                for idx, v in enumerate(values):
                    if v > psi * best[lvl]:
                        loc = idx // per_loc
                        out[lvl][b, loc // w, loc % w] = True
    return out


@pytest.fixture
def scene():
    sizes = [(8, 10), (4, 5)]
    anchors = [grid_anchors(8, 10, 8, (16.0,)), grid_anchors(4, 5, 16, (40.0,))]
    gts = [torch.tensor([[10.0, 12.0, 30.0, 40.0], [40.0, 20.0, 75.0, 60.0]]),
           torch.zeros(0, 4),
           torch.tensor([[0.0, 0.0, 70.0, 60.0]])]
    return sizes, anchors, gts


@pytest.mark.parametrize("psi", [0.5, 0.8])
@pytest.mark.parametrize("max_over", ["level", "all"])
def test_mask_matches_loops(scene, psi, max_over):
    sizes, anchors, gts = scene
    got = fgfi_masks(anchors, gts, sizes, psi, max_over)
    expected = ref_masks(anchors, gts, sizes, psi, max_over)
    for g, e in zip(got, expected):
        assert g.dtype == torch.bool
        np.testing.assert_array_equal(g.numpy(), e)
    assert got[0][1].sum() == 0 and got[0][0].sum() > 0      # no GT -> empty mask


def test_mask_marks_the_location_of_a_gt_box():
    """A GT box equal to the anchor at (row 2, col 3) marks that location first."""
    anchors = grid_anchors(5, 6, 8, (16.0,), (1.0,))
    gt = anchors[(2 * 6 + 3)].view(1, 4).clone()
    mask = fgfi_mask(anchors, gt, (5, 6), psi=0.99)
    assert mask.sum() == 1 and bool(mask[2, 3])


def test_mask_threshold_is_strict():
    """IoU must exceed psi * best: an anchor at exactly half the best IoU is not imitated."""
    anchors = torch.tensor([[0.0, 0.0, 4.0, 4.0], [0.0, 0.0, 4.0, 2.0]])      # 1 x 2 map, A = 1
    mask = fgfi_mask(anchors, torch.tensor([[0.0, 0.0, 4.0, 4.0]]), (1, 2), psi=0.5)
    assert mask.tolist() == [[True, False]]
    assert fgfi_mask(anchors, torch.tensor([[0.0, 0.0, 4.0, 4.0]]), (1, 2), psi=0.49).tolist() == [[True, True]]


def test_mask_rejects_wrong_anchor_count():
    with pytest.raises(ValueError, match=r"^fgfi: anchors of shape \(31, 4\) do not fit a 5x6 feature map"):
        fgfi_mask(torch.zeros(31, 4), torch.zeros(1, 4), (5, 6))


def test_fgfi_loss_golden(scene):
    sizes, anchors, gts = scene
    torch.manual_seed(0)
    loss = FGFILoss([3, 3], [4, 4], adapter_kernel=1)
    g = torch.Generator().manual_seed(1)
    fs = [torch.randn(3, 3, h, w, generator=g) for h, w in sizes]
    ft = [torch.randn(3, 4, h, w, generator=g) for h, w in sizes]
    masks = ref_masks(anchors, gts, sizes, 0.5)
    total, count = 0.0, 0
    for s, t, m, conv in zip(fs, ft, masks, loss.adapters):
        w = conv.weight.detach().double().numpy()[:, :, 0, 0]
        pred = np.einsum("oc,bchw->bohw", w, s.double().numpy()) + conv.bias.detach().double().numpy()[:, None, None]
        sq = ((pred - t.double().numpy()) ** 2).sum(axis=1)
        total += sq[m].sum()
        count += m.sum()
    expected = total / (2 * count)
    assert loss(feats_s=fs, feats_t=ft, anchors=anchors, gt_boxes=gts).item() == pytest.approx(expected, rel=1e-5)


def test_fgfi_dict_levels_and_default_adapter(scene):
    sizes, anchors, gts = scene
    loss = build_loss("fgfi", **FGFILoss.shape_params({"feats_s": {"p2": 3, "p3": 3}, "feats_t": [5, 5]}))
    assert loss.adapters[0].kernel_size == (3, 3) and loss.psi == 0.5
    fs = {"p2": torch.randn(3, 3, *sizes[0]), "p3": torch.randn(3, 3, *sizes[1])}
    ft = {"p2": torch.randn(3, 5, *sizes[0]), "p3": torch.randn(3, 5, *sizes[1])}
    by_dict = loss(fs, ft, {"p2": anchors[0], "p3": anchors[1]}, gts)
    by_list = loss(fs, ft, anchors, gts)
    assert by_dict.item() == pytest.approx(by_list.item()) and by_dict.item() > 0


def test_fgfi_only_masked_locations_matter(scene):
    sizes, anchors, gts = scene
    torch.manual_seed(0)
    loss = FGFILoss([2, 2], [2, 2], adapter_kernel=1)
    fs = [torch.randn(3, 2, h, w) for h, w in sizes]
    ft = [torch.randn(3, 2, h, w) for h, w in sizes]
    base = loss(fs, ft, anchors, gts)
    masks = fgfi_masks(anchors, gts, sizes)
    ft2 = [t + 5.0 * (~m).unsqueeze(1).float() for t, m in zip(ft, masks)]   # change unmasked places only
    assert loss(fs, ft2, anchors, gts).item() == pytest.approx(base.item(), rel=1e-6)


def test_fgfi_no_gt_returns_connected_zero(scene):
    sizes, anchors, _ = scene
    loss = FGFILoss([2, 2], [2, 2])
    fs = [torch.randn(2, 2, h, w, requires_grad=True) for h, w in sizes]
    ft = [torch.randn(2, 2, h, w) for h, w in sizes]
    value = loss(fs, ft, anchors, [torch.zeros(0, 4), torch.zeros(0, 4)])
    value.backward()
    assert value.item() == 0.0 and fs[0].grad is not None and fs[0].grad.abs().sum() == 0
    assert loss.adapters[0].weight.grad is not None


def test_fgfi_adapter_init_follows_the_authors_code():
    """Adapter weights ~ N(0, std 1e-4) kept within +-2 std (twangnh/Distilling-Object-Detectors,
    trainval_net_sup.py normal_init(..., 0, 0.0001, truncated=True)); the bias keeps PyTorch's default."""
    torch.manual_seed(0)
    loss = FGFILoss([64, 64], [128, 128])
    for adapter in loss.adapters:
        w = adapter.weight.detach()
        assert w.abs().max().item() <= 2e-4 + 1e-12
        assert 0.85e-4 < w.std().item() < 0.91e-4  # std of N(0, 1) truncated at +-2: 0.880
        assert abs(w.mean().item()) < 2e-6
        bound = 1.0 / (64 * 9) ** 0.5  # PyTorch's default conv bias init U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        assert adapter.bias.abs().max().item() <= bound and adapter.bias.abs().max().item() > bound / 2
    torch.manual_seed(0)
    default = FGFILoss([64], [128], adapter_std=None)
    assert default.adapters[0].weight.abs().max().item() > 1e-2  # PyTorch's default kaiming-uniform init


@pytest.mark.parametrize("value", [0, -1e-4, float("nan"), "1e-4"])
def test_fgfi_bad_adapter_std_is_one_sentence(value):
    with pytest.raises(ValueError, match=r"^fgfi: parameter 'adapter_std' must be a finite number > 0, got .*\.$"):
        FGFILoss([2], [2], adapter_std=value)
