"""CrossKD (issue 21): golden numerics from the authors' code (tests/fixtures/crosskd_golden.pt, written by
tests/fixtures/make_crosskd_golden.py from jbwang1997/CrossKD), the loss's zero at the teacher, ignored anchors,
parameter and input refusals. The cross-head pass through a real teacher head is tested in
tests/detection/test_crosskd_step.py."""
from pathlib import Path

import pytest
import torch

from kd_det.losses import CrossKDLoss, align_scale, build_loss

GOLDEN = torch.load(Path(__file__).resolve().parents[1] / "fixtures" / "crosskd_golden.pt", weights_only=True)
# mmdet's weight_reduce_loss divides by avg_factor + float32 eps (1.2e-7); kd_det divides by the positive count
TOL = dict(rtol=1e-7, atol=1e-10)


def test_align_scale_golden():
    case = GOLDEN["align"]
    s = case["feat_s"].clone().requires_grad_(True)
    out = align_scale(s, case["feat_t"])
    torch.testing.assert_close(out, case["value"], rtol=1e-12, atol=1e-12)
    (grad,) = torch.autograd.grad((out * case["probe"]).sum(), s)
    torch.testing.assert_close(grad, case["grad_s"], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["retinanet", "iou"])
def test_crosskd_golden(name):
    case = GOLDEN[name]
    logits = case["cross_logits_s"].clone().requires_grad_(True)
    boxes = case["cross_boxes_s"].clone().requires_grad_(True)
    loss = CrossKDLoss(**case["params"])
    value = loss(logits, case["anchor_logits_t"], boxes, case["anchor_boxes_t"], case["anchor_labels"])
    torch.testing.assert_close(value, case["value"], **TOL)
    g_logits, g_boxes = torch.autograd.grad(value, [logits, boxes])
    torch.testing.assert_close(g_logits, case["grad_cross_logits_s"], **TOL)
    torch.testing.assert_close(g_boxes, case["grad_cross_boxes_s"], **TOL)
    cls_only = CrossKDLoss(**{**case["params"], "reg_weight": 0.0})          # the two terms are not swapped
    torch.testing.assert_close(cls_only(case["cross_logits_s"], case["anchor_logits_t"], case["cross_boxes_s"],
                                        case["anchor_boxes_t"], case["anchor_labels"]), case["cls_value"], **TOL)


def test_zero_at_the_teacher_and_ignored_anchors_do_not_count():
    case = GOLDEN["retinanet"]
    t_logits, t_boxes, labels = case["anchor_logits_t"], case["anchor_boxes_t"], case["anchor_labels"]
    loss = CrossKDLoss()
    assert abs(loss(t_logits, t_logits, t_boxes, t_boxes, labels).item()) < 1e-12
    moved = case["cross_logits_s"].clone()
    moved[labels == -1] += 5.0                                               # changes only ignored anchors
    moved_boxes = case["cross_boxes_s"].clone()
    moved_boxes[labels == -1] += 3.0
    torch.testing.assert_close(loss(moved, t_logits, moved_boxes, t_boxes, labels),
                               loss(case["cross_logits_s"], t_logits, case["cross_boxes_s"], t_boxes, labels))


@pytest.mark.parametrize("params, match", [
    ({"beta": 0}, "'beta' must be a finite number > 0"),
    ({"cls_weight": -1}, "'cls_weight' must be a finite number >= 0"),
    ({"reg_loss": "l1"}, "'reg_loss' must be one of 'giou', 'iou', got 'l1'"),
])
def test_bad_parameters(params, match):
    with pytest.raises(ValueError, match=match):
        build_loss("crosskd", **params)


def test_bad_boxes_and_misaligned_heads():
    case = GOLDEN["retinanet"]
    with pytest.raises(ValueError, match=r"crosskd: input 'cross_boxes_s' must be a floating \(A, 4\) tensor"):
        CrossKDLoss()(case["cross_logits_s"], case["anchor_logits_t"], case["cross_boxes_s"][:-1],
                      case["anchor_boxes_t"], case["anchor_labels"])
    with pytest.raises(ValueError, match="CrossKD needs heads of the same width"):
        align_scale(torch.zeros(2, 4, 3, 3), torch.zeros(2, 8, 3, 3))


def test_align_scale_of_a_single_value_per_channel_is_finite():
    """A 1x1 level of one image (P7 of a small image): no spread to align; the teacher's map, zero gradient."""
    s = torch.randn(1, 4, 1, 1, requires_grad=True)
    t = torch.randn(1, 4, 1, 1)
    out = align_scale(s, t)
    torch.testing.assert_close(out, t)
    out.sum().backward()
    assert torch.equal(s.grad, torch.zeros_like(s))
