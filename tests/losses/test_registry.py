"""Registry, build_loss, parameter validation, DistillLoss (the no-Detectron2 rule: tests/test_core.py).

The per-loss tests are parametrised over LOSS_REGISTRY with each loss's ``example_inputs()``:
registering a loss (with its example) adds them, no test edit needed."""
import inspect
from pathlib import Path

import pytest
import torch
from torch import nn

from loss_cases import ALL_LOSSES, float_inputs, make_case
from kd_det.losses import (LOSS_REGISTRY, DistillLoss, LossExample, LossModule, NonFiniteInputError, build_loss, ckd_loss, kd_loss,
                           register_loss, vocabulary)

SHIPPED = ["kd", "dkd", "ckd", "dcd", "fitnet", "fgfi", "reviewkd", "msd", "crd", "pkd", "cwd", "mgd", "fgd"]


def test_registry_names():
    assert set(SHIPPED) <= set(LOSS_REGISTRY)      # extensions may add more


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_inputs_match_forward_signature(name):
    cls = LOSS_REGISTRY[name]
    params = [p for p in inspect.signature(cls.forward).parameters if p != "self"]
    assert tuple(params) == cls.INPUTS
    assert set(cls.INPUTS) <= set(vocabulary.INPUTS)
    assert set(cls.OPTIONAL_INPUTS) <= set(cls.INPUTS)
    assert cls.NAME == name
    assert isinstance(cls.shape_params({}), dict)
    assert isinstance(cls.label(), str) and cls.label()


def test_docs_list_every_loss_and_input():
    text = (Path(__file__).resolve().parents[2] / "docs" / "losses.md").read_text()
    table = text.split("## Input vocabulary", 1)[1].split("\n## ", 1)[0]
    assert [k for k in vocabulary.INPUTS if f"`{k}`" not in table] == []
    shipped = [n for n, c in LOSS_REGISTRY.items() if c.__module__.startswith("kd_det.losses.")]
    assert [n for n in shipped if f"| `{n}` | `{LOSS_REGISTRY[n].__name__}` |" not in text] == []


def test_unknown_name_is_one_sentence_listing_known():
    with pytest.raises(ValueError) as err:
        build_loss("fitnets")
    message = str(err.value)
    assert message == f"Unknown loss 'fitnets'; known losses: {', '.join(sorted(LOSS_REGISTRY))}."


# ----------------------------------------------------------------------------- example_inputs
def _same(a, b):
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, nn.Module):
        return all(_same(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_example_inputs_are_vocabulary_and_seeded(name):
    cls = LOSS_REGISTRY[name]
    example = cls.example_inputs(4, seed=3)
    assert isinstance(example, LossExample)
    loss = build_loss(name, **example.params)
    assert set(loss.required_inputs()) <= set(example.inputs) <= set(cls.INPUTS)
    assert set(example.shapes) <= set(vocabulary.INPUTS) | set(vocabulary.SHAPE_KEYS)
    assert cls.shape_params(example.shapes).items() <= example.params.items()   # shapes agree with params
    assert _same(example.inputs, cls.example_inputs(4, seed=3).inputs)
    assert not _same(example.inputs, cls.example_inputs(4, seed=4).inputs)
    for _, t in float_inputs(cls.example_inputs(2, dtype=torch.float64).inputs):
        assert t.dtype == torch.float64 and t.shape[0] == 2


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_forward_is_finite_scalar_with_finite_grads(name):
    loss, kwargs = make_case(name, 4)
    student = [t.requires_grad_(True) for k, t in float_inputs(kwargs)
               if k.split("[")[0] in vocabulary.STUDENT_INPUTS]
    assert student, f"{name}: the example has no student-side floating input"
    value = loss(**kwargs)
    assert value.dim() == 0 and value.dtype == torch.float32 and torch.isfinite(value)
    value.backward()
    for t in student:
        assert t.grad is not None and torch.isfinite(t.grad).all()
    for p in loss.parameters():
        assert p.grad is None or torch.isfinite(p.grad).all()


def test_loss_without_example_inputs_fails_clearly():
    class NoExample(LossModule):
        NAME = "no_example"
        INPUTS = ("logits_s", "logits_t")

        def forward(self, logits_s, logits_t):
            return (logits_s - logits_t).pow(2).mean()

    with pytest.raises(NotImplementedError, match=r"^NoExample \('no_example'\) has no example_inputs\(\); every "
                                                  r"registered loss needs one"):
        NoExample.example_inputs()
    with pytest.raises(ValueError, match=r"^register_loss\('no_example'\): NoExample has no example_inputs\(\)"):
        register_loss("no_example")(NoExample)
    assert "no_example" not in LOSS_REGISTRY


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
    ({"name": "kd", "weight": -1}, None,
     r"^DistillLoss: kd: spec key 'weight' must be a finite number >= 0, got -1\.$"),
    ({"name": "kd", "params": {"temp": 2}}, None, r"^kd: unknown parameter\(s\) \['temp'\]; known: temperature\.$"),
    ({"name": "kd", "inputs": {"emb_s": "x"}}, None, r"^DistillLoss: kd: spec key 'inputs' remaps \['emb_s'\]"),
    ({"name": "kd", "wieght": 1}, None, r"^DistillLoss: kd: unknown spec key 'wieght'; a spec takes name, "),
    ({"name": "crd"}, {"emb_s": 4}, r"^crd: parameter 'in_dim_t' is missing; give it in the spec's 'params'"),
    ({"name": "nope"}, None, r"^DistillLoss: Unknown loss 'nope'; known losses: "),
    ({"name": "dkd", "params": {"temperature": -3.0}}, None, r"^dkd: parameter 'temperature' must be"),
])
def test_distill_loss_bad_spec_is_one_sentence(spec, shapes, pattern):
    with pytest.raises(ValueError, match=pattern):
        DistillLoss([spec], shapes)


