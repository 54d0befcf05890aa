"""kd_det.core, the reliability core both engines share: atomic writes, random states, AMP mode,
the cross-process finite check and the resumable sampler; and that it never imports Detectron2."""
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch

from kd_det.core import (FrozenTeacherMixin, ResumableSampler, atomic_save, atomic_write, atomic_write_text,
                         get_rng_state, import_custom_modules, isolated_rng, non_finite_term, resolve_amp,
                         resolve_teacher_mode, seed_all, set_rng_state)
from kd_det.errors import ConfigError


# Every module of these packages imports without Detectron2; kd_det.config.detection is Detectron2's
# config (get_cfg and the project's keys) and is the one exception.
DETECTRON2_FREE = ["kd_det.core", "kd_det.losses", "kd_det.config", "kd_det.classification"]
DETECTRON2_CONFIG = "kd_det.config.detection"

_IMPORT_EACH = f"""
import importlib, pkgutil, sys
def detectron2():
    return {{m for m in sys.modules if m == "detectron2" or (m.startswith("detectron2.") and m != "detectron2._C")}}
names = []
for package in {DETECTRON2_FREE!r}:
    names.append(package)
    names += [m.name for m in pkgutil.walk_packages(importlib.import_module(package).__path__, package + ".")
              if m.name != {DETECTRON2_CONFIG!r} and not m.name.endswith(".__main__")]
for name in names:
    importlib.import_module(name)
    if detectron2():
        sys.exit(name + " imports " + ", ".join(sorted(detectron2())[:3]))
print(len(names), "modules")
"""


@pytest.mark.slow
def test_no_detectron2_import():
    """The Detectron2-free packages (the engines' core, the loss library, the configuration but Detectron2's own,
    the classification path) import nothing from Detectron2: each module is imported in turn in a fresh
    interpreter, and the first one that brings Detectron2 in is named."""
    result = subprocess.run([sys.executable, "-c", _IMPORT_EACH], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert int(result.stdout.split()[0]) > 30  # the packages were walked, not just their __init__


def test_atomic_write_uses_a_unique_temporary_file_in_the_same_folder(tmp_path):
    path = str(tmp_path / "a.json")
    names = []

    def write(text, before):
        def fill(f):
            names.append(f.name)
            f.write(text.encode())
            f.flush()
            assert open(path).read() == before  # the new text is not visible before the rename
        return fill

    atomic_write_text(path, "old")
    atomic_write(path, write("new", "old"))
    atomic_write(path, write("newer", "new"))
    assert open(path).read() == "newer"
    assert len(set(names)) == 2 and all(os.path.dirname(n) == str(tmp_path) and n != path for n in names)
    assert os.listdir(tmp_path) == ["a.json"]  # the temporary files were renamed away


def test_atomic_write_keeps_the_old_file_and_removes_the_temporary_one_on_failure(tmp_path):
    path = str(tmp_path / "model.pth")
    atomic_save({"iteration": 1}, path)

    def fail(f):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt  # any exception, even this one

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, fail)
    assert torch.load(path, weights_only=True) == {"iteration": 1}
    assert os.listdir(tmp_path) == ["model.pth"]


def test_random_states_round_trip_through_a_weights_only_file(tmp_path):
    seed_all(5)
    state = get_rng_state()
    expected = (random.random(), np.random.rand(3), torch.rand(3))
    torch.save(state, tmp_path / "rng.pth")
    seed_all(6)
    set_rng_state(torch.load(tmp_path / "rng.pth", weights_only=True))
    got = (random.random(), np.random.rand(3), torch.rand(3))
    assert got[0] == expected[0] and np.array_equal(got[1], expected[1]) and torch.equal(got[2], expected[2])


def test_isolated_rng_leaves_the_streams_as_they_were():
    seed_all(7)
    expected = (random.random(), np.random.rand(2), torch.rand(2))
    seed_all(7)
    with isolated_rng():
        random.random(), np.random.rand(5), torch.rand(5)
    got = (random.random(), np.random.rand(2), torch.rand(2))
    assert got[0] == expected[0] and np.array_equal(got[1], expected[1]) and torch.equal(got[2], expected[2])


@pytest.mark.parametrize("device, enabled, precision, dtype, scaler", [
    ("cpu", False, "", None, False),
    ("cuda:0", False, "bfloat16", None, False),
    ("cuda", True, "", torch.float16, True),
    ("cuda:1", True, "bfloat16", torch.bfloat16, False),
    ("cpu", True, "", torch.bfloat16, False),
    (torch.device("cpu"), True, "float16", torch.float16, True),
])
def test_amp_mode(device, enabled, precision, dtype, scaler):
    mode = resolve_amp(device, enabled, precision)
    assert (mode.dtype, mode.needs_scaler, mode.enabled) == (dtype, scaler, dtype is not None)
    assert mode.device_type == ("cuda" if str(device).startswith("cuda") else "cpu")


def test_amp_mode_names_the_key_of_a_bad_precision():
    with pytest.raises(ConfigError, match=r"^SOLVER\.AMP\.PRECISION is 'fp8'; use \"float16\", \"bfloat16\" or \"\" "
                                          r"\(automatic\)\.$"):
        resolve_amp("cuda", True, "fp8")


def test_amp_autocast_runs_in_the_resolved_dtype():
    x = torch.randn(2, 3)
    with resolve_amp("cpu", True).autocast():
        assert (x @ x.T).dtype == torch.bfloat16
    with resolve_amp("cpu", False).autocast():
        assert (x @ x.T).dtype == torch.float32
    assert not resolve_amp("cpu", True).grad_scaler().is_enabled()


