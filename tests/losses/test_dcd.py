"""DCD: golden values (NumPy loops, both KL directions, both clamps), the bias b, invariances."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kd_det.losses import DCDLoss, build_loss, dcd_loss

TOL = dict(rel=1e-5, abs=1e-5)


def ref_dcd(zs, zt, scale, bias, alpha, direction):
    zs = zs / np.linalg.norm(zs, axis=1, keepdims=True)
    zt = zt / np.linalg.norm(zt, axis=1, keepdims=True)
    n = zs.shape[0]
    logit = [[scale * float(zs[i] @ zt[j]) + bias for j in range(n)] for i in range(n)]
    p_s = [[math.exp(logit[i][j]) / sum(math.exp(logit[i][k]) for k in range(n)) for j in range(n)]
           for i in range(n)]
    p_t = [[math.exp(logit[j][i]) / sum(math.exp(logit[k][i]) for k in range(n)) for j in range(n)]
           for i in range(n)]
    contrast = -sum(math.log(p_s[i][i]) for i in range(n)) / n
    if direction == "student_teacher":
        kl = sum(p_s[i][j] * math.log(p_s[i][j] / p_t[i][j]) for i in range(n) for j in range(n)) / n
    else:
        kl = sum(p_t[i][j] * math.log(p_t[i][j] / p_s[i][j]) for i in range(n) for j in range(n)) / n
    return contrast + alpha * kl


@pytest.fixture
def emb():
    g = torch.Generator().manual_seed(99)
    return torch.randn(10, 6, generator=g), torch.randn(10, 6, generator=g)


@pytest.mark.parametrize("direction", ["student_teacher", "teacher_student"])
@pytest.mark.parametrize("scale,bias", [(math.e, 0.0), (7.5, 0.3)])
def test_dcd_functional_golden(emb, direction, scale, bias):
    s, t = emb
    expected = ref_dcd(s.double().numpy(), t.double().numpy(), scale, bias, 0.5, direction)
    got = dcd_loss(s, t, logit_scale=scale, alpha=0.5, bias=bias, kl_direction=direction)
    assert got.item() == pytest.approx(expected, **TOL)


def test_dcd_code_direction_matches_public_formula(emb):
    """'teacher_student' is the authors' kl_div(log_softmax(l, 1), softmax(l, 0).T, batchmean)."""
    s, t = emb
    zs, zt = F.normalize(s.double(), dim=1), F.normalize(t.double(), dim=1)
    logits = zs @ zt.t() * 2.0
    public = F.cross_entropy(logits, torch.arange(10)) + 0.5 * F.kl_div(
        F.log_softmax(logits, 1), F.softmax(logits, 0).t(), reduction="batchmean")
    assert dcd_loss(s, t, 2.0, 0.5, kl_direction="code").item() == pytest.approx(public.item(), rel=1e-6)
    assert dcd_loss(s, t, 2.0, 0.5, kl_direction="paper").item() != pytest.approx(public.item(), rel=1e-4)


def test_dcd_default_direction_is_public_code(emb):
    """The tables came from the public code: its KL(p^T || p^S) is the default, the paper's Eq. 6 an option."""
    s, t = emb
    assert DCDLoss(6, 6).kl_direction == "teacher_student"
    default = dcd_loss(s, t, 2.0, 0.5)
    assert default.item() == pytest.approx(dcd_loss(s, t, 2.0, 0.5, kl_direction="teacher_student").item())
    assert default.item() != pytest.approx(dcd_loss(s, t, 2.0, 0.5, kl_direction="student_teacher").item(), rel=1e-4)


@pytest.mark.parametrize("clamp,tau", [("scale", 1.0), ("scale", 3.0), ("tau", 3.0), ("tau", -0.5)])
@pytest.mark.parametrize("direction", ["student_teacher", "teacher_student"])
def test_dcd_module_golden(emb, clamp, tau, direction):
    s, t = emb
    torch.manual_seed(0)
    loss = DCDLoss(in_dim_s=6, in_dim_t=6, proj_dim=4, tau_init=tau, clamp=clamp, kl_direction=direction)
    w_s, b_s = loss.proj_s.weight.detach().double().numpy(), loss.proj_s.bias.detach().double().numpy()
    w_t, b_t = loss.proj_t.weight.detach().double().numpy(), loss.proj_t.bias.detach().double().numpy()
    zs = s.double().numpy() @ w_s.T + b_s
    zt = t.double().numpy() @ w_t.T + b_t
    scale = min(math.exp(tau), 10.0) if clamp == "scale" else math.exp(min(max(tau, 0.0), 10.0))
    expected = ref_dcd(zs, zt, scale, 0.0, 0.5, direction)
    assert loss(emb_s=s, emb_t=t).item() == pytest.approx(expected, **TOL)


