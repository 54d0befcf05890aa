"""DCD / CKD with RoIs of one object (detection): object_id, same_object, foreground_only.

Golden values come from plain Python loops over the definitions: for "exclude" the other
samples of the anchor's object leave the softmax denominators (and, for DCD, both
distributions of the consistency term); for "positive" the row loss is the mean of
-log softmax over the anchor's object's samples; foreground_only drops object_id -1.
"""
import math

import numpy as np
import pytest
import torch

from kd_det.losses import CKDLoss, DCDLoss, ckd_loss, dcd_loss

IDS = torch.tensor([0, 0, 1, -1, -1, 2, 1, 0, -1, 3])  # objects 0 (x3), 1 (x2), 2, 3; four background RoIs


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _keep(ids, foreground_only):
    return [i for i in range(len(ids)) if ids[i] >= 0 or not foreground_only]


def _same(ids, i, j):
    return i != j and ids[i] >= 0 and ids[i] == ids[j]


def _info_nce(logit, ids, mode):
    n, out = len(ids), []
    for i in range(n):
        allowed = [j for j in range(n) if not (mode == "exclude" and _same(ids, i, j))]
        lse = math.log(sum(math.exp(logit[i][j]) for j in allowed))
        pos = [i] + ([j for j in range(n) if _same(ids, i, j)] if mode == "positive" else [])
        out.append(sum(lse - logit[i][p] for p in pos) / len(pos))
    return sum(out) / n


def ref_dcd(zs, zt, ids, scale, alpha, direction, mode, foreground_only):
    keep = _keep(ids, foreground_only)
    zs, zt, ids = _unit(zs[keep]), _unit(zt[keep]), [ids[i] for i in keep]
    n = len(ids)
    logit = [[scale * float(zs[i] @ zt[j]) for j in range(n)] for i in range(n)]
    contrast = _info_nce(logit, ids, mode)
    allowed = [[not (mode == "exclude" and _same(ids, i, j)) for j in range(n)] for i in range(n)]
    kl = 0.0
    for i in range(n):
        row = sum(math.exp(logit[i][k]) for k in range(n) if allowed[i][k])
        col = sum(math.exp(logit[k][i]) for k in range(n) if allowed[k][i])
        for j in range(n):
            if not allowed[i][j]:
                continue
            p_s, p_t = math.exp(logit[i][j]) / row, math.exp(logit[j][i]) / col
            kl += p_s * math.log(p_s / p_t) if direction == "student_teacher" else p_t * math.log(p_t / p_s)
    return contrast + alpha * kl / n


def ref_ckd(s, t, ids, temperature, mode, foreground_only):
    keep = _keep(ids, foreground_only)
    s, t, ids = _unit(s[keep]), _unit(t[keep]), [ids[i] for i in keep]
    n = len(ids)
    logit = [[float(t[i] @ s[j]) / temperature for j in range(n)] for i in range(n)]
    return _info_nce(logit, ids, mode)


@pytest.fixture
def pair():
    g = torch.Generator().manual_seed(5)
    return torch.randn(10, 6, generator=g, dtype=torch.float64), torch.randn(10, 6, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("mode", ["negative", "exclude", "positive"])
@pytest.mark.parametrize("foreground_only", [False, True])
@pytest.mark.parametrize("direction", ["teacher_student", "student_teacher"])
def test_dcd_same_object_golden(pair, mode, foreground_only, direction):
    s, t = pair
    expected = ref_dcd(s.numpy(), t.numpy(), IDS.tolist(), 3.0, 0.5, direction, mode, foreground_only)
    got = dcd_loss(s, t, 3.0, 0.5, kl_direction=direction, object_id=IDS, same_object=mode,
                   foreground_only=foreground_only)
    assert got.item() == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("mode", ["negative", "exclude", "positive"])
@pytest.mark.parametrize("foreground_only", [False, True])
def test_ckd_same_object_golden(pair, mode, foreground_only):
    s, t = pair
    expected = ref_ckd(s.numpy(), t.numpy(), IDS.tolist(), 0.7, mode, foreground_only)
    got = ckd_loss(s, t, 0.7, object_id=IDS, same_object=mode, foreground_only=foreground_only)
    assert got.item() == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("fn", [dcd_loss, ckd_loss])
def test_distinct_objects_change_nothing(pair, fn):
    """Without shared objects every mode is the plain in-batch loss (the classification form)."""
    s, t = pair
    plain = fn(s, t)
    for mode in ("negative", "exclude", "positive"):
        assert fn(s, t, object_id=torch.arange(10), same_object=mode).item() == pytest.approx(plain.item(), rel=1e-12)


def test_exclude_removes_same_object_negatives(pair):
    """Two copies of one RoI: as negatives they cap the loss at >= log 2 per row; excluded they do not."""
    s, t = pair
    s2, t2 = torch.cat([s[:1], s[:1]]), torch.cat([t[:1], t[:1]])
    ids = torch.tensor([0, 0])
    assert ckd_loss(s2, t2, object_id=ids, same_object="negative").item() == pytest.approx(math.log(2))
    assert ckd_loss(s2, t2, object_id=ids, same_object="exclude").item() == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("cls", [DCDLoss, CKDLoss])
def test_background_only_batch_is_graph_connected_zero(cls):
    """foreground_only with no foreground RoI: exactly 0, and every learnable part still in the graph."""
    loss = cls(6, 6, proj_dim=4, foreground_only=True) if cls is DCDLoss else cls(foreground_only=True)
    s = torch.randn(4, 6, requires_grad=True)
    out = loss(s, torch.randn(4, 6), object_id=torch.full((4,), -1))
    assert out.item() == 0.0
    out.backward()
    assert s.grad is not None and all(p.grad is not None for p in loss.parameters())


@pytest.mark.parametrize("fn", [dcd_loss, ckd_loss])
def test_bad_same_object_values(pair, fn):
    s, t = pair
    with pytest.raises(ValueError, match="'same_object' must be one of negative, exclude, positive"):
        fn(s, t, object_id=IDS, same_object="ignore")
    with pytest.raises(ValueError, match=r"'object_id' must be an integer tensor of shape \(10,\)"):
        fn(s, t, object_id=IDS[:5], same_object="exclude")


@pytest.mark.parametrize("mode", ["negative", "exclude", "positive"])
@pytest.mark.parametrize("foreground_only", [False, True])
def test_gradients_are_finite(mode, foreground_only):
    """Removed pairs are -inf logits: their KL terms must not turn backward into NaN (it did at first)."""
    g = torch.Generator().manual_seed(3)
    s, t = torch.randn(10, 6, generator=g, requires_grad=True), torch.randn(10, 6, generator=g, requires_grad=True)
    dcd = DCDLoss(6, 6, proj_dim=4, same_object=mode, foreground_only=foreground_only)
    (dcd(s, t, object_id=IDS) + ckd_loss(s, t, object_id=IDS, same_object=mode, foreground_only=foreground_only)).backward()
    for grad in [s.grad, t.grad] + [p.grad for p in dcd.parameters()]:
        assert grad is not None and torch.isfinite(grad).all()
