"""HCL / ReviewKD, FitNet: golden values against NumPy re-implementations (convs, BN, pooling)."""
from collections import OrderedDict

import numpy as np
import pytest
import torch

from kd_det.losses import FitNetLoss, ReviewKDLoss, build_loss, hcl_loss

TOL = dict(rel=1e-5, abs=1e-6)


# ----------------------------------------------------------------------------- NumPy references
def np_adaptive_avg_pool(x, k):
    b, c, h, w = x.shape
    out = np.zeros((b, c, k, k))
    for i in range(k):
        h0, h1 = (i * h) // k, -((-(i + 1) * h) // k)
        for j in range(k):
            w0, w1 = (j * w) // k, -((-(j + 1) * w) // k)
            out[:, :, i, j] = x[:, :, h0:h1, w0:w1].mean(axis=(2, 3))
    return out


def ref_hcl(maps_s, maps_t):
    total = 0.0
    for s, t in zip(maps_s, maps_t):
        used = [k for k in (4, 2, 1) if k < min(s.shape[2:])]
        weights = [1.0] + [0.5 ** (n + 1) for n in range(len(used))]
        terms = [np.mean((s - t) ** 2)] + [np.mean((np_adaptive_avg_pool(s, k) - np_adaptive_avg_pool(t, k)) ** 2)
                                            for k in used]
        total += sum(w * v for w, v in zip(weights, terms)) / sum(weights)
    return total


def np_conv(x, weight, bias=None):
    """Stride-1 'same' convolution by summing shifted windows."""
    o, c, kh, kw = weight.shape
    ph, pw = kh // 2, kw // 2
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    h, w = x.shape[2:]
    out = np.zeros((x.shape[0], o, h, w))
    for dy in range(kh):
        for dx in range(kw):
            out += np.einsum("oc,bchw->bohw", weight[:, :, dy, dx], xp[:, :, dy:dy + h, dx:dx + w])
    return out if bias is None else out + bias.reshape(1, -1, 1, 1)


def np_bn_train(x, bn):
    mean = x.mean(axis=(0, 2, 3), keepdims=True)
    var = x.var(axis=(0, 2, 3), keepdims=True)
    g = bn.weight.detach().double().numpy().reshape(1, -1, 1, 1)
    b = bn.bias.detach().double().numpy().reshape(1, -1, 1, 1)
    return (x - mean) / np.sqrt(var + bn.eps) * g + b


def np_nearest(x, size):
    h, w = x.shape[2:]
    rows = [min(int(np.floor(i * h / size[0])), h - 1) for i in range(size[0])]
    cols = [min(int(np.floor(j * w / size[1])), w - 1) for j in range(size[1])]
    return x[:, :, rows][:, :, :, cols]


def _w(module):
    return module.weight.detach().double().numpy()


def ref_reviewkd(loss, maps_s, maps_t):
    preds, residual = [None] * len(maps_s), None
    for i in reversed(range(len(maps_s))):
        abf = loss.abfs[i]
        x = np_bn_train(np_conv(maps_s[i], _w(abf.conv1[0])), abf.conv1[1])
        if residual is not None:
            up = np_nearest(residual, x.shape[2:])
            z = np_conv(np.concatenate([x, up], axis=1), _w(abf.att_conv[0]),
                        abf.att_conv[0].bias.detach().double().numpy())
            z = 1 / (1 + np.exp(-z))
            x = x * z[:, 0:1] + up * z[:, 1:2]
        if x.shape[2:] != maps_t[i].shape[2:]:
            x = np_nearest(x, maps_t[i].shape[2:])
        preds[i] = np_bn_train(np_conv(x, _w(abf.conv2[0])), abf.conv2[1])
        residual = x
    return ref_hcl(preds, maps_t)


def _maps(shapes, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=g) for s in shapes]


# ----------------------------------------------------------------------------- tests
def test_hcl_golden_and_weights_of_used_levels():
    shapes = [(2, 3, 8, 8), (2, 3, 5, 7), (2, 3, 3, 3), (2, 3, 2, 6), (2, 3, 6, 3), (2, 3, 1, 1)]
    fs, ft = _maps(shapes, 0), _maps(shapes, 1)
    expected = ref_hcl([x.double().numpy() for x in fs], [x.double().numpy() for x in ft])
    assert hcl_loss(fs, ft).item() == pytest.approx(expected, **TOL)


