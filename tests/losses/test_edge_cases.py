"""Every registered loss (inputs from its ``example_inputs()``): empty batch, batch of one,
mismatched shapes, non-finite input, autocast bf16, and torch.autograd.gradcheck in float64."""
import re

import pytest
import torch

from loss_cases import ALL_LOSSES, float_inputs, make_case, set_input, teacher_input
from kd_det.losses import LOSS_REGISTRY, ckd_loss, dcd_loss, hcl_loss, kd_loss, dkd_loss
from kd_det.losses.vocabulary import FEATURE_INPUTS


def _one_sentence(message: str) -> bool:
    return message.endswith(".") and ". " not in message and "\n" not in message


def _require_grad(kwargs):
    for _, t in float_inputs(kwargs):
        t.requires_grad_(True)
    return [t for _, t in float_inputs(kwargs)]


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_empty_batch_gives_connected_zero(name):
    loss, kwargs = make_case(name, 0)
    leaves = _require_grad(kwargs)
    value = loss(**kwargs)
    assert value.dim() == 0 and value.item() == 0.0 and value.requires_grad
    value.backward()
    for t in leaves:
        assert t.grad is not None and not torch.isnan(t.grad).any() and t.grad.abs().sum() == 0
    for p in loss.parameters():
        assert p.grad is not None and p.grad.abs().sum() == 0       # learnable parts stay in the graph


def test_empty_functional_forms():
    e = torch.zeros(0, 5, requires_grad=True)
    for value in (kd_loss(e, e, 2.0), dkd_loss(e, e, torch.zeros(0, dtype=torch.long), 1.0, 8.0, 4.0),
                  ckd_loss(e, e), dcd_loss(e, e, 2.0), hcl_loss([torch.zeros(0, 2, 3, 3)], [torch.zeros(0, 2, 3, 3)])):
        assert value.dim() == 0 and value.item() == 0.0 and not torch.isnan(value)
    kd_loss(e, e, 2.0).backward()
    assert e.grad is not None


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_batch_of_one_is_finite(name):
    loss, kwargs = make_case(name, 1)
    leaves = _require_grad(kwargs)
    value = loss(**kwargs)
    value.backward()
    assert torch.isfinite(value)
    for t in leaves:
        assert t.grad is None or torch.isfinite(t.grad).all()


def test_contrastive_losses_are_zero_for_one_sample():
    s, t = torch.randn(1, 5), torch.randn(1, 5)
    assert ckd_loss(s, t).item() == pytest.approx(0.0, abs=1e-6)
    assert dcd_loss(s, t, 5.0).item() == pytest.approx(0.0, abs=1e-7)


def _mismatch(name, kwargs):
    """Break the teacher side of a (batch 4) example; returns the expected message pattern."""
    inputs = LOSS_REGISTRY[name].INPUTS
    if "logits_t" in inputs:
        c = kwargs["logits_t"].shape[1]                             # 5 in the shipped examples
        kwargs["logits_t"] = torch.randn(kwargs["logits_t"].shape[0], c + 1)
        return rf"'logits_s' has shape \(4, {c}\) but 'logits_t' has shape \(4, {c + 1}\); they must match\."
    if "feats_t" in inputs:
        kwargs["feats_t"] = [torch.randn(5, *t.shape[1:]) for t in kwargs["feats_t"]]
        return r"level '0' has batch size 4 in 'feats_s' but 5 in 'feats_t'\."
    if "emb_t" in inputs:
        kwargs["emb_t"] = torch.randn(5, kwargs["emb_t"].shape[1])
        return r"'emb_s' has 4 rows but 'emb_t' has 5"
    key = teacher_input(kwargs)                                     # any other loss: one more teacher row
    assert key is not None, f"{name}: the example has no teacher-side floating input to break"
    kwargs[key] = torch.randn(5, *kwargs[key].shape[1:])
    return f"'{key}'"


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_mismatched_shapes_one_sentence(name):
    loss, kwargs = make_case(name, 4)
    pattern = _mismatch(name, kwargs)
    with pytest.raises(ValueError) as err:
        loss(**kwargs)
    message = str(err.value)
    assert message.startswith(f"{name}: ") and re.search(pattern, message), message
    assert _one_sentence(message), message


