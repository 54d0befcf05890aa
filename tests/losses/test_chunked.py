"""Blocked (chunked) CKD / DCD: same values and gradients as the whole-matrix computation,
and no N x N tensor kept for backward."""
import pytest
import torch

from kd_det.losses import DCDLoss, ckd_loss, dcd_loss


def _inputs(n, d, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = (torch.randn(n, d, generator=g) * 2).to(dtype).requires_grad_(True)
    t = (torch.randn(n, d, generator=g) * 2).to(dtype).requires_grad_(True)
    return s, t


def _value_and_grads(fn, *tensors):
    value = fn(*tensors)
    grads = torch.autograd.grad(value, tensors)
    return value.detach(), grads


@pytest.mark.parametrize("n,chunk", [(37, 8), (64, 16), (20, 19)])
def test_ckd_chunked_equals_full(n, chunk):
    s, t = _inputs(n, 11, torch.float64)
    full = _value_and_grads(lambda a, b: ckd_loss(a, b, 0.7, chunk_size=0), s, t)
    blocked = _value_and_grads(lambda a, b: ckd_loss(a, b, 0.7, chunk_size=chunk), s, t)
    torch.testing.assert_close(blocked[0], full[0], rtol=1e-12, atol=1e-12)
    for g_b, g_f in zip(blocked[1], full[1]):
        torch.testing.assert_close(g_b, g_f, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("direction", ["student_teacher", "teacher_student"])
@pytest.mark.parametrize("n,chunk", [(37, 8), (41, 41), (30, 7)])
def test_dcd_chunked_equals_full(direction, n, chunk):
    s, t = _inputs(n, 9, torch.float64, seed=3)
    scale = torch.tensor(3.3, dtype=torch.float64, requires_grad=True)
    bias = torch.tensor(0.4, dtype=torch.float64, requires_grad=True)

    def run(size):
        return lambda a, b, c, d: dcd_loss(a, b, c, 0.5, d, direction, chunk_size=size)

    full = _value_and_grads(run(0), s, t, scale, bias)
    blocked = _value_and_grads(run(chunk), s, t, scale, bias)
    torch.testing.assert_close(blocked[0], full[0], rtol=1e-12, atol=1e-12)
    for g_b, g_f in zip(blocked[1], full[1]):
        torch.testing.assert_close(g_b, g_f, rtol=1e-9, atol=1e-11)


def test_dcd_module_chunked_equals_full_float32():
    s, t = _inputs(300, 16, torch.float32, seed=5)
    torch.manual_seed(0)
    full = DCDLoss(16, 16, proj_dim=8, chunk_size=0)
    blocked = DCDLoss(16, 16, proj_dim=8, chunk_size=64)
    blocked.load_state_dict(full.state_dict())
    v_f, v_b = full(s, t), blocked(s, t)
    v_f.backward()
    v_b.backward()
    assert v_b.item() == pytest.approx(v_f.item(), rel=1e-5)
    for (name, p_f), p_b in zip(full.named_parameters(), blocked.parameters()):
        torch.testing.assert_close(p_b.grad, p_f.grad, rtol=1e-4, atol=1e-6, msg=name)


def _largest_saved(fn, *tensors):
    """numel of the largest tensor autograd keeps for backward while running fn."""
    sizes = []

    def pack(x):
        sizes.append(x.numel())
        return x

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        fn(*tensors)
    return max(sizes)


@pytest.mark.parametrize("fn", [lambda a, b, c: ckd_loss(a, b, 1.0, chunk_size=c),
                                lambda a, b, c: dcd_loss(a, b, 2.0, 0.5, chunk_size=c)], ids=["ckd", "dcd"])
def test_blocked_mode_keeps_no_full_matrix(fn):
    n = 96
    s, t = _inputs(n, 8, torch.float32)
    assert _largest_saved(fn, s, t, 0) >= n * n                     # whole matrix saved for backward
    assert _largest_saved(fn, s, t, 16) < n * n // 2                # only blocks, recomputed in backward
