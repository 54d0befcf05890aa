"""sigmoid_kd: a hand-computed value, zero for equal logits, the anchor sets, gradients to the student only,
parameter and label checks (the registry-wide tests run it on its example_inputs too)."""
import math

import pytest
import torch

from kd_det.losses import DistillLoss, SigmoidKDLoss, build_loss, sigmoid_kd_loss


def _binary_kl(t, s):
    """KL([p_t, 1 - p_t] || [p_s, 1 - p_s]) from the two probabilities."""
    return t * math.log(t / s) + (1 - t) * math.log((1 - t) / (1 - s))


def test_hand_computed_value_per_anchor_set():
    """Two classes, three anchors: a positive, a background one, an ignored one (T = 2)."""
    s = torch.tensor([[0.0, 2.0], [-2.0, 0.0], [5.0, 5.0]])
    t = torch.tensor([[2.0, 0.0], [0.0, -4.0], [-5.0, -5.0]])
    labels = torch.tensor([1, 2, -1])                       # K = 2: class 1, background, ignored
    sig = lambda z: 1 / (1 + math.exp(-z / 2.0))            # noqa: E731
    row = [sum(_binary_kl(sig(t[a, c].item()), sig(s[a, c].item())) for c in range(2)) for a in range(3)]
    positives = row[0] * 4.0                                # x T^2, one anchor in the set
    non_ignored = (row[0] + row[1]) / 2 * 4.0
    assert sigmoid_kd_loss(s, t, labels, 2.0, "positives").item() == pytest.approx(positives, rel=1e-6)
    assert sigmoid_kd_loss(s, t, labels, 2.0, "non_ignored").item() == pytest.approx(non_ignored, rel=1e-6)
    assert row[2] > 1.0  # the ignored anchor would have counted a lot: it is really left out
    module = build_loss("sigmoid_kd", temperature=2.0, anchor_set="non_ignored")
    assert module(s, t, labels).item() == pytest.approx(non_ignored, rel=1e-6)


def test_zero_for_equal_logits_positive_otherwise():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(50, 4, generator=g) * 3
    labels = torch.randint(-1, 5, (50,), generator=g)
    for anchor_set in ("positives", "non_ignored"):
        assert sigmoid_kd_loss(z, z.clone(), labels, 1.0, anchor_set).item() == pytest.approx(0.0, abs=1e-6)
        assert sigmoid_kd_loss(z + 0.5, z, labels, 1.0, anchor_set).item() > 1e-3


def test_gradient_reaches_the_student_only_and_is_the_soft_bce_gradient():
    g = torch.Generator().manual_seed(1)
    s = torch.randn(6, 3, generator=g, requires_grad=True)
    t = torch.randn(6, 3, generator=g, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 3, -1, 2])
    with torch.no_grad():
        t_frozen = t.clone()
    loss = sigmoid_kd_loss(s, t_frozen, labels, 2.0, "positives")
    loss.backward()
    keep = torch.tensor([True, True, True, False, False, True])
    expected = torch.zeros_like(s)
    expected[keep] = (torch.sigmoid(s[keep] / 2) - torch.sigmoid(t[keep] / 2)).detach() * 2.0 / keep.sum()
    torch.testing.assert_close(s.grad, expected, rtol=1e-5, atol=1e-7)
    assert t.grad is None


def test_an_empty_set_is_a_connected_zero():
    s = torch.randn(3, 2, requires_grad=True)
    value = sigmoid_kd_loss(s, torch.randn(3, 2), torch.tensor([2, -1, 2]), 1.0, "positives")  # background only
    assert value.item() == 0.0 and value.requires_grad
    value.backward()
    assert s.grad is not None and s.grad.abs().sum() == 0


@pytest.mark.parametrize("params, key", [({"temperature": 0}, "temperature"), ({"temperature": float("inf")},
                                          "temperature"), ({"anchor_set": "all"}, "anchor_set")])
def test_bad_parameter_is_one_sentence(params, key):
    with pytest.raises(ValueError, match=rf"^sigmoid_kd: parameter '{key}' must be "):
        SigmoidKDLoss(**params)
    with pytest.raises(ValueError, match=r"^DistillLoss|^sigmoid_kd"):
        DistillLoss([{"name": "sigmoid_kd", "params": params}])


def test_bad_labels_are_one_sentence():
    s, t = torch.zeros(3, 2), torch.zeros(3, 2)
    with pytest.raises(ValueError, match=r"^sigmoid_kd: 'anchor_labels' holds values outside \[-1, 2\] \(got -1\.\.3\)"):
        sigmoid_kd_loss(s, t, torch.tensor([-1, 0, 3]))
    with pytest.raises(ValueError, match=r"^sigmoid_kd: 'anchor_labels' has shape \(2,\) but the logits have 3 rows"):
        sigmoid_kd_loss(s, t, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"^sigmoid_kd: input 'anchor_labels' must be an integer tensor"):
        sigmoid_kd_loss(s, t, torch.zeros(3))
