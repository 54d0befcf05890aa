"""CRD: NCE loss, normalisation constants and memory updates against NumPy loops."""
import math

import numpy as np
import pytest
import torch

from kd_det.losses import CRDLoss, build_loss


def _np_normalize(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def ref_crd(loss, emb_s, emb_t, index, idx, z=None):
    """Returns (loss, (z_s, z_t), new memory_s, new memory_t) for one training call."""
    p = {k: v.detach().double().numpy() for k, v in loss.state_dict().items()}
    v_s = _np_normalize(emb_s @ p["embed_s.weight"].T + p["embed_s.bias"])
    v_t = _np_normalize(emb_t @ p["embed_t.weight"].T + p["embed_t.bias"])
    n, k1 = idx.shape
    out_s = np.array([[math.exp(p["memory_t"][idx[i, k]] @ v_s[i] / loss.nce_t) for k in range(k1)] for i in range(n)])
    out_t = np.array([[math.exp(p["memory_s"][idx[i, k]] @ v_t[i] / loss.nce_t) for k in range(k1)] for i in range(n)])
    if z is None:
        z = (out_s.mean() * loss.num_samples, out_t.mean() * loss.num_samples)
    m_pn = (k1 - 1) / loss.num_samples

    def nce(prob):
        total = 0.0
        for i in range(n):
            total += math.log(prob[i, 0] / (prob[i, 0] + m_pn + 1e-7))
            total += sum(math.log(m_pn / (prob[i, k] + m_pn + 1e-7)) for k in range(1, k1))
        return -total / n

    value = nce(out_s / z[0]) + nce(out_t / z[1])
    mem_s, mem_t = p["memory_s"].copy(), p["memory_t"].copy()
    for i, j in enumerate(index):
        mem_s[j] = _np_normalize(0.5 * mem_s[j] + 0.5 * v_s[i])
        mem_t[j] = _np_normalize(0.5 * mem_t[j] + 0.5 * v_t[i])
    return value, z, mem_s, mem_t


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(3)
    emb_s, emb_t = torch.randn(6, 5, generator=g), torch.randn(6, 7, generator=g)
    index = torch.tensor([3, 17, 8, 0, 29, 11])
    idx = torch.randint(0, 30, (6, 9), generator=g)
    idx[:, 0] = index
    return emb_s, emb_t, index, idx


def test_crd_two_steps_golden(batch):
    emb_s, emb_t, index, idx = batch
    torch.manual_seed(0)
    loss = CRDLoss(5, 7, num_samples=30, feat_dim=4, nce_k=8)
    e_s, e_t = emb_s.double().numpy(), emb_t.double().numpy()
    expected, z, mem_s, mem_t = ref_crd(loss, e_s, e_t, index.tolist(), idx.numpy())
    got = loss(emb_s=emb_s, emb_t=emb_t, index=index, contrast_index=idx)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    assert (loss.z_s.item(), loss.z_t.item()) == pytest.approx(z, rel=1e-5)
    np.testing.assert_allclose(loss.memory_s.numpy(), mem_s, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loss.memory_t.numpy(), mem_t, rtol=1e-5, atol=1e-6)
    # second step: Z stays as set by the first call, the updated banks are used
    idx2 = torch.flip(idx, dims=[1]).contiguous()
    idx2[:, 0] = index
    expected2, _, _, _ = ref_crd(loss, e_s[::-1].copy(), e_t, index.tolist(), idx2.numpy(), z=z)
    got2 = loss(emb_s.flip(0), emb_t, index, idx2)
    assert got2.item() == pytest.approx(expected2, rel=1e-5)
    assert (loss.z_s.item(), loss.z_t.item()) == pytest.approx(z, rel=1e-5)


def test_crd_eval_mode_keeps_memory(batch):
    emb_s, emb_t, index, idx = batch
    loss = CRDLoss(5, 7, num_samples=30, feat_dim=4, nce_k=8).eval()
    before = loss.memory_s.clone()
    loss(emb_s, emb_t, index, idx)
    assert torch.equal(loss.memory_s, before)


def test_crd_score_modes_agree(batch):
    emb_s, emb_t, index, idx = batch
    torch.manual_seed(0)
    gather = CRDLoss(5, 7, num_samples=30, feat_dim=4, nce_k=8, score_mode="gather").eval()
    bank = CRDLoss(5, 7, num_samples=30, feat_dim=4, nce_k=8, score_mode="bank").eval()
    bank.load_state_dict(gather.state_dict())
    a, b = gather(emb_s, emb_t, index, idx), bank(emb_s, emb_t, index, idx)
    a.backward()
    b.backward()
    assert a.item() == pytest.approx(b.item(), rel=1e-6)
    torch.testing.assert_close(gather.embed_s.weight.grad, bank.embed_s.weight.grad)


def test_crd_draws_negatives_with_own_index_first(batch):
    emb_s, emb_t, index, _ = batch
    torch.manual_seed(0)
    loss = CRDLoss(5, 7, num_samples=30, feat_dim=4, nce_k=8).eval()
    torch.manual_seed(42)
    drawn = loss(emb_s, emb_t, index)
    torch.manual_seed(42)
    idx = torch.randint(0, 30, (6, 9))
    idx[:, 0] = index
    assert drawn.item() == pytest.approx(loss(emb_s, emb_t, index, idx).item(), rel=1e-6)


def test_crd_defaults_and_shape_params():
    params = CRDLoss.shape_params({"emb_s": 64, "emb_t": 256, "num_samples": 500, "logits_s": 100})
    assert params == {"in_dim_s": 64, "in_dim_t": 256, "num_samples": 500}
    loss = build_loss("crd", **params)
    assert (loss.nce_k, loss.nce_t, loss.momentum, loss.embed_s.out_features) == (16384, 0.07, 0.5, 128)
    assert loss.memory_s.shape == (500, 128)


def test_crd_bad_index_is_one_sentence(batch):
    emb_s, emb_t, index, idx = batch
    loss = CRDLoss(5, 7, num_samples=30, feat_dim=4, nce_k=8)
    with pytest.raises(ValueError, match=r"^crd: 'index' holds values outside \[0, 29\]\.$"):
        loss(emb_s, emb_t, index + 20, idx)
    with pytest.raises(ValueError, match=r"^crd: input 'contrast_index' must be an int64 tensor of shape \(6, 9\)"):
        loss(emb_s, emb_t, index, idx[:, :5])


@pytest.mark.parametrize("mode", ["gather", "bank"])
def test_crd_training_step_backward_after_memory_update(batch, mode):
    """The bank is updated in place after the forward; backward must still work (both modes)."""
    emb_s, emb_t, index, idx = batch
    loss = CRDLoss(5, 7, num_samples=30, feat_dim=4, nce_k=8, score_mode=mode)
    s = emb_s.clone().requires_grad_(True)
    loss(s, emb_t, index, idx).backward()
    assert torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0
