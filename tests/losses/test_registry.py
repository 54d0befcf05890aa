"""Registry, build_loss, parameter validation, DistillLoss (the no-Detectron2 rule: tests/test_core.py)."""
import inspect

import pytest
import torch

from loss_cases import make_case
from kd_det.losses import LOSS_REGISTRY, DistillLoss, build_loss, ckd_loss, kd_loss

VOCABULARY = {"logits_s", "logits_t", "target", "emb_s", "emb_t", "feats_s", "feats_t", "index",
              "contrast_index", "teacher_classifier", "anchors", "gt_boxes", "object_id"}


def test_registry_names():
    assert sorted(LOSS_REGISTRY) == sorted(["kd", "dkd", "ckd", "dcd", "fitnet", "fgfi", "reviewkd", "msd", "crd"])


@pytest.mark.parametrize("name", sorted(LOSS_REGISTRY))
def test_inputs_match_forward_signature(name):
    cls = LOSS_REGISTRY[name]
    params = [p for p in inspect.signature(cls.forward).parameters if p != "self"]
    assert tuple(params) == cls.INPUTS
    assert set(cls.INPUTS) <= VOCABULARY
    assert set(cls.OPTIONAL_INPUTS) <= set(cls.INPUTS)
    assert cls.NAME == name
    assert isinstance(cls.shape_params({}), dict)


def test_unknown_name_is_one_sentence_listing_known():
    with pytest.raises(ValueError) as err:
        build_loss("fitnets")
    message = str(err.value)
    assert message == ("Unknown loss 'fitnets'; known losses: ckd, crd, dcd, dkd, fgfi, fitnet, kd, msd, reviewkd.")


def test_build_loss_is_case_insensitive_and_passes_params():
    loss = build_loss("DKD", alpha=1.0, beta=0.25, temperature=1.0)
    assert (loss.alpha, loss.beta, loss.temperature) == (1.0, 0.25, 1.0)


BAD_PARAMS = [
    ("kd", {"temperature": -1.0}, "temperature"),
    ("kd", {"temperature": float("nan")}, "temperature"),
    ("dkd", {"beta": -0.5}, "beta"),
    ("ckd", {"temperature": 0}, "temperature"),
    ("ckd", {"chunk_size": -2}, "chunk_size"),
    ("dcd", {"in_dim_s": 4, "in_dim_t": 4, "alpha": -1.0}, "alpha"),
    ("dcd", {"in_dim_s": 4, "in_dim_t": 4, "kl_direction": "sideways"}, "kl_direction"),
    ("dcd", {"in_dim_t": 4}, "in_dim_s"),
    ("fitnet", {"in_channels": [], "out_channels": [2]}, "in_channels"),
    ("fgfi", {"in_channels": [2], "out_channels": [2], "psi": 1.5}, "psi"),
    ("reviewkd", {"in_channels": [2], "out_channels": [2], "mid_channels": 0}, "mid_channels"),
    ("msd", {"in_channels": [2], "out_channels": [2], "temperature": -1.0}, "temperature"),
    ("crd", {"in_dim_s": 4, "in_dim_t": 4, "num_samples": 0}, "num_samples"),
    ("crd", {"in_dim_s": 4, "in_dim_t": 4, "num_samples": 9, "nce_momentum": 1.0}, "nce_momentum"),
]


@pytest.mark.parametrize("name,params,key", BAD_PARAMS)
def test_bad_parameter_is_one_sentence_naming_loss_and_key(name, params, key):
    with pytest.raises(ValueError) as err:
        build_loss(name, **params)
    message = str(err.value)
    assert message.startswith(f"{name}: parameter '{key}'") and message.endswith(".") and ". " not in message


def test_functional_forms_validate_too():
    x = torch.randn(3, 4)
    with pytest.raises(ValueError, match=r"^kd: parameter 'temperature' must be a finite number > 0, got -2\.0\.$"):
        kd_loss(x, x, -2.0)
    with pytest.raises(ValueError, match=r"^ckd: input 'logits_s' must be a 2-dim floating tensor"):
        ckd_loss(torch.randn(3), torch.randn(3))


# ----------------------------------------------------------------------------- DistillLoss
def _logits(n=6, c=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=g), torch.randn(n, c, generator=g)


