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
        ("precision: bf16", "precision: fp32", "wrong-precision"),
    ],
)
def test_each_mistake(capsys, tmp_path, old, new, rule):
    code, out, _ = _check(capsys, tmp_path, CLEAN.replace(old, new), *GPU)
    assert code == 1
    findings = [line for line in out.splitlines() if line.startswith(str(tmp_path))]
    assert len(findings) == 1 and f": {rule}: " in findings[0]


def test_flat_config_and_cpu(capsys, tmp_path):
    flat = "learning_rate: 5.0e-4\nprecision: bf16\nearly_stopping_patience: 2\neval_steps: 31\nsave_steps: 31\n"
    code, out, _ = _check(capsys, tmp_path, flat, "--cpu")
    assert code == 1 and "wrong-precision" in out and "use fp32" in out


def test_builtin_preset_name(capsys):
    assert main(["check", "standard", "--gpu-memory", "16GB", "--bf16"]) == 0
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
