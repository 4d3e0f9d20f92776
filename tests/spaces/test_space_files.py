"""Space files: the built-in scenarios, `extends`, and every validation message."""

import pytest

from lora_search.spaces import RunProfile, SpaceError, StudyDefaults, get_preset, load_space, preset_names, scenario_names

SCENARIOS = ["quick-experiment", "standard", "production", "memory-constrained", "time-constrained"]


def test_scenario_names_in_guide_order():
    assert scenario_names() == SCENARIOS


@pytest.mark.parametrize("name", SCENARIOS)
def test_builtin_scenarios_load(name):
    space = load_space(name)
    assert space.name == name
    assert space.baseline_preset == name and name in preset_names()
    assert space.description and "\n" not in space.description
    assert "built-in" in space.source


def test_study_defaults_from_the_guide():
    assert load_space("time-constrained").study_defaults == StudyDefaults(timeout_seconds=1800.0, pruner="percentile")
    assert load_space("quick-experiment").study_defaults.timeout_seconds == 7200.0
    assert load_space("standard").study_defaults.timeout_seconds is None
    # rungs where the benchmark measured them winning on the real run (benchmarks/README.md, section 7)
    assert {name: load_space(name).study_defaults.rungs for name in SCENARIOS} == {
        "quick-experiment": None, "standard": 3, "production": None, "memory-constrained": None, "time-constrained": None}
    # fewer trials where the rungs retrain the best quarter (what the benchmark measured)
    assert {name: load_space(name).study_defaults.trials for name in SCENARIOS} == {
        "quick-experiment": None, "standard": 16, "production": None, "memory-constrained": None, "time-constrained": None}


def test_study_rungs_and_trials_from_a_file_and_inherited_by_extends(tmp_path):
    path = _write(tmp_path, "extends: quick-experiment\nstudy:\n  rungs: 3\n  trials: 12\n", "base.yaml")
    assert (load_space(path).study_defaults.rungs, load_space(path).study_defaults.trials) == (3, 12)
    inherited = load_space(_write(tmp_path, "extends: standard\nstudy:\n  pruner: median\n")).study_defaults
    assert (inherited.rungs, inherited.trials) == (3, 16)
    cleared = load_space(_write(tmp_path, "extends: standard\nstudy:\n  rungs: null\n  trials: null\n")).study_defaults
    assert (cleared.rungs, cleared.trials) == (None, None)


def test_early_stopping_per_scenario():
    params = {name: load_space(name).params for name in SCENARIOS}
    assert (params["quick-experiment"]["early_stopping_patience"].value, params["quick-experiment"]["early_stopping_threshold"].value) == (2, 0.001)
    assert (params["production"]["early_stopping_patience"].value, params["production"]["early_stopping_threshold"].value) == (5, 0.0001)
    assert params["standard"]["early_stopping_patience"].value == get_preset("standard").early_stopping_patience


def test_every_guide_parameter_is_in_every_scenario():
    import yaml

    from lora_search.spaces import _space

    for name in SCENARIOS:
        data = yaml.safe_load((_space._scenario_files()[name]).read_text())
        written = {f"training.{k}" for k in data["training"]} | {f"lora.{k}" for k in data["lora"]}
        expected = {f"training.{k}" for k in _catalog_keys("training")} | {f"lora.{k}" for k in _catalog_keys("lora")}
        assert written == expected, name


def _catalog_keys(section):
    from lora_search.spaces._catalog import keys_in

    return keys_in(section)