def test_distill_loss_weights_and_named_terms():
    s, t = _logits()
    y = torch.tensor([0, 1, 2, 3, 4, 4])
    loss = DistillLoss([{"name": "kd", "weight": 0.5, "params": {"temperature": 2.0}},
                        {"name": "dkd", "params": {"beta": 0.25, "temperature": 1.0}},
                        {"name": "kd", "weight": 2.0}])
    out = loss(logits_s=s, logits_t=t, target=y, feats_s="ignored", unrelated=3)
    assert set(out) == {"loss_kd", "loss_dkd", "loss_kd_2"}
    assert out["loss_kd"].item() == pytest.approx(0.5 * kd_loss(s, t, 2.0).item(), rel=1e-6)
    assert out["loss_kd_2"].item() == pytest.approx(2.0 * kd_loss(s, t, 4.0).item(), rel=1e-6)
    assert out["loss_dkd"].item() == pytest.approx(build_loss("dkd", beta=0.25, temperature=1.0)(s, t, y).item())


def test_distill_loss_remap_and_shape_params():
    """DCD on detection logits: shape_params sees the remapped shapes; explicit params win."""
    shapes = {"logits_s": 81, "logits_t": 81, "feats_s": [8, 8], "feats_t": [16, 16], "num_classes": 80}
    loss = DistillLoss([{"name": "dcd", "inputs": {"emb_s": "logits_s", "emb_t": "logits_t"},
                         "params": {"proj_dim": 32}},
                        {"name": "reviewkd", "weight": 1.2, "params": {"mid_channels": 4}}], shapes)
    dcd, review = loss.losses["dcd"], loss.losses["reviewkd"]
    assert dcd.proj_s.in_features == 81 and dcd.proj_t.in_features == 81 and dcd.proj_s.out_features == 32
    assert review.in_channels == [8, 8] and review.out_channels == [16, 16] and review.mid_channels == 4
    assert loss.required_inputs() == {"logits_s", "logits_t", "feats_s", "feats_t"}
    s, t = _logits(c=81)
    fs = [torch.randn(2, 8, 8, 8), torch.randn(2, 8, 4, 4)]
    ft = [torch.randn(2, 16, 8, 8), torch.randn(2, 16, 4, 4)]
    out = loss(logits_s=s, logits_t=t, feats_s=fs, feats_t=ft)
    assert set(out) == {"loss_dcd", "loss_reviewkd"}
    # the learnable parts are submodules: trained and checkpointed with the model
    names = set(loss.state_dict())
    assert {"losses.dcd.tau", "losses.dcd.b", "losses.dcd.proj_s.weight"} <= names
    assert any(k.startswith("losses.reviewkd.abfs.0.att_conv") for k in names)
    sum(out.values()).backward()
    assert loss.losses["dcd"].tau.grad is not None and review.abfs[0].conv1[0].weight.grad is not None


def test_distill_loss_required_inputs_skip_features_when_unused():
    assert DistillLoss([{"name": "ckd"}, {"name": "kd"}]).required_inputs() == {"logits_s", "logits_t"}
    msd = DistillLoss([{"name": "msd", "params": {"in_channels": [2], "out_channels": [2],
                                                  "sample_classification": False}}])
    assert msd.required_inputs() == {"feats_s", "feats_t"} and msd.optional_inputs() == {"teacher_classifier"}
    crd = DistillLoss([{"name": "crd"}], {"emb_s": 4, "emb_t": 6, "num_samples": 10})
    assert crd.required_inputs() == {"emb_s", "emb_t", "index"} and crd.optional_inputs() == {"contrast_index"}


def test_distill_loss_missing_tensor_names_loss_and_key():
    loss = DistillLoss([{"name": "kd"}, {"name": "dcd", "inputs": {"emb_s": "logits_s", "emb_t": "pooled_t"}}],
                       {"logits_s": 5, "pooled_t": 7})
    s, t = _logits()
    with pytest.raises(ValueError, match=r"^DistillLoss: loss 'dcd' needs input 'emb_t' \(provided as 'pooled_t'\), "
                                         r"which was not given\.$"):
        loss(logits_s=s, logits_t=t)
    with pytest.raises(ValueError, match=r"^DistillLoss: loss 'kd' needs input 'logits_t', which was not given\.$"):
        loss(logits_s=s, pooled_t=torch.randn(6, 7))


