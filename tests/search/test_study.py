"""A study read back: its default name, and its space parsed from the text it stored."""

from __future__ import annotations

import pytest

from lora_search._study import (ATTR_PROFILE, ATTR_SPACE, ATTR_SPACE_SOURCE, ATTR_SPACE_YAML, default_study_name,
                                stored_search_space, stored_space)
from lora_search.objectives import Workload
from lora_search.spaces import RunProfile, SpaceError, load_space

NARROW = "extends: quick-experiment\ntraining:\n  learning_rate: {low: 1.0e-3, high: 2.0e-3, log: true}\n"


def test_default_study_name_says_scenario_model_and_data():
    assert default_study_name("memory-constrained", Workload()) == "memory-constrained.minilm.fine-food"
    named = Workload(model="/models/My Tiny-BERT/", data="data/Reviews.2024.csv")
    assert default_study_name("standard", named) == "standard.my-tiny-bert.reviews-2024"


def test_a_stored_space_is_parsed_from_its_text_not_its_file(tmp_path):
    path = tmp_path / "narrow.yaml"  # never written: the study outlives its file
    attrs = {ATTR_SPACE: "narrow", ATTR_SPACE_SOURCE: str(path), ATTR_SPACE_YAML: NARROW}
    space = stored_search_space(attrs)
    assert space.name == "narrow" and space.yaml == NARROW and space.source == str(path)
    assert (space.params["learning_rate"].low, space.params["learning_rate"].high) == (1e-3, 2e-3)
    path.write_text(NARROW.replace("2.0e-3", "3.0e-3"))  # nor does a changed file change it
    assert stored_search_space(attrs).params["learning_rate"].high == 2e-3


def test_a_stored_built_in_space_is_loaded_by_name():
    space = stored_search_space({ATTR_SPACE: "quick-experiment", ATTR_SPACE_SOURCE: "built-in"})
    assert space.name == "quick-experiment" and space.yaml is None


def test_a_fault_in_stored_text_names_its_file():
    attrs = {ATTR_SPACE: "bad", ATTR_SPACE_SOURCE: "/gone/bad.yaml", ATTR_SPACE_YAML: "trainin: {}\n"}
    with pytest.raises(SpaceError, match="^/gone/bad.yaml: unknown key 'trainin'"):
        stored_search_space(attrs)


def test_a_profile_stored_before_model_sizes_resolves_without_a_size_band():
    import optuna

    study = optuna.create_study()
    study.set_user_attr(ATTR_SPACE, "quick-experiment")
    study.set_user_attr(ATTR_PROFILE, {"dataset_size": 4000, "accelerator": "cpu", "devices": 1, "gpu_memory_gb": None,
                                       "bf16_supported": False})  # no model_parameters key
    unknown = load_space("quick-experiment").resolve(RunProfile(4000))
    assert stored_space(study).get("learning_rate") == unknown.get("learning_rate")
    small = load_space("quick-experiment").resolve(RunProfile(4000, model_parameters=20_000))
    assert small.get("learning_rate") != unknown.get("learning_rate")  # so the key's absence is what is seen
