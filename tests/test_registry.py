"""The model registry: one entry per model name, what the runner and `xscene run` read."""

from __future__ import annotations

import subprocess
import sys

import pytest

from xscene_lib.data import DataError
from xscene_lib.experiments import registry
from xscene_lib.experiments.registry import ModelSpec, model_names, model_spec, model_specs, register_model
from xscene_lib.models.base import Recommender
from xscene_lib.models.ctr import ClickModel

# the runner's models and their order before the registry: the default runs must not change
TOP_K = ["popularity", "itemknn", "bpr", "single-scenario", "text-zero-shot", "article", "joint", "joint-no-text",
         "joint-no-id", "joint-no-adaptation", "sasrec", "seq-joint", "seq-joint-no-text"]
CLICK_THROUGH = ["shared-bottom", "star", "joint-ctr", "joint-ctr-no-text"]


def test_names_and_their_order_are_those_of_the_book() -> None:
    assert model_names("top-k") == TOP_K and model_names("click-through") == CLICK_THROUGH
    assert model_names() == TOP_K + CLICK_THROUGH


def test_the_filters_select_by_text_need_and_training() -> None:
    assert model_names("top-k", needs_text=True) == ["text-zero-shot", "article", "joint", "joint-no-id",
                                                     "joint-no-adaptation", "seq-joint"]
    assert model_names("click-through", needs_text=True) == ["joint-ctr"]
    assert model_names(trainable=False) == ["popularity", "itemknn", "text-zero-shot"]
    with pytest.raises(DataError, match="protocol='ranking' is unknown"):
        model_names("ranking")


@pytest.mark.parametrize("name", TOP_K + CLICK_THROUGH)
def test_each_factory_makes_an_unfitted_model_with_its_settings(name: str) -> None:
    spec = model_spec(name)
    model = spec.factory(7, False)
    assert not [attribute for attribute in vars(model) if attribute.endswith("_")]  # unfitted
    assert isinstance(model, ClickModel if spec.protocol == "click-through" else Recommender)
    if spec.trainable:
        full, smoke = model.num_epochs, spec.factory(7, True).num_epochs
        assert model.seed == 7 and smoke == 1 < full and model.show_progress is False
    else:
        assert not hasattr(model, "num_epochs")


def test_the_ablations_switch_off_one_part_each() -> None:
    assert model_spec("joint-no-text").factory(0, False).use_text is False
    assert model_spec("joint-no-id").factory(0, False).use_id is False
    assert model_spec("joint-no-adaptation").factory(0, False).adaptation is None
    assert model_spec("joint-ctr-no-text").factory(0, False).use_text is False


def test_unknown_names_are_clear_errors_listing_the_known_ones() -> None:
    with pytest.raises(DataError, match=r"unknown model 'deep-magic'; choose from \['popularity'.*'joint-ctr-no-text'"):
        model_spec("deep-magic")
    with pytest.raises(DataError, match=r"unknown click-through model 'bpr'; choose from \['shared-bottom'"):
        model_spec("bpr", "click-through")
    assert [spec.name for spec in model_specs(["joint", "bpr"], "top-k")] == ["joint", "bpr"]
    with pytest.raises(DataError, match=r"model\(s\) \['x', 'star'\]"):
        model_specs(["x", "joint", "star"], "top-k")


def test_a_model_of_your_own_can_be_registered_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "MODEL_SPECS", dict(registry.MODEL_SPECS))  # leave the real registry as it is
    mine = ModelSpec("mine", model_spec("popularity").factory, "popularity, renamed", False, "top-k", False)
    register_model(mine)
    assert model_names("top-k")[-1] == "mine" and model_spec("mine") is mine
    with pytest.raises(DataError, match="already registered"):
        register_model(mine)
    register_model(mine, replace=True)
    with pytest.raises(DataError, match="needs a ModelSpec"):
        register_model("mine")


@pytest.mark.parametrize("fields, message", [
    ({"protocol": "ranking"}, r"ModelSpec\(protocol='ranking'\) is unknown"),
    ({"name": " "}, "non-empty string"),
    ({"factory": None}, "callable"),
])
def test_bad_specs_are_refused(fields: dict, message: str) -> None:
    settings = {"name": "x", "factory": lambda seed, smoke: None, "description": "", "needs_text": False,
                "protocol": "top-k", "trainable": False} | fields
    with pytest.raises(DataError, match=message):
        ModelSpec(**settings)


def test_building_the_command_line_does_not_import_the_models() -> None:
    code = ("import sys; from xscene_lib.cli import build_parser; build_parser(); "
            "print('xscene_lib.models.joint' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
