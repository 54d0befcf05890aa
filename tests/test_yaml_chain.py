"""kd_det.config.yaml_chain: the one raw reader of a config's ``_BASE_`` chain agrees with fvcore's merge."""
import glob
import math
import os

import pytest
from fvcore.common.config import CfgNode

from kd_det import REPO_ROOT
from kd_det.errors import ConfigError
from kd_det.config.yaml_chain import chain_value, merged_chain, yaml_chain


def _write(path, text):
    path.write_text(text)
    return str(path)


def test_chain_is_nearest_first_and_values_come_from_the_nearest_file(tmp_path):
    (tmp_path / "sub").mkdir()
    _write(tmp_path / "Base.yaml", "KD:\n  LOSSES: [{name: kd}]\n  LABEL: {METHOD: KD, DATASET: coco}\n")
    _write(tmp_path / "sub" / "mid.yaml", "_BASE_: ../Base.yaml\nKD:\n  LABEL: {METHOD: student}\n")
    leaf = _write(tmp_path / "sub" / "leaf.yaml", "_BASE_: mid.yaml\nSEED: 3\n")
    chain = yaml_chain(leaf)
    assert [os.path.basename(p) for p, _ in chain] == ["leaf.yaml", "mid.yaml", "Base.yaml"]
    assert chain_value(chain, "KD.LABEL.METHOD") == (2, "student")
    assert chain_value(chain, "KD.LOSSES") == (3, [{"name": "kd"}])
    assert chain_value(chain, "KD.TEACHER.WEIGHTS") == (math.inf, None)
    merged = merged_chain(chain)
    assert merged == {"KD": {"LOSSES": [{"name": "kd"}], "LABEL": {"METHOD": "student", "DATASET": "coco"}}, "SEED": 3}
    assert chain[2][1]["KD"]["LABEL"]["METHOD"] == "KD", "merging must not change the files' own dicts"


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(REPO_ROOT, "configs", "**", "*.yaml"),
                                               recursive=True))[::15])
def test_merged_chain_equals_fvcore_on_the_repository_configs(path):
    expected = CfgNode.load_yaml_with_base(path)
    expected.pop("_BASE_", None)
    assert merged_chain(yaml_chain(path)) == expected


def test_a_loop_a_missing_base_and_a_non_mapping_are_named(tmp_path):
    a = _write(tmp_path / "a.yaml", "_BASE_: b.yaml\n")
    _write(tmp_path / "b.yaml", "_BASE_: a.yaml\n")
    with pytest.raises(ConfigError, match=r"a\.yaml: its _BASE_ chain loops"):
        yaml_chain(a)
    c = _write(tmp_path / "c.yaml", "_BASE_: gone.yaml\nSEED: 1\n")
    with pytest.raises(FileNotFoundError):
        yaml_chain(c)
    assert [os.path.basename(p) for p, _ in yaml_chain(c, missing_ok=True)] == ["c.yaml"]
    d = _write(tmp_path / "d.yaml", "- just\n- a list\n")
    with pytest.raises(ConfigError, match=r"d\.yaml does not hold a mapping"):
        yaml_chain(d)