def test_mismatched_levels_and_target():
    loss, kwargs = make_case("reviewkd", 2)
    kwargs["feats_t"] = kwargs["feats_t"][:1]
    with pytest.raises(ValueError, match=r"^reviewkd: 'feats_s' \(2 maps\) and 'feats_t' \(1 maps\) must hold"):
        loss(**kwargs)
    loss, kwargs = make_case("dkd", 3)
    kwargs["target"] = torch.tensor([0, 1])
    with pytest.raises(ValueError, match=r"^dkd: 'target' has shape \(2,\) but the logits have 3 rows"):
        loss(**kwargs)
    kwargs["target"] = torch.tensor([0, 1, 5])
    with pytest.raises(ValueError, match=r"^dkd: 'target' holds class indices outside \[0, 4\]"):
        loss(**kwargs)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("name", ALL_LOSSES)
def test_non_finite_input_one_sentence(name, bad):
    loss, kwargs = make_case(name, 3)
    for key, tensor in float_inputs(kwargs):                        # each floating input in turn
        broken = tensor.clone()
        broken.view(-1)[0] = bad
        with pytest.raises(ValueError) as err:
            loss(**set_input(kwargs, key, broken))
        message = str(err.value)
        assert message.startswith(f"{name}: input '") and "non-finite" in message and _one_sentence(message), message
        assert key.split("[")[0] in message


def _to(kwargs, dtype):
    out = dict(kwargs)
    for key, value in float_inputs(kwargs):
        out = set_input(out, key, value.to(dtype))
    return out


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_autocast_bf16_gives_float32_equal_to_float32(name):
    loss, kwargs = make_case(name, 4)
    reference = loss(**kwargs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = loss(**kwargs)
        from_bf16 = loss(**_to(kwargs, torch.bfloat16))
    assert under_autocast.dtype == torch.float32 and from_bf16.dtype == torch.float32
    torch.testing.assert_close(under_autocast, reference, rtol=1e-6, atol=1e-6)
    # bf16 inputs are cast to float32 inside: same as casting them first
    cast_first = loss(**_to(_to(kwargs, torch.bfloat16), torch.float32))
    torch.testing.assert_close(from_bf16, cast_first, rtol=1e-6, atol=1e-6)


# Inputs left out of gradcheck: MSD's teacher maps also set the cell labels (an argmax), which
# finite differences can flip.
NOT_GRADCHECKED = {"msd": ("feats_t",)}


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_gradcheck_float64(name):
    has_maps = any(k in FEATURE_INPUTS for k in LOSS_REGISTRY[name].INPUTS)
    loss, kwargs = make_case(name, 2 if has_maps else 3, torch.float64)
    keys = [k for k, _ in float_inputs(kwargs) if k.split("[")[0] not in NOT_GRADCHECKED.get(name, ())]

    def fn(*tensors):
        call = dict(kwargs)
        for key, value in zip(keys, tensors):
            call = set_input(call, key, value)
        return loss(**call)

    inputs = [t.clone().requires_grad_(True) for k, t in float_inputs(kwargs) if k in keys]
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


def test_gradcheck_dcd_scale_and_bias():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(4, 3, generator=g, dtype=torch.float64), torch.randn(4, 3, generator=g, dtype=torch.float64)
    scale = torch.tensor(2.5, dtype=torch.float64)
    bias = torch.tensor(0.1, dtype=torch.float64)
    for direction in ("paper", "code"):
        assert torch.autograd.gradcheck(lambda a, b, c, d: dcd_loss(a, b, c, 0.5, d, direction),
                                        [x.clone().requires_grad_(True) for x in (s, t, scale, bias)])


def test_gradcheck_hcl_and_chunked_ckd():
    g = torch.Generator().manual_seed(0)
    fs = [torch.randn(2, 2, 5, 5, generator=g, dtype=torch.float64, requires_grad=True)]
    ft = [torch.randn(2, 2, 5, 5, generator=g, dtype=torch.float64, requires_grad=True)]
    assert torch.autograd.gradcheck(lambda a, b: hcl_loss([a], [b]), [fs[0], ft[0]])
    s = torch.randn(7, 4, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randn(7, 4, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: ckd_loss(a, b, 0.5, chunk_size=3), [s, t])