def test_distill_loss_explicit_params_win_over_shapes():
    loss = DistillLoss([{"name": "fitnet", "params": {"out_channels": [3]}}], {"feats_s": [2], "feats_t": [9]})
    assert loss.losses["fitnet"].out_channels == [3]


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_distill_loss_accepts_every_registered_loss(name):
    """Round trip: the example's shapes plus its other params build the same loss inside DistillLoss."""
    module, kwargs = make_case(name, 2)
    example = LOSS_REGISTRY[name].example_inputs(2)
    derived = LOSS_REGISTRY[name].shape_params(example.shapes)
    params = {k: v for k, v in example.params.items() if k not in derived}
    combo = DistillLoss([{"name": name, "weight": 0.5, "params": params}], example.shapes)
    combo.losses[name].load_state_dict(module.state_dict())
    combo.train(module.training)
    out = combo(**kwargs)
    assert out[f"loss_{name}"].item() == pytest.approx(0.5 * module(**kwargs).item(), rel=1e-5)
    assert combo.required_inputs() == set(module.required_inputs())


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
        out = loss(step=it, feats_s=fs, feats_t=ft, logits_s=s, logits_t=t)
        assert out["loss_fitnet"].item() == 0.0
        assert out["loss_kd"].item() == pytest.approx(2.0 * kd_loss(s, t, 4.0).item(), rel=1e-6)  # no delay
        out["loss_fitnet"].backward()
        grad = loss.losses["fitnet"].adapters[0].weight.grad
        assert grad is not None and grad.abs().sum() == 0  # DDP sees the parameter used
        loss.zero_grad()
    for it in (3, 100):
        out = loss(step=it, feats_s=fs, feats_t=ft, logits_s=s, logits_t=t)
        assert out["loss_fitnet"].item() == pytest.approx(ref, rel=1e-6) and ref > 0
    with pytest.raises(ValueError, match=r"^DistillLoss: loss 'fitnet' has start_iter 3, so forward\(\) needs the "
                                         r"current training progress \(step=\.\.\.\)\.$"):
        loss(feats_s=fs, feats_t=ft, logits_s=s, logits_t=t)
    assert DistillLoss([{"name": "kd", "start_iter": 0}])(logits_s=s, logits_t=t)["loss_kd"].item() > 0  # no step needed


def test_distill_loss_warmup_ramps_every_term_in():
    """One schedule for both tasks: with warmup W every term is x min(1, (step + 1) / W) (classification's
    KD.WARMUP_EPOCHS, step = epoch), on top of start_iter."""
    s, t = _logits()
    plain = DistillLoss([{"name": "kd", "weight": 2.0}])(logits_s=s, logits_t=t)["loss_kd"].item()
    loss = DistillLoss([{"name": "kd", "weight": 2.0}, {"name": "kd", "tag": "late", "start_iter": 2}], warmup=4)
    for step, ramp in ((0, 0.25), (1, 0.5), (3, 1.0), (10, 1.0)):
        out = loss(step=step, logits_s=s, logits_t=t)
        assert out["loss_kd"].item() == pytest.approx(plain * ramp, rel=1e-6)
        assert out["loss_late"].item() == (0.0 if step < 2 else pytest.approx(plain / 2 * ramp, rel=1e-6))
    with pytest.raises(ValueError, match=r"^DistillLoss: loss 'kd' warms up over 4 steps, so forward\(\) needs the "
                                         r"current training progress \(step=\.\.\.\)\.$"):
        loss(logits_s=s, logits_t=t)
    with pytest.raises(ValueError, match=r"^DistillLoss: 'warmup' must be an int >= 0"):
        DistillLoss([{"name": "kd"}], warmup=-1)


def test_a_tag_keeps_its_case_in_the_term_and_the_override():
    """One tag rule (losses.combine.spec_tag): tag DCD2 logs loss_DCD2 and KD.LOSSES.DCD2.weight overrides it."""
    from kd_det.config.schema import _apply_override, loss_specs
    from kd_det.config.classification import get_cls_cfg

    s, t = _logits()
    assert set(DistillLoss([{"name": "kd", "tag": "KD2"}])(logits_s=s, logits_t=t)) == {"loss_KD2"}
    cfg = get_cls_cfg()
    cfg.KD.LOSSES = [{"name": "kd", "tag": "KD2"}]
    assert _apply_override(cfg, "KD.LOSSES.KD2.weight", "2.0")
    assert loss_specs(cfg.KD.LOSSES, "classification")[0]["weight"] == 2.0
    assert loss_specs(cfg.KD.LOSSES, "classification")[0]["tag"] == "KD2"


def test_a_non_finite_input_is_named_by_the_term_tag():
    s, t = _logits()
    with pytest.raises(NonFiniteInputError) as e:
        DistillLoss([{"name": "kd", "tag": "kd_t4"}])(logits_s=s, logits_t=t * float("nan"))
    assert (e.value.loss, e.value.key) == ("kd_t4", "logits_t")


@pytest.mark.parametrize("value", [-1, 2.5, True, "10", None])
def test_distill_loss_bad_start_iter_is_one_sentence(value):
    with pytest.raises(ValueError, match=r"^DistillLoss: kd: spec key 'start_iter' must be an int >= 0 \(the first "
                                         r"training iteration the term counts\), got .*\.$"):
        DistillLoss([{"name": "kd", "start_iter": value}])
