"""Multi-scale decoupled contrastive distillation: pooling, labels and the decoupled InfoNCE
against explicit loops."""
import math

import numpy as np
import pytest
import torch

from kd_det.losses import MSDLoss, build_loss, msd_stage_loss, multi_scale_pool


def np_cells(x, grids=(1, 2, 4)):
    """(B, C, H, W) -> (B, M, C), each cell the mean of its adaptive-pooling window."""
    b, c, h, w = x.shape
    out = []
    for g in grids:
        for r in range(g):
            for q in range(g):
                h0, h1 = (r * h) // g, -((-(r + 1) * h) // g)
                w0, w1 = (q * w) // g, -((-(q + 1) * w) // g)
                out.append(x[:, :, h0:h1, w0:w1].mean(axis=(2, 3)))
    return np.stack(out, axis=1)


def ref_stage(vs, vt, labels, temp):
    n, total = vs.shape[0], 0.0
    for k in range(n):
        sk = vs[k] / np.linalg.norm(vs[k])
        sims = [float(sk @ (vt[l] / np.linalg.norm(vt[l]))) / temp for l in range(n)]
        den = sum(math.exp(sims[l]) for l in range(n)
                  if l == k or labels is None or labels[l] != labels[k])
        total += -math.log(math.exp(sims[k]) / den)
    return total / n


def test_multi_scale_pool_matches_cells():
    x = torch.randn(2, 3, 7, 9)
    got = multi_scale_pool(x, (1, 2, 4))
    assert got.shape == (2, 21, 3)
    np.testing.assert_allclose(got.double().numpy(), np_cells(x.double().numpy()), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("temp", [1.0, 0.2])
def test_stage_loss_golden(temp):
    g = torch.Generator().manual_seed(0)
    vs, vt = torch.randn(12, 5, generator=g), torch.randn(12, 5, generator=g)
    labels = torch.tensor([0, 1, 2, 0, 1, 3, 3, 4, 0, 5, 6, 2])
    expected = ref_stage(vs.double().numpy(), vt.double().numpy(), labels.tolist(), temp)
    assert msd_stage_loss(vs, vt, labels, temp).item() == pytest.approx(expected, rel=1e-5)
    plain = ref_stage(vs.double().numpy(), vt.double().numpy(), None, temp)
    assert msd_stage_loss(vs, vt, None, temp).item() == pytest.approx(plain, rel=1e-5)
    assert abs(expected - plain) > 1e-3                                     # removal matters
    distinct = torch.arange(12)
    assert msd_stage_loss(vs, vt, distinct, temp).item() == pytest.approx(plain, rel=1e-5)


def _setup(seed=0):
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed + 1)
    fs = [torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 6, 4, 4, generator=g)]
    ft = [torch.randn(3, 5, 8, 8, generator=g), torch.randn(3, 7, 4, 4, generator=g)]
    classifier = torch.nn.Linear(7, 3)
    return fs, ft, classifier


def test_msd_end_to_end_golden():
    fs, ft, clf = _setup()
    loss = MSDLoss([4, 6], [5, 7], temperature=0.5)
    value = loss(feats_s=fs, feats_t=ft, teacher_classifier=clf)
    with torch.no_grad():
        projected = [p(s).double().numpy() for p, s in zip(loss.projectors, fs)]
    cells_t = [np_cells(t.double().numpy()) for t in ft]
    last = cells_t[-1].reshape(-1, 7)
    w, b = clf.weight.detach().double().numpy(), clf.bias.detach().double().numpy()
    labels = list(np.argmax(last @ w.T + b, axis=1))
    assert len(set(labels)) < len(labels)                                  # some other positives exist
    expected = sum(ref_stage(np_cells(p).reshape(-1, p.shape[1]), c.reshape(-1, c.shape[2]), labels, 0.5)
                   for p, c in zip(projected, cells_t))
    assert value.item() == pytest.approx(expected, rel=1e-5)


def test_msd_projector_maps_to_teacher_channels_and_attends():
    loss = MSDLoss([4], [9])
    out = loss.projectors[0](torch.randn(2, 4, 5, 5))
    assert out.shape == (2, 9, 5, 5)
    assert isinstance(loss.projectors[0].attention[-1], torch.nn.Sigmoid)


@pytest.mark.parametrize("c_s,c_t,count", [(64, 64, 41281), (256, 256, 656641), (128, 256, 312321),
                                             (464, 256, 1286049)])
def test_msd_projector_parameter_count_is_the_papers(c_s, c_t, count):
    """MSD paper, Table 7 (single-level extra parameters): ResNet110->ResNet32, ResNet32x4->
    ResNet8x4, ->WRN-40-2 and ->ShuffleNetV2 (its ShuffleNetV1 entry fits no channel count)."""
    loss = MSDLoss([c_s], [c_t])
    assert sum(p.numel() for p in loss.parameters()) == count


def test_msd_without_classification_needs_no_classifier():
    fs, ft, clf = _setup()
    with_labels = MSDLoss([4, 6], [5, 7])
    without = MSDLoss([4, 6], [5, 7], sample_classification=False)
    without.load_state_dict(with_labels.state_dict())
    assert set(with_labels.required_inputs()) == {"feats_s", "feats_t", "teacher_classifier"}
    assert set(without.required_inputs()) == {"feats_s", "feats_t"}
    with pytest.raises(ValueError, match=r"^msd: input 'teacher_classifier' is required"):
        with_labels(fs, ft)
    a, b = with_labels(fs, ft, clf), without(fs, ft)
    assert a.item() != pytest.approx(b.item(), rel=1e-4)
    assert a.item() < b.item()           # dropping other positives from the denominator lowers the loss


def test_msd_labels_from_last_stage_and_bad_classifier():
    fs, ft, _ = _setup()
    loss = build_loss("msd", **MSDLoss.shape_params({"feats_s": [4, 6], "feats_t": [5, 7]}))
    wrong = torch.nn.Linear(5, 3)                        # fits stage 0, not the last stage
    with pytest.raises(ValueError, match=r"^msd: 'teacher_classifier' could not be applied"):
        loss(fs, ft, wrong)
    first = MSDLoss([4, 6], [5, 7], label_stage=0)
    assert torch.isfinite(first(fs, ft, wrong))


def test_msd_sums_stages():
    fs, ft, clf = _setup()
    both = MSDLoss([4, 6], [5, 7])
    only0, only1 = MSDLoss([4], [5], sample_classification=False), MSDLoss([6], [7], sample_classification=False)
    both.sample_classification = False
    only0.projectors[0].load_state_dict(both.projectors[0].state_dict())
    only1.projectors[0].load_state_dict(both.projectors[1].state_dict())
    total = both(fs, ft)
    assert total.item() == pytest.approx((only0([fs[0]], [ft[0]]) + only1([fs[1]], [ft[1]])).item(), rel=1e-6)