@pytest.mark.parametrize("spec,shapes,pattern", [
    ({"name": "kd", "weight": -1}, None, r"^kd: spec key 'weight' must be a finite number >= 0, got -1\.$"),
    ({"name": "kd", "params": {"temp": 2}}, None, r"^kd: unknown parameter\(s\) \['temp'\]; known: temperature\.$"),
    ({"name": "kd", "inputs": {"emb_s": "x"}}, None, r"^kd: spec key 'inputs' remaps \['emb_s'\]"),
    ({"name": "kd", "wieght": 1}, None, r"^DistillLoss: spec #0 \('kd'\) has unknown key\(s\) \['wieght'\]"),
    ({"name": "crd"}, {"emb_s": 4}, r"^crd: parameter 'in_dim_t' is missing; give it in the spec's 'params'"),
    ({"name": "nope"}, None, r"^Unknown loss 'nope'; known losses: "),
    ({"name": "dkd", "params": {"temperature": -3.0}}, None, r"^dkd: parameter 'temperature' must be"),
])
def test_distill_loss_bad_spec_is_one_sentence(spec, shapes, pattern):
    with pytest.raises(ValueError, match=pattern):
        DistillLoss([spec], shapes)


def test_distill_loss_explicit_params_win_over_shapes():
    loss = DistillLoss([{"name": "fitnet", "params": {"out_channels": [3]}}], {"feats_s": [2], "feats_t": [9]})
    assert loss.losses["fitnet"].out_channels == [3]


def test_distill_loss_accepts_every_registered_loss():
    for name in LOSS_REGISTRY:
        module, kwargs = make_case(name, 2)
        combo = DistillLoss([{"name": name, "weight": 0.5, "params": _init_params(module)}])
        combo.losses[name].load_state_dict(module.state_dict())
        combo.train(module.training)
        out = combo(**kwargs)
        assert out[f"loss_{name}"].item() == pytest.approx(0.5 * module(**kwargs).item(), rel=1e-5)


def _init_params(module):
    """Constructor params of the cases in loss_cases.make_case."""
    name = module.NAME
    if name in ("kd", "dkd", "ckd"):
        return {}
    if name == "dcd":
        return {"in_dim_s": 5, "in_dim_t": 6, "proj_dim": 4}
    if name == "crd":
        return {"in_dim_s": 5, "in_dim_t": 6, "num_samples": 20, "feat_dim": 4, "nce_k": 5}
    if name == "msd":
        return {"in_channels": [2, 3], "out_channels": [3, 4], "grids": (1, 2)}
    params = {"in_channels": [2, 3], "out_channels": [3, 2]}
    if name == "reviewkd":
        params["mid_channels"] = 2
    return params


# ----------------------------------------------------------------------------- start_iter (per-term delay)
def test_distill_loss_start_iter_zero_before_weighted_after():
    """Before start_iter the term is computed times 0 (its parameters still get gradients); from it on, weighted."""
    fs, ft = [torch.randn(2, 3, 4, 4)], [torch.randn(2, 5, 4, 4)]
    s, t = _logits()
    loss = DistillLoss([{"name": "fitnet", "weight": 0.5, "start_iter": 3}, {"name": "kd", "weight": 2.0}],
                       {"feats_s": [3], "feats_t": [5]})
    assert loss.start_iters == {"fitnet": 3, "kd": 0}
    ref = 0.5 * loss.losses["fitnet"](fs, ft).item()
    for it in (0, 2):
        out = loss(iteration=it, feats_s=fs, feats_t=ft, logits_s=s, logits_t=t)
        assert out["loss_fitnet"].item() == 0.0
        assert out["loss_kd"].item() == pytest.approx(2.0 * kd_loss(s, t, 4.0).item(), rel=1e-6)  # no delay
        out["loss_fitnet"].backward()
        grad = loss.losses["fitnet"].adapters[0].weight.grad
        assert grad is not None and grad.abs().sum() == 0  # DDP sees the parameter used
        loss.zero_grad()
    for it in (3, 100):
        out = loss(iteration=it, feats_s=fs, feats_t=ft, logits_s=s, logits_t=t)
        assert out["loss_fitnet"].item() == pytest.approx(ref, rel=1e-6) and ref > 0
    with pytest.raises(ValueError, match=r"^DistillLoss: loss 'fitnet' has start_iter 3, so forward\(\) needs the "
                                         r"current training iteration \(iteration=\.\.\.\)\.$"):
        loss(feats_s=fs, feats_t=ft, logits_s=s, logits_t=t)
    assert DistillLoss([{"name": "kd", "start_iter": 0}])(logits_s=s, logits_t=t)["loss_kd"].item() > 0  # no iteration needed


@pytest.mark.parametrize("value", [-1, 2.5, True, "10", None])
def test_distill_loss_bad_start_iter_is_one_sentence(value):
    with pytest.raises(ValueError, match=r"^kd: spec key 'start_iter' must be an int >= 0 \(the first iteration the "
                                         r"term counts\), got .*\.$"):
        DistillLoss([{"name": "kd", "start_iter": value}])