def test_dcd_projects_to_128_by_default():
    loss = build_loss("dcd", in_dim_s=64, in_dim_t=256)
    assert loss.proj_s.out_features == 128 and loss.proj_t.out_features == 128
    assert loss.tau.item() == 1.0 and loss.b.item() == 0.0 and loss.tau_max == 10.0
    assert isinstance(loss.tau, torch.nn.Parameter) and isinstance(loss.b, torch.nn.Parameter)


@pytest.mark.parametrize("direction", ["student_teacher", "teacher_student"])
def test_dcd_unchanged_by_bias(emb, direction):
    """A constant added to every logit cancels in the row and the column softmax."""
    s, t = emb
    torch.manual_seed(0)
    loss = DCDLoss(6, 6, proj_dim=5, kl_direction=direction)
    base = loss(s, t)
    base.backward()
    grads = {n: p.grad.clone() for n, p in loss.named_parameters()}
    assert abs(grads["b"].item()) < 1e-6                                  # d loss / d b = 0
    assert grads["tau"].abs().item() > 1e-4                               # the temperature does learn
    loss.zero_grad()
    with torch.no_grad():
        loss.b.fill_(5.0)
    shifted = loss(s, t)
    shifted.backward()
    assert shifted.item() == pytest.approx(base.item(), rel=1e-5, abs=1e-6)
    for name, p in loss.named_parameters():
        torch.testing.assert_close(p.grad, grads[name], rtol=1e-4, atol=1e-5)
    # the functional form, float64: bias changes nothing
    for b in (-3.0, 0.0, 11.0):
        v = dcd_loss(s.double(), t.double(), 4.0, 0.5, bias=b, kl_direction=direction).item()
        assert v == pytest.approx(dcd_loss(s.double(), t.double(), 4.0, 0.5, kl_direction=direction).item(),
                                  rel=1e-12)


def test_dcd_row_scaling_invariance(emb):
    """Embeddings are L2-normalised inside: a positive per-row scale changes nothing."""
    s, t = emb
    g = torch.Generator().manual_seed(5)
    a, b = torch.rand(10, 1, generator=g) * 4 + 0.2, torch.rand(10, 1, generator=g) * 4 + 0.2
    assert dcd_loss(s * a, t * b, 3.0).item() == pytest.approx(dcd_loss(s, t, 3.0).item(), rel=1e-5)
    no_proj = DCDLoss(proj_dim=None)
    assert no_proj(s * a, t * b).item() == pytest.approx(no_proj(s, t).item(), rel=1e-5)


def test_dcd_alpha_weights_consistency(emb):
    s, t = emb
    c0 = dcd_loss(s, t, 3.0, alpha=0.0)
    c1 = dcd_loss(s, t, 3.0, alpha=1.0)
    assert dcd_loss(s, t, 3.0, alpha=0.5).item() == pytest.approx((c0 + 0.5 * (c1 - c0)).item(), rel=1e-5)
    assert (c1 - c0).item() > 0


def test_dcd_fixed_temperature_has_no_parameters():
    loss = DCDLoss(proj_dim=None, learn_temperature=False, tau_init=math.log(1 / 0.07))
    assert list(loss.parameters()) == []
    assert loss.logit_scale().item() == pytest.approx(10.0)        # 1/0.07 = 14.3, clamped to tau_max
    assert "tau" in loss.state_dict() and "b" in loss.state_dict()


def test_dcd_scale_clamp_stops_gradient():
    loss = DCDLoss(proj_dim=None, tau_init=4.0)                      # exp(4) = 54.6 > 10
    s, t = torch.randn(6, 3), torch.randn(6, 3)
    loss(s, t).backward()
    assert loss.tau.grad.item() == 0.0
    loss_tau = DCDLoss(proj_dim=None, tau_init=4.0, clamp="tau")    # tau = 4 within [0, 10]
    loss_tau(s, t).backward()
    assert loss_tau.tau.grad.item() != 0.0