def test_non_finite_term_in_one_process():
    assert non_finite_term({"loss_a": torch.tensor(1.0), "loss_b": torch.tensor([2.0], dtype=torch.bfloat16)}) is None
    terms = {"loss_z": torch.tensor(float("nan")), "loss_b": torch.tensor(float("inf")), "loss_a": torch.tensor(0.0)}
    assert non_finite_term(terms) == "Loss term loss_b is inf"  # the first bad term by name


def test_resumable_sampler_skips_consumed_indices():
    inner = torch.utils.data.SequentialSampler(range(10))
    assert list(ResumableSampler(inner, start=4)) == [4, 5, 6, 7, 8, 9]


# ------------------------------------------------------------------ frozen teacher
class _Owner(FrozenTeacherMixin):
    def __init__(self, teacher):
        super().__init__()
        self.student = torch.nn.Linear(3, 2)
        self.teacher = teacher


def test_frozen_teacher_is_outside_the_module_tree_and_stays_frozen():
    teacher = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    owner = _Owner(teacher).train()
    assert owner.teacher is teacher and not teacher.training       # eval() whatever train() is called on the owner
    assert not any(p.requires_grad for p in teacher.parameters())
    assert set(owner.state_dict()) == {"student.weight", "student.bias"}  # not in state_dict, parameters(), modules()
    assert len(list(owner.parameters())) == 2 and teacher not in list(owner.modules())
    owner.to(torch.float64)                                         # .to() / .half() / .cuda() move it with the owner
    assert teacher[0].weight.dtype == torch.float64 and not teacher[0].weight.requires_grad
    owner.eval().train()
    assert owner.training and not teacher.training
    owner.teacher = None
    assert owner.teacher is None and owner.train() is owner


@pytest.mark.parametrize("precision, autocast_in, out_dtype", [
    ("", True, torch.bfloat16),          # follows the caller's autocast
    ("", False, torch.float32),
    ("float32", True, torch.float32),    # autocast off for the teacher alone
    ("bfloat16", False, torch.bfloat16),
])
def test_teacher_mode_context(precision, autocast_in, out_dtype):
    mode = resolve_teacher_mode("cpu", precision)
    x = torch.randn(2, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast_in), mode.context():
        y = x @ x.T
        assert not torch.is_grad_enabled()
    assert y.dtype == out_dtype
    out = mode.outputs({"a": y, "b": [y, torch.arange(3)]})
    expected = torch.float32 if precision == "bfloat16" else out_dtype  # only a fixed low precision is cast back
    assert out["a"].dtype == out["b"][0].dtype == expected and out["b"][1].dtype == torch.int64


def test_teacher_mode_prepares_channels_last_and_refuses_bad_values():
    conv = torch.nn.Conv2d(3, 4, 3)
    assert resolve_teacher_mode("cpu", "", True).prepare(conv).weight.is_contiguous(memory_format=torch.channels_last)
    assert resolve_teacher_mode("cuda:0", "float16").dtype == torch.float16
    with pytest.raises(ConfigError, match=r"^KD\.TEACHER\.PRECISION is 'fp16'; use "):
        resolve_teacher_mode("cpu", "fp16")
    with pytest.raises(ConfigError, match=r"^KD\.TEACHER\.PRECISION is 'float16' but the teacher runs on the CPU"):
        resolve_teacher_mode("cpu", "float16")


# ------------------------------------------------------------------ KD.CUSTOM_IMPORTS
def test_custom_imports_are_read_through_the_base_chain_before_the_merge(tmp_path, monkeypatch):
    pkg = tmp_path / "pkgs" / "my_ext"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "one.py").write_text("LOADED = True\n")
    monkeypatch.syspath_prepend(str(tmp_path / "pkgs"))
    (tmp_path / "base.yaml").write_text("KD:\n  CUSTOM_IMPORTS: [my_ext.one]\n")
    child = tmp_path / "child.yaml"
    child.write_text('_BASE_: "base.yaml"\nKD:\n  LOSSES: [{name: kd}]\nNOT_A_KEY: 1\n')  # raw: no merge, no key check
    try:
        assert import_custom_modules(str(child)) == ["my_ext.one"] and sys.modules["my_ext.one"].LOADED
        assert import_custom_modules(str(child), ["KD.CUSTOM_IMPORTS", "[]"]) == []  # the override replaces the file's
        assert import_custom_modules("") == [] and import_custom_modules(str(tmp_path / "base.yaml"), ["SEED", "1"])
    finally:
        for name in ("my_ext.one", "my_ext"):
            sys.modules.pop(name, None)


def test_custom_imports_errors_name_the_config_file_and_the_module(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "broken_ext.py").write_text("raise RuntimeError('boom')\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("KD:\n  CUSTOM_IMPORTS: [no_such_ext.losses]\n")
    with pytest.raises(ConfigError, match=rf"^KD\.CUSTOM_IMPORTS of config file {cfg} names module "
                                          r"'no_such_ext\.losses', which Python cannot find \(.*\); install its "
                                          r"package or put its folder on PYTHONPATH\.$"):
        import_custom_modules(str(cfg))
    cfg.write_text("KD:\n  CUSTOM_IMPORTS: [broken_ext]\n")
    with pytest.raises(ConfigError, match=rf"^KD\.CUSTOM_IMPORTS of config file {cfg}: importing module 'broken_ext' "
                                          r"failed with RuntimeError: boom\.$"):
        import_custom_modules(str(cfg))
    sys.modules.pop("broken_ext", None)
    cfg.write_text("KD:\n  CUSTOM_IMPORTS: my_ext.losses\n")
    with pytest.raises(ConfigError, match=r"is 'my_ext\.losses'; it must be a list of module names"):
        import_custom_modules(str(cfg))