def _write(tmp_path, text, name="space.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_extends_overrides_some_parameters(tmp_path):
    path = _write(tmp_path, "extends: memory-constrained\ntraining:\n  learning_rate: {low: 2.0e-4, high: 4.0e-4, log: true}\nlora:\n  r: 8\n")
    space = load_space(path)
    base = load_space("memory-constrained")
    assert space.name == "space" and space.source == path
    assert space.baseline_preset == "memory-constrained"
    assert space.effective_batch == base.effective_batch
    assert space.params["learning_rate"].low == 2e-4
    assert space.params["lora.r"].value == 8
    assert space.params["per_device_train_batch_size"] == base.params["per_device_train_batch_size"]
    resolved = space.resolve(RunProfile(4000))
    assert resolved.get("lora.r").kind == "fixed"
    assert 2e-4 <= resolved.baseline().learning_rate <= 4e-4


def test_file_without_extends_fixes_the_rest_at_defaults(tmp_path):
    space = load_space(_write(tmp_path, "training:\n  learning_rate: {choices: [1.0e-4, 3.0e-4]}\n"))
    resolved = space.resolve(RunProfile(4000))
    assert [p.key for p in resolved.params if p.sampled] == ["learning_rate"]
    assert space.baseline_preset == "standard"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("trainng: {}\n", "unknown key 'trainng'"),
        ("training:\n  learnig_rate: 0.001\n", "unknown training parameter 'learnig_rate'"),
        ("lora:\n  rank: 8\n", "unknown lora parameter 'rank'"),
        ("training:\n  learning_rate: {low: 1.0e-3, high: 1.0e-4}\n", "training.learning_rate: low 0.001 is above high 0.0001"),
        ("training:\n  weight_decay: {low: 0.0, high: 0.1, log: true}\n", "training.weight_decay: a log-scale range needs low > 0"),
        ("lora:\n  r: {choices: []}\n", "lora.r: choices must be a non-empty list"),
        ("lora:\n  r: {choices: [8, 8]}\n", "lora.r: choices repeat"),
        ("lora:\n  r: eight\n", "lora.r: expected an integer, got 'eight'"),
        ("lora:\n  r: 8.5\n", "lora.r: expected an integer"),
        ("lora:\n  use_dora: 'no'\n", "lora.use_dora: expected true or false"),
        ("training:\n  learning_rate: 1e-5\n", "training.learning_rate: '1e-5' was read as text.*write 1.0e-5"),
        ("training:\n  learning_rate: {low: 1e-5, high: 1.0e-3}\n", "training.learning_rate.low: '1e-5' was read as text.*write 1.0e-5"),
        ("training:\n  learning_rate: 2.0\n", "training.learning_rate: must be a number in \\(0, 1\\)"),
        ("training:\n  lr_scheduler_type: cosine_restarts\n", "training.lr_scheduler_type: 'cosine_restarts' is not one of"),
        ("training:\n  lr_scheduler_type: {rule: dataset-size}\n", "training.lr_scheduler_type: has no rule"),
        ("training:\n  learning_rate: {rule: dataset-size}\n", "unknown rule 'dataset-size'.*model-size"),
        ("training:\n  warmup_ratio: {rule: fixed}\n", "unknown rule 'fixed'.*total-steps"),
        ("training:\n  warmup_ratio: {low: 0.0, high: 0.1, rule: total-steps}\n", "derives the value"),
        ("training:\n  learning_rate: {low: 1.0e-4}\n", "a range needs both low and high"),
        ("training:\n  learning_rate: {low: 1.0e-4, high: 1.0e-3, choices: [1.0e-4]}\n", "either low/high or choices"),
        ("training:\n  learning_rate: {low: 1.0e-4, high: 1.0e-3, log: true, step: 1.0e-4}\n", "cannot have a step"),
        ("training:\n  learning_rate: {low: 1.0e-4, high: 1.0e-3, scale: log}\n", "unknown setting 'scale'"),
        ("training:\n  learning_rate: {}\n", "empty setting"),
        ("training:\n  learning_rate: [1.0e-4]\n", "give a value"),
        ("training:\n  precision: {low: 1, high: 2}\n", "takes choices, not low/high"),
        ("training:\n  per_device_train_batch_size: {low: 2, high: 8}\n", "takes choices"),
        ("training:\n  per_device_train_batch_size: {rule: gpu-memory}\n", "give choices too"),
        ("training:\n  gradient_accumulation_steps: {choices: [1, 2]}\n", "cannot be searched"),
        ("training:\n  gradient_accumulation_steps: {rule: effective-batch}\n", "needs constraints.effective_batch_size"),
        ("constraints:\n  effective_batch_size: {low: 64, high: 32}\n", "low 64 is above high 32"),
        ("constraints:\n  effective_batch_size: 32\n", "give the band as"),
        ("extends: standard\nconstraints:\n  effective_batch_size: {low: 2, high: 4}\ntraining:\n  per_device_train_batch_size: {choices: [8, 1024]}\n",
         "the smallest per-device batch 8 x 1 accumulation already exceeds the effective batch band's high 4"),
        ("constraints:\n  batch: {low: 1, high: 2}\n", "unknown constraint 'batch'"),
        ("training:\n  eval_steps: {choices: [50, 100]}\n", "save_steps.*rule: eval-steps"),
        ("training:\n  eval_steps: 100\n  save_steps: 150\n", "not a multiple of eval_steps 100"),
        ("extends: tiny\n", "extends: 'tiny' is not a built-in scenario"),
        ("baseline_preset: fast\n", "baseline_preset 'fast' is not a preset"),
        ("study:\n  timeout: soon\n", "study.timeout: duration 'soon'"),
        ("study:\n  pruner: 3\n", "study.pruner must be a pruner name"),
        ("study:\n  pruner: nope\n", "study.pruner must be a pruner name \\(successive-halving, median, .*none\\), got 'nope'"),
        ("lora:\n  r: {low: 4, high: 64, step: 100}\n", "lora.r: step 100 does not divide the range 4 to 64, so only 4 to 4 would be searched: "
                                                      "make high 4 or 104, or the step a divisor of 60"),
        ("lora:\n  lora_dropout: {low: 0.0, high: 0.1, step: 0.03}\n", "only 0.0 to 0.09 would be searched: make high 0.09 or 0.12"),
        ("study:\n  trial: 3\n", "unknown study setting 'trial'"),
        ("study:\n  trials: 0\n", "study.trials must be a whole number of at least 1"),
        ("study:\n  trials: 2.5\n", "study.trials must be a whole number"),
        ("study:\n  trials: '16'\n", "study.trials must be a whole number"),
        ("study:\n  rungs: 0\n", "study.rungs must be a whole number of at least 1"),
        ("study:\n  rungs: 2.5\n", "study.rungs must be a whole number"),
        ("study:\n  rungs: true\n", "study.rungs must be a whole number"),
        ("- a\n", "a space file is a mapping"),
        ("", "searches no parameter: give one a range \\({low: A, high: B}\\) or choices, or start from a scenario with 'extends: NAME'"),
        ("name: fixed\ntraining:\n  learning_rate: 1.0e-4\n", "searches no parameter"),
        ("training: [1]\n", "'training' must be a mapping"),
        ("training:\n  learning_rate: {low: 1.0e-4, high: 1.0e-3\n", "not valid YAML \\(line"),
        ("lora:\n  r: {choices: [8, 16]}\n  r: {choices: [4]}\n", "not valid YAML \\(line 3, column 3\\): key 'r' is given twice"),
    ],
)
def test_validation_messages_name_file_parameter_and_problem(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(SpaceError, match=message) as error:
        load_space(path)
    text = str(error.value)
    assert text.startswith(path) and "\n" not in text


def test_missing_file_and_unknown_name():
    with pytest.raises(SpaceError, match="space file 'nowhere/space.yaml' not found.*memory-constrained"):
        load_space("nowhere/space.yaml")
    with pytest.raises(SpaceError, match="unknown space 'tiny': choose one of quick-experiment, standard, production, memory-constrained, time-constrained"):
        load_space("tiny")


def test_unreadable_file(tmp_path):
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(SpaceError, match="cannot be read"):
        load_space(str(path))
