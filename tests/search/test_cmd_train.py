"""lora-search train under a distributed launch: one process per device, rank 0 reports.

torchrun starts two processes on this CPU (gloo instead of a GPU's NCCL): the same code
path as one process per GPU, where the Trainer wraps each one's model in
DistributedDataParallel.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

# 8 per device x 2 accumulation = 16 examples per optimizer step, 2 epochs
PRESET = """\
description: "two epochs, 16 examples per step"
training:
  num_train_epochs: 2
  per_device_train_batch_size: 8
  gradient_accumulation_steps: 2   # 8 per device x 2 = 16 examples per step
  learning_rate: 1.0e-2
  eval_steps: 3
  save_steps: 3
  precision: fp32
  gradient_checkpointing: false
"""


def _train(*launcher: str, preset: Path, output: Path, tiny_bert: Path, tiny_reviews: Path) -> subprocess.CompletedProcess:
    script = Path(sys.executable).with_name("lora-search")
    return subprocess.run(
        [*launcher, str(script), "train", "--preset", str(preset), "--model", str(tiny_bert), "--data", str(tiny_reviews),
         "--max-length", "16", "--threads", "1", "--output", str(output)],
        capture_output=True, text=True, timeout=300,
    )


def test_torchrun_trains_one_process_per_device_with_the_presets_batch(tiny_bert, tiny_reviews, tmp_path):
    preset = tmp_path / "sixteen.yaml"
    preset.write_text(PRESET)
    alone = _train(sys.executable, preset=preset, output=tmp_path / "alone", tiny_bert=tiny_bert, tiny_reviews=tiny_reviews)
    assert alone.returncode == 0, alone.stderr
    launched = _train(sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                      preset=preset, output=tmp_path / "launched", tiny_bert=tiny_bert, tiny_reviews=tiny_reviews)
    assert launched.returncode == 0, launched.stderr

    one = json.loads((tmp_path / "alone" / "training.json").read_text())
    two = json.loads((tmp_path / "launched" / "training.json").read_text())
    # 96 rows to train on, 16 a step: 6 steps an epoch, 12 in all, either way; launched, each
    # process takes 8 a pass and the other process's 8 stand in for the second accumulated pass
    assert one["batch"] == {"per_device": 8, "devices": 1, "accumulation": 2, "examples_per_step": 16, "optimizer_steps": 12}
    assert two["batch"] == {"per_device": 8, "devices": 2, "accumulation": 1, "examples_per_step": 16, "optimizer_steps": 12}
    assert two["config"] == one["config"] and two["splits"] == one["splits"]
    assert set(two["metrics"]) == set(one["metrics"])

    # rank 0 reports, once: the summary on stdout, the plan and each evaluation on stderr
    summary = [line.split()[0] for line in launched.stdout.splitlines()]
    assert summary == ["adapter", "trained", "validation", "test"]
    evaluations = [line for line in launched.stderr.splitlines() if line.startswith("epoch ")]
    assert len(evaluations) == len({line.split(" (step ")[1] for line in evaluations}) == 4  # steps 3, 6, 9, 12
    assert launched.stderr.count("training 2 epochs, 12 steps") == 1

    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification

    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2)
    assert isinstance(PeftModel.from_pretrained(base, tmp_path / "launched" / "adapter"), PeftModel)
    # LoRA's B matrices start at zero: the saved adapter was trained
    weights = load_file(tmp_path / "launched" / "adapter" / "adapter_model.safetensors")
    assert all(tensor.abs().sum() > 0 for name, tensor in weights.items() if "lora_B" in name)


def test_only_train_runs_under_a_distributed_launch(cli, tiny_options, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    result = cli("run", "--space", "quick-experiment", "--trials", 1, "--storage", f"sqlite:///{tmp_path / 's.db'}", *tiny_options())
    assert result.code == 2
    assert result.err == ("lora-search run (rank 1): error: only 'train' runs under torchrun or accelerate launch (WORLD_SIZE=2): "
                          "start 'lora-search run' plainly (a search takes one trial per GPU with 'run --workers N')\n")
    assert not (tmp_path / "s.db").exists()
