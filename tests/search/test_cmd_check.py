"""lora-search check on files that commit each mistake, and on one that commits none."""

import pytest

from lora_search._cli import main

CLEAN = """\
training:
  per_device_train_batch_size: 8
  gradient_accumulation_steps: 2
  learning_rate: 5.0e-4
  warmup_ratio: 0.1
  eval_steps: 31
  save_steps: 31
  precision: bf16
  early_stopping_patience: 3
lora:
  r: 16
  lora_alpha: 32
provenance:
  study: example
"""
GPU = ["--gpu-memory", "8GB", "--bf16", "--dataset-size", "4000"]


def _check(capsys, tmp_path, text, *options):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    code = main(["check", str(path), *options])
    out, err = capsys.readouterr()
    return code, out, err


def test_clean_config(capsys, tmp_path):
    code, out, _ = _check(capsys, tmp_path, CLEAN, *GPU)
    assert code == 0 and "no common mistakes" in out


@pytest.mark.parametrize(
    ("old", "new", "rule"),
    [
        ("per_device_train_batch_size: 8", "per_device_train_batch_size: 32", "batch-too-large"),
        ("learning_rate: 5.0e-4", "learning_rate: 1.0e-2", "learning-rate-too-high"),
        ("learning_rate: 5.0e-4", "learning_rate: 1.0e-6", "learning-rate-too-low"),
        ("warmup_ratio: 0.1", "warmup_ratio: 0.0", "no-warmup"),
        ("eval_steps: 31\n  save_steps: 31", "eval_steps: 5\n  save_steps: 5", "evaluation-too-frequent"),
        ("early_stopping_patience: 3", "early_stopping_patience: 0", "no-early-stopping"),
        ("early_stopping_patience: 3", "early_stopping_patience: 30", "early-stopping-cannot-fire"),
        ("precision: bf16", "precision: fp32", None),  # runs on any GPU: not a mistake
        ("precision: bf16", "precision: fp16", None),
    ],
)
def test_each_mistake(capsys, tmp_path, old, new, rule):
    code, out, _ = _check(capsys, tmp_path, CLEAN.replace(old, new), *GPU)
    if rule is None:
        assert code == 0 and "no common mistakes" in out
        return
    assert code == 1
    findings = [line for line in out.splitlines() if line.startswith(str(tmp_path))]
    assert len(findings) == 1 and f": {rule}: " in findings[0]


def test_bf16_on_a_gpu_without_it(capsys, tmp_path):
    code, out, _ = _check(capsys, tmp_path, CLEAN, "--gpu-memory", "8GB", "--no-bf16")
    assert code == 1 and "wrong-precision" in out and "cannot compute in bf16" in out and "use fp16" in out


@pytest.mark.parametrize(("memory", "code"), [("8GB", 1), ("16GB", 0), ("80GB", 0), ("16000MB", 0), ("15.9GB", 1)])
def test_bf16_assumed_from_16gb(capsys, tmp_path, memory, code):
    # a GPU given by memory alone: bf16 from 16 GB, as the guide's 16 and 24 GB configs
    assert _check(capsys, tmp_path, CLEAN, "--gpu-memory", memory)[0] == code


def test_model_size_sets_the_learning_rate_limits(capsys, tmp_path):
    text = CLEAN.replace("learning_rate: 5.0e-4", "learning_rate: 1.0e-3")
    assert _check(capsys, tmp_path, text, *GPU)[0] == 0
    code, out, _ = _check(capsys, tmp_path, text, *GPU, "--model-parameters", "13B")
    assert code == 1 and "learning-rate-too-high" in out and "for a 13B-parameter model" in out


def test_an_exported_preset_is_judged_for_the_data_and_model_it_recorded(capsys, tmp_path):
    """A preset searched on a 13B model with 50,000 rows: its 1e-3 is too high for that model,
    without --model-parameters; the options still say otherwise where given."""
    recorded = CLEAN.replace("learning_rate: 5.0e-4", "learning_rate: 1.0e-3") + (
        "  profile: {dataset_size: 50000, accelerator: cuda, devices: 1, gpu_memory_gb: 8.0, bf16_supported: true, "
        "model_parameters: 13000000000}\n")
    code, out, _ = _check(capsys, tmp_path, recorded, "--gpu-memory", "8GB", "--bf16")
    assert code == 1 and "learning-rate-too-high" in out and out.splitlines()[-1].endswith(
        "for 50,000 training examples, cuda 8 GB (bf16), 13B-parameter model")
    code, out, _ = _check(capsys, tmp_path, recorded, "--gpu-memory", "8GB", "--bf16", "--model-parameters", "110M", "--dataset-size", "4000")
    assert code == 0 and "for 4,000 training examples" in out and "110M-parameter model" in out


def test_flat_config_and_cpu(capsys, tmp_path):
    flat = "learning_rate: 5.0e-4\nprecision: bf16\nearly_stopping_patience: 2\neval_steps: 31\nsave_steps: 31\n"
    code, out, _ = _check(capsys, tmp_path, flat, "--cpu")
    assert code == 1 and "wrong-precision" in out and "use fp32" in out