def test_hcl_single_level_by_hand():
    """A 3x3 map uses pool sizes 2 and 1 only, with weights 0.5 and 0.25 normalised by 1.75."""
    s, t = _maps([(1, 2, 3, 3)], 2)[0], _maps([(1, 2, 3, 3)], 3)[0]
    mse = ((s - t) ** 2).mean().item()
    p2 = ((torch.nn.functional.adaptive_avg_pool2d(s, 2) - torch.nn.functional.adaptive_avg_pool2d(t, 2)) ** 2)
    p1 = (s.mean((2, 3)) - t.mean((2, 3))) ** 2
    expected = (mse + 0.5 * p2.mean().item() + 0.25 * p1.mean().item()) / 1.75
    assert hcl_loss([s], [t]).item() == pytest.approx(expected, **TOL)


def test_hcl_zero_for_equal_maps():
    fs = _maps([(2, 4, 6, 6), (2, 4, 3, 3)], 4)
    assert hcl_loss(fs, [f.clone() for f in fs]).item() == 0.0


@pytest.mark.parametrize("t_sizes", [[(8, 8), (4, 4), (2, 2)], [(8, 8), (4, 4), (3, 3)]])
def test_reviewkd_golden(t_sizes):
    torch.manual_seed(0)
    in_ch, out_ch = [3, 5, 4], [6, 2, 7]
    loss = ReviewKDLoss(in_ch, out_ch, mid_channels=4)
    with torch.no_grad():  # non-trivial BN affine parameters
        for m in loss.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    fs = _maps([(2, c, h, h) for c, h in zip(in_ch, (8, 4, 2))], 10)
    ft = _maps([(2, c) + size for c, size in zip(out_ch, t_sizes)], 11)
    expected = ref_reviewkd(loss, [x.double().numpy() for x in fs], [x.double().numpy() for x in ft])
    assert loss(feats_s=fs, feats_t=ft).item() == pytest.approx(expected, **TOL)


def test_reviewkd_channels_from_shapes_and_dict_equals_list():
    names = ["p2", "p3", "p4", "p5", "p6"]
    sizes = [(16, 20), (8, 10), (4, 5), (2, 3), (1, 2)]
    fs = OrderedDict((n, x) for n, x in zip(names, _maps([(2, 8) + s for s in sizes], 20)))
    ft = OrderedDict((n, x) for n, x in zip(names, _maps([(2, 12) + s for s in sizes], 21)))
    params = ReviewKDLoss.shape_params({"feats_s": [8] * 5, "feats_t": [12] * 5})
    assert params == {"in_channels": [8] * 5, "out_channels": [12] * 5}
    torch.manual_seed(1)
    loss = build_loss("reviewkd", **params)
    assert loss.abfs[0].conv1[0].in_channels == 8 and loss.abfs[0].conv2[0].out_channels == 12
    assert loss.mid_channels == 8 and loss.abfs[-1].att_conv is None and loss.abfs[0].att_conv is not None
    from_dict = loss(fs, ft)
    from_list = loss(list(fs.values()), list(ft.values()))
    assert from_dict.item() == pytest.approx(from_list.item(), rel=1e-6)
    with pytest.raises(ValueError, match="reviewkd: .*same levels"):
        loss(fs, OrderedDict(reversed(list(ft.items()))))


def test_reviewkd_residual_flows_from_coarser_level():
    """Changing only the coarsest student level changes the finest prediction (review path)."""
    torch.manual_seed(0)
    loss = ReviewKDLoss([4, 4], [4, 4]).eval()
    fs, ft = _maps([(2, 4, 8, 8), (2, 4, 4, 4)], 30), _maps([(2, 4, 8, 8), (2, 4, 4, 4)], 31)
    fine = loss.fuse(fs, [t.shape[-2:] for t in ft])[0]
    fine2 = loss.fuse([fs[0], fs[1] + 1.0], [t.shape[-2:] for t in ft])[0]
    assert (fine - fine2).abs().max().item() > 1e-4


def test_fitnet_golden():
    torch.manual_seed(0)
    loss = FitNetLoss([3, 5], [4, 2])
    fs = _maps([(2, 3, 6, 6), (2, 5, 3, 3)], 40)
    ft = _maps([(2, 4, 6, 6), (2, 2, 3, 3)], 41)
    expected = 0.0
    for s, t, conv in zip(fs, ft, loss.adapters):
        pred = np_conv(s.double().numpy(), _w(conv), conv.bias.detach().double().numpy())
        expected += np.mean((pred - t.double().numpy()) ** 2)
    assert loss(fs, ft).item() == pytest.approx(expected, **TOL)


def test_fitnet_spatial_mismatch_is_one_sentence():
    loss = FitNetLoss([3], [4])
    with pytest.raises(ValueError, match=r"^fitnet: level '0' has student size \(6, 6\) but teacher size \(5, 5\)"):
        loss([torch.randn(1, 3, 6, 6)], [torch.randn(1, 4, 5, 5)])
