"""KD, DKD, CKD: golden values against NumPy float64 loops, and the invariances they must keep."""
import numpy as np
import pytest
import torch

from kd_det.losses import CKDLoss, DKDLoss, KDLoss, build_loss, ckd_loss, dkd_loss, dkd_terms, kd_loss

TOL = dict(rel=1e-5, abs=1e-5)


def _softmax(row):
    e = np.exp(row - row.max())
    return e / e.sum()


def ref_kd(s, t, temp):
    total = 0.0
    for i in range(s.shape[0]):
        p_s, p_t = _softmax(s[i] / temp), _softmax(t[i] / temp)
        total += sum(p_t[c] * np.log(p_t[c] / p_s[c]) for c in range(s.shape[1]))
    return total / s.shape[0] * temp ** 2


def ref_dkd(s, t, y, alpha, beta, temp):
    total = 0.0
    for i in range(s.shape[0]):
        p_s, p_t = _softmax(s[i] / temp), _softmax(t[i] / temp)
        k = y[i]
        b_s, b_t = np.array([p_s[k], 1 - p_s[k]]), np.array([p_t[k], 1 - p_t[k]])
        tckd = np.sum(b_t * np.log(b_t / b_s))
        others = [c for c in range(s.shape[1]) if c != k]
        h_s, h_t = p_s[others] / (1 - p_s[k]), p_t[others] / (1 - p_t[k])
        nckd = np.sum(h_t * np.log(h_t / h_s))
        total += alpha * tckd + beta * nckd
    return total / s.shape[0] * temp ** 2


def ref_ckd(s, t, temp):
    s = s / np.linalg.norm(s, axis=1, keepdims=True)
    t = t / np.linalg.norm(t, axis=1, keepdims=True)
    n, total = s.shape[0], 0.0
    for i in range(n):
        sims = np.array([t[i] @ s[j] / temp for j in range(n)])
        total += -(sims[i] - np.log(np.sum(np.exp(sims))))
    return total / n


@pytest.fixture
def logits():
    g = torch.Generator().manual_seed(1234)
    s = torch.randn(12, 7, generator=g) * 2
    t = torch.randn(12, 7, generator=g) * 2
    y = torch.randint(0, 7, (12,), generator=g)
    y[:3] = 6                                     # detection: background is the LAST column
    return s, t, y


@pytest.mark.parametrize("temp", [1.0, 4.0])
def test_kd_golden(logits, temp):
    s, t, _ = logits
    expected = ref_kd(s.double().numpy(), t.double().numpy(), temp)
    assert kd_loss(s, t, temp).item() == pytest.approx(expected, **TOL)
    assert KDLoss(temperature=temp)(s, t).item() == pytest.approx(expected, **TOL)


@pytest.mark.parametrize("alpha,beta,temp", [(1.0, 8.0, 4.0), (1.0, 0.25, 1.0), (0.3, 2.0, 2.0)])
def test_dkd_golden(logits, alpha, beta, temp):
    s, t, y = logits
    expected = ref_dkd(s.double().numpy(), t.double().numpy(), y.numpy(), alpha, beta, temp)
    assert dkd_loss(s, t, y, alpha, beta, temp).item() == pytest.approx(expected, **TOL)
    loss = DKDLoss(alpha=alpha, beta=beta, temperature=temp)
    assert loss(logits_s=s, logits_t=t, target=y).item() == pytest.approx(expected, **TOL)


@pytest.mark.parametrize("temp", [1.0, 0.5])
def test_ckd_golden(logits, temp):
    s, t, _ = logits
    expected = ref_ckd(s.double().numpy(), t.double().numpy(), temp)
    assert ckd_loss(s, t, temp).item() == pytest.approx(expected, **TOL)
    assert CKDLoss(temperature=temp)(s, t).item() == pytest.approx(expected, **TOL)