def test_builtin_preset_name(capsys):
    assert main(["check", "standard", "--gpu-memory", "16GB", "--bf16", "--dataset-size", "50000"]) == 0
    # 4000 examples: 750 steps, evaluated every 500, so once: patience 3 never fires
    assert main(["check", "standard", "--gpu-memory", "16GB", "--bf16"]) == 1
    assert "early-stopping-cannot-fire" in capsys.readouterr().out
    assert main(["check", "memory-constrained", "--gpu-memory", "4GB"]) == 1
    assert "no-early-stopping" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("training:\n  learning_rate: 1e-4\n", "'1e-4' was read as text"),
        ("training: {lr: 0.1}\n", "unknown training setting 'lr'"),
        ("training: [\n", "not valid YAML"),
    ],
)
def test_bad_files_exit_2(capsys, tmp_path, text, message):
    code, _, err = _check(capsys, tmp_path, text, "--cpu")
    assert code == 2 and message in err and err.count("\n") == 1


def test_missing_file_exit_2(capsys, tmp_path):
    assert main(["check", str(tmp_path / "none.yaml"), "--cpu"]) == 2
    assert "not found" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_exported_preset_by_path_and_by_name(capsys, tmp_path, monkeypatch, fmt):
    from lora_search._presets import write_preset
    from lora_search.spaces import RunProfile, get_preset, rederive_for_dataset

    # what 'lora-search export' writes: a trial's settings re-derived for the full run
    trial = get_preset("standard").replace(num_train_epochs=1, precision="fp32")
    full, reasons = rederive_for_dataset(trial, RunProfile(4000, "cuda", 1, 8.0, True))
    document = {
        "name": "mine", "config": full.to_dict(), "trial_config": trial.to_dict(),
        "rederived": {key: {"trial": getattr(trial, key), "full": getattr(full, key), "reason": why} for key, why in reasons.items()},
        "provenance": {"study": "example", "trial": 7, "metric": "eval_loss", "direction": "minimize", "value": 0.5},
    }
    monkeypatch.chdir(tmp_path)
    path = write_preset("mine", document, fmt=fmt)
    for config in (str(path), "mine"):
        assert main(["check", config, *GPU]) == 0
        assert f"{config}: no common mistakes" in capsys.readouterr().out


@pytest.mark.parametrize(("name", "gpu", "code"), [("standard", "16GB", 0), ("quick", "8GB", 1)])
def test_copied_builtin_preset(capsys, tmp_path, name, gpu, code):
    from importlib import resources

    from lora_search._presets import find_preset
    from lora_search.spaces import get_preset

    copy = tmp_path / f"copy-of-{name}.yaml"
    copy.write_text((resources.files("lora_search.spaces") / "presets" / f"{name}.yaml").read_text())
    assert find_preset(str(copy)).config == get_preset(name)
    assert main(["check", str(copy), "--gpu-memory", gpu, "--bf16", "--dataset-size", "50000"]) == code


AXOLOTL = """\
base_model: meta-llama/Llama-3.2-1B
datasets: [{path: data.jsonl, type: alpaca}]
adapter: lora
micro_batch_size: 8
gradient_accumulation_steps: 2
learning_rate: 5e-4
warmup_ratio: 0.1
eval_steps: 31
save_steps: 31
bf16: true
early_stopping_patience: 3
lora_r: 16
lora_alpha: 32
lora_target_modules: [q_proj, v_proj]
"""
HUGGING_FACE = """{"training_arguments": {"output_dir": "out", "per_device_train_batch_size": 8, "gradient_accumulation_steps": 2,
  "learning_rate": 5e-4, "warmup_steps": 0.1, "eval_steps": 31, "save_steps": 31, "bf16": true},
  "lora_config": {"r": 16, "lora_alpha": 32, "task_type": "CAUSAL_LM"}}"""


@pytest.mark.parametrize(("name", "text"), [("axolotl.yaml", AXOLOTL), ("args.json", HUGGING_FACE)])
def test_other_trainers_files(capsys, tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    hugging_face = name.endswith(".json")  # the same settings as CLEAN, but no early stopping
    assert main(["check", str(path), *GPU]) == (1 if hugging_face else 0)
    out = capsys.readouterr().out
    assert ("no-early-stopping" in out) if hugging_face else ("no common mistakes" in out)
    path.write_text(text.replace("micro_batch_size: 8", "micro_batch_size: 8\nmicro_batchsize: 8\nlora_rr: 4")
                    .replace('"output_dir": "out"', '"output_dir": "out", "max_stepz": 1, "rr": 4'))
    assert main(["check", str(path), *GPU]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ("unknown Hugging Face TrainingArguments/LoraConfig keys 'max_stepz', 'rr'" if hugging_face else "unknown axolotl keys 'lora_rr' (did you mean "
                                     "'lora_r'?), 'micro_batchsize' (did you mean 'micro_batch_size'?)") in err
