"""kd_det/data/recipes.csv, the configs and docs/recipes.md cannot drift apart.

The csv holds one ``config,key,value,source`` line per hyper-parameter that differs from the
config's stock recipe (rules in kd_det/recipes.py); ``python tools/render_recipes.py`` rewrites
the doc and ``--check`` lists what disagrees.
"""
import os

import pytest

from kd_det import recipes

ENTRIES = recipes.read_entries()
CONFIGS = recipes.row_configs()


@pytest.mark.parametrize("config", CONFIGS)
def test_every_differing_value_has_a_sourced_entry(config):
    """Every hyper-parameter that differs from the stock recipe has an entry with the config's value and a source."""
    entries = [e for e in ENTRIES if e["config"] == config]
    issues = recipes.problems(entries, [config])
    assert not issues, "\n".join(issues) + "\n(update kd_det/data/recipes.csv, then python tools/render_recipes.py)"


def test_no_stale_entries():
    """Every entry names a row config and a key that differs there, with the config's value and a source."""
    stale = recipes.problems(ENTRIES, configs=[])
    assert not stale, "\n".join(stale)


def test_doc_is_the_rendering_of_the_csv():
    with open(recipes.DOC) as f:
        assert f.read() == recipes.render(ENTRIES), "docs/recipes.md is stale: run python tools/render_recipes.py"


def test_stock_recipes():
    """The stock recipe of each kind of row, as docs/recipes.md states it."""
    pair = "configs/COCO-Detection/distill/R101-R18/"
    assert recipes.stock_of(pair + "dcd.yaml") == pair + "Base-R101-R18.yaml"
    assert recipes.stock_of(pair + "Base-R101-R18.yaml") == "configs/Base-RCNN-FPN.yaml"
    cifar = "configs/classification/cifar100/resnet32x4-resnet8x4/kd.yaml"
    assert recipes.stock_of(cifar) == "configs/classification/Base-CIFAR100.yaml"
    assert recipes.stock_of("configs/classification/Base-CIFAR100.yaml") is None
    assert "configs/Base-RCNN-FPN.yaml" not in CONFIGS
    assert not any(os.path.basename(c).startswith("faster_rcnn_") and "COCO" in c for c in CONFIGS)
    # a method row's entries are its KD.* keys; label / output / weights keys are never asked for
    assert all(k.startswith("KD.") for k in recipes.differences(pair + "ckd_reviewkd.yaml"))
    assert recipes.differences(pair + "student.yaml") == {}


def test_a_changed_value_is_caught():
    """A config value that no longer matches its entry is reported, both ways."""
    entries = [dict(e) for e in ENTRIES if e["config"] == "configs/COCO-Detection/distill/R101-R18/reviewkd.yaml"]
    assert [e["key"] for e in entries] == ["KD.LOSSES.reviewkd.weight"]
    entries[0]["value"] = "1.3"
    issues = recipes.problems(entries, [entries[0]["config"]])
    assert issues == [f"{entries[0]['config']}: KD.LOSSES.reviewkd.weight: the config has 1.2, the csv 1.3"]
    entries[0].update(value="1.2", source=" ")
    assert recipes.problems(entries, [entries[0]["config"]])[0].endswith("empty source")