def test_ckd_anchor_is_teacher_row(logits):
    """Swapping the roles (student anchor, teacher negatives) must give another value."""
    s, t, _ = logits
    assert ckd_loss(s, t).item() != pytest.approx(ckd_loss(t, s).item(), rel=1e-4)
    assert ckd_loss(s, t).item() == pytest.approx(ref_ckd(s.double().numpy(), t.double().numpy(), 1.0), **TOL)


def test_kd_zero_when_student_equals_teacher(logits):
    s, _, _ = logits
    s = s.clone().requires_grad_(True)
    loss = kd_loss(s, s.detach().clone(), 4.0)
    loss.backward()
    assert abs(loss.item()) < 1e-6
    assert s.grad.abs().max().item() < 1e-6


def test_kd_positive_when_different(logits):
    s, t, _ = logits
    assert kd_loss(s, t, 4.0).item() > 1e-3


@pytest.mark.parametrize("temp", [1.0, 4.0])
def test_dkd_decomposition_matches_kd_identity(logits, temp):
    """DKD paper: KL(p^T || p^S) = TCKD + (1 - p^T_t) * NCKD, row by row and in the batch mean."""
    s, t, y = logits
    tckd, nckd, p_target = dkd_terms(s.double(), t.double(), y, temp)
    s_np, t_np = s.double().numpy(), t.double().numpy()
    for i in range(s.shape[0]):
        kl_i = ref_kd(s_np[i:i + 1], t_np[i:i + 1], temp) / temp ** 2
        assert (tckd[i] + (1 - p_target[i]) * nckd[i]).item() == pytest.approx(kl_i, rel=1e-9, abs=1e-12)
    kd = kd_loss(s.double(), t.double(), temp)
    assert kd.item() == pytest.approx((temp ** 2 * (tckd + (1 - p_target) * nckd).mean()).item(), rel=1e-10)


def test_dkd_is_alpha_tckd_plus_beta_nckd(logits):
    s, t, y = logits
    tckd, nckd, _ = dkd_terms(s, t, y, 2.0)
    assert dkd_loss(s, t, y, 1.0, 0.0, 2.0).item() == pytest.approx(4.0 * tckd.mean().item(), rel=1e-6)
    assert dkd_loss(s, t, y, 0.0, 1.0, 2.0).item() == pytest.approx(4.0 * nckd.mean().item(), rel=1e-6)


def test_dkd_stable_for_confident_teacher():
    """p_t = 1 - 1e-30 would make log(1 - p_t) = -inf in a naive implementation."""
    s = torch.tensor([[0.0, 1.0, 2.0], [3.0, 0.0, -1.0]])
    t = torch.tensor([[80.0, 0.0, 0.0], [0.0, 90.0, 1.0]])
    y = torch.tensor([0, 1])
    loss = dkd_loss(s.requires_grad_(True), t, y, 1.0, 8.0, 1.0)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad).all()


@pytest.mark.parametrize("name", ["ckd"])
def test_row_scaling_invariance(logits, name):
    """CKD normalises each row: a positive per-row scale of either side changes nothing."""
    s, t, _ = logits
    g = torch.Generator().manual_seed(7)
    a, b = torch.rand(12, 1, generator=g) * 5 + 0.1, torch.rand(12, 1, generator=g) * 5 + 0.1
    loss = build_loss(name)
    assert loss(s * a, t * b).item() == pytest.approx(loss(s, t).item(), rel=1e-5)


def test_kd_not_scale_invariant(logits):
    """Sanity check for the invariance test above: KD does change under row scaling."""
    s, t, _ = logits
    assert kd_loss(s * 3, t, 1.0).item() != pytest.approx(kd_loss(s, t, 1.0).item(), rel=1e-3)


def test_ckd_minimum_when_aligned():
    """Identical, mutually orthogonal rows give the smallest CKD value log(1 + (N-1) e^{-1/T})."""
    s = torch.eye(5) * 3.0
    expected = float(np.log(1 + 4 * np.exp(-1.0)))
    assert ckd_loss(s, s.clone(), 1.0).item() == pytest.approx(expected, rel=1e-6)
