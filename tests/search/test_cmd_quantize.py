"""--quantize: a 4-bit or 8-bit base for run and train, and the base's fit in spaces show and check."""

from __future__ import annotations

import sys

import optuna
import pytest


def stored_studies(storage: str) -> list[str]:
    return [summary.study_name for summary in optuna.get_all_study_summaries(storage)]


def test_run_searches_on_a_4bit_base_and_a_resume_keeps_it(cli, tmp_path, tiny_options):
    pytest.importorskip("bitsandbytes")
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    run = ["run", "--space", "quick-experiment", "--study", "q", "--storage", storage, *tiny_options(32)]
    result = cli(*run, "--trials", 2, "--quantize", "4bit")
    assert result.code == 0, result.err
    study = optuna.load_study(study_name="q", storage=storage)
    assert study.user_attrs["lora_search.workload"]["quantization"] == "4bit"
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    refused = cli(*run, "--trials", 3, "--quantize", "8bit")
    assert refused.code == 2 and "--quantize" in refused.err and "'4bit'" in refused.err
    assert cli(*run, "--trials", 3).code == 0  # without --quantize the stored base is kept
    assert len(optuna.load_study(study_name="q", storage=storage).trials) == 3


@pytest.mark.parametrize(
    ("options", "fragment"),
    [(["--quantize", "3bit"], "--quantize: must be one of 4bit, 8bit, got '3bit'"),
     (["--quantize", "4bit"], "a 4bit base needs bitsandbytes, which is not installed: pip install 'lora-search[quantize]'")],
)
def test_run_refuses_a_quantization_it_cannot_load_and_stores_nothing(cli, tmp_path, tiny_options, monkeypatch, options, fragment):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # as if not installed
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    result = cli("run", "--space", "quick-experiment", "--storage", storage, "--trials", 1, *tiny_options(), *options)
    lines = result.err.strip().splitlines()
    assert result.code == 2 and len(lines) == 1 and fragment in lines[0], result.err
    assert stored_studies(storage) == []


def test_show_says_how_the_base_fits_and_when_it_loads_in_4bit(cli):
    small = cli("spaces", "show", "memory-constrained", "--gpu-memory", "8GB", "--model-parameters", "7B")
    assert small.code == 0
    assert "base: 13.0 GB in fp16 + 1.6 GB to train exceed 8 GB: loaded in 4-bit, QLoRA (3.4 GB and up in 4bit" in small.out
    large = cli("spaces", "show", "standard", "--gpu-memory", "24GB", "--model-parameters", "7B")
    assert "base: 13.0 GB in bf16 + 4.8 GB to train fit 24 GB: loaded in bf16" in large.out
    asked = cli("spaces", "show", "standard", "--gpu-memory", "24GB", "--model-parameters", "7B", "--quantize", "8bit")
    assert "cuda 24 GB (bf16), 7B-parameter model, base in 8-bit" in asked.out and "loaded in 8bit as asked" in asked.out
    assert "base:" not in cli("spaces", "show", "standard", "--cpu", "--model-parameters", "7B").out


def test_check_flags_a_base_the_gpu_cannot_train(cli):
    flagged = cli("check", "memory-constrained", "--gpu-memory", "8GB", "--model-parameters", "7B")
    assert flagged.code == 1
    assert "base-too-large: a 7B-parameter model leaves this GPU too little to train (13.0 GB in fp16 + 1.6 GB to train exceed 8 GB): " \
           "load it in 4-bit (QLoRA, --quantize 4bit: 3.4 GB and up in 4bit + 1.6 GB to train fit 8 GB)" in flagged.out
    assert "base-too-large" not in cli("check", "memory-constrained", "--gpu-memory", "8GB", "--model-parameters", "7B", "--quantize", "4bit").out
    too_large = cli("check", "memory-constrained", "--gpu-memory", "8GB", "--model-parameters", "70B", "--quantize", "4bit")
    assert "33.6 GB and up in 4bit + 1.6 GB to train exceed 8 GB): use a smaller model or a larger GPU" in too_large.out
