"""lora-search train: under a distributed launch, resumed after an interruption, refusing
an output folder it cannot use, and its live line on a terminal.

For the launch, torchrun starts two processes on this CPU (gloo instead of a GPU's NCCL):
the same code path as one process per GPU, where the Trainer wraps each one's model in
DistributedDataParallel.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

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


def _train(*launcher: str, preset: Path, output: Path, tiny_bert: Path, tiny_reviews: Path,
           extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """``lora-search train`` under ``launcher``. Two-process launches on this CPU hung twice
    in about 35 runs, rank 1 waiting in gloo after rank 0 had written everything, until
    ``train`` stopped closing the process group and ends a launched process with
    ``os._exit``; no hang since, in few runs. Should one hang, it is started once more
    after 120 s, into a fresh folder: one hang does not fail CI, two do."""
    import shutil

    script = Path(sys.executable).with_name("lora-search")
    command = [*launcher, str(script), "train", "--preset", str(preset), "--model", str(tiny_bert), "--data", str(tiny_reviews),
               "--max-length", "16", "--threads", "1", "--output", str(output), *extra]
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        shutil.rmtree(output, ignore_errors=True)
        return subprocess.run(command, capture_output=True, text=True, timeout=120)


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
    summary = launched.stdout.splitlines()
    assert [line.split()[0] for line in summary] == ["adapter", "trained", "validation", "test"]
    assert summary[1].startswith("trained 2 of 2 epochs (12 optimizer steps of 16 examples on 2 devices)")
    assert alone.stdout.splitlines()[1].startswith("trained 2 of 2 epochs (12 optimizer steps of 16 examples)")
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
    lora_b = [tensor for name, tensor in weights.items() if "lora_B" in name]
    assert lora_b and all(tensor.abs().sum() > 0 for tensor in lora_b)


def test_torchrun_trains_a_4bit_base_on_each_device(tiny_bert, tiny_reviews, tmp_path):
    """Each process loads its own quantized base (the Trainer cannot replicate one): the
    preset's batch holds on each as on an unquantized base."""
    preset = tmp_path / "sixteen.yaml"
    preset.write_text(PRESET)
    launched = _train(sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                      preset=preset, output=tmp_path / "4bit", tiny_bert=tiny_bert, tiny_reviews=tiny_reviews, extra=("--quantize", "4bit"))
    assert launched.returncode == 0, launched.stderr
    record = json.loads((tmp_path / "4bit" / "training.json").read_text())
    assert record["workload"]["quantization"] == "4bit"
    assert record["batch"] == {"per_device": 8, "devices": 2, "accumulation": 1, "examples_per_step": 16, "optimizer_steps": 12}


def test_only_train_runs_under_a_distributed_launch(cli, tiny_options, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    result = cli("run", "--space", "quick-experiment", "--trials", 1, "--storage", f"sqlite:///{tmp_path / 's.db'}", *tiny_options())
    assert result.code == 2
    assert result.err == ("lora-search run (rank 1): error: only 'train' runs under torchrun or accelerate launch (WORLD_SIZE=2): "
                          "start 'lora-search run' plainly (a search takes one trial per GPU with 'run --workers N')\n")
    assert not (tmp_path / "s.db").exists()


def _long_training(tmp_path: Path, tiny_bert: Path, tiny_reviews: Path, learning_rate: str = "1.0e-2") -> list[str]:
    """``train`` options of a 300-step training on 800 reviews (480 to train on), checkpointed every 30 steps."""
    import pandas

    data = tmp_path / "reviews-800.csv"
    if not data.exists():
        pandas.concat([pandas.read_csv(tiny_reviews)] * 5).to_csv(data, index=False)
    preset = tmp_path / f"long-{learning_rate}.yaml"
    # 480 rows / 8 per step = 60 steps an epoch x 5 epochs = 300 steps, unless 3 evaluations
    # after the best one are no better (not before step 120)
    preset.write_text(PRESET.replace("num_train_epochs: 2", "num_train_epochs: 5").replace("gradient_accumulation_steps: 2",
                      "gradient_accumulation_steps: 1").replace("eval_steps: 3", "eval_steps: 30").replace("save_steps: 3", "save_steps: 30")
                      .replace("1.0e-2", learning_rate) + "  early_stopping_patience: 3\n")
    return ["train", "--preset", str(preset), "--model", str(tiny_bert), "--data", str(data), "--max-length", "16", "--threads", "1"]


def _ctrl_c_as_in_a_terminal() -> None:
    # a test run started in the background of a script has SIGINT ignored, and its children with it
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_an_interrupted_training_resumes_and_ends_as_an_uninterrupted_one(cli, tiny_bert, tiny_reviews, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    options = _long_training(tmp_path, tiny_bert, tiny_reviews)
    straight = cli(*options, "--output", tmp_path / "straight")
    assert straight.code == 0, straight.err

    # the interrupted training is tracked: the resumed one goes on with the same run
    store = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3's opt-in to read its file store
    options += ["--report-to", "mlflow"]
    client = MlflowClient(store)

    def tracked_runs() -> list:
        return client.search_runs([experiment.experiment_id for experiment in client.search_experiments()])

    output = tmp_path / "interrupted"
    script = Path(sys.executable).with_name("lora-search")
    process = subprocess.Popen([str(script), *options, "--output", str(output)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=_ctrl_c_as_in_a_terminal)
    first = output / "checkpoints" / "checkpoint-30" / "trainer_state.json"
    deadline = time.monotonic() + 120
    while not first.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)  # Ctrl-C, about 270 steps before the end
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert err.splitlines()[-1] == f"lora-search train: interrupted; the same command resumes from the last checkpoint in {output / 'checkpoints'}"
    assert not (output / "training.json").exists() and (output / "training-in-progress.json").exists()
    (interrupted_run,) = tracked_runs()
    assert interrupted_run.info.status == "KILLED"
    assert json.loads((output / "training-in-progress.json").read_text())["tracked_runs"] == {"mlflow": interrupted_run.info.run_id}

    # other settings do not mix into it, and leave it as it was
    left = sorted(path.name for path in (output / "checkpoints").iterdir())
    other = cli(*_long_training(tmp_path, tiny_bert, tiny_reviews, learning_rate="2.0e-2"), "--output", output)
    assert other.code == 2
    assert other.err.splitlines()[-1] == (f"lora-search train: error: {output} holds an interrupted training of other settings "
                                          "(learning_rate 0.01 -> 0.02): give another output folder, or remove this one to start over")
    assert sorted(path.name for path in (output / "checkpoints").iterdir()) == left
    # nor does the same data file edited in the meantime
    data = Path(options[options.index("--data") + 1])
    original = data.read_text()
    data.write_text(original.replace("good", "fine"))
    edited = cli(*options, "--output", output)
    assert edited.code == 2
    assert re.fullmatch(rf"lora-search train: error: {re.escape(str(output))} holds an interrupted training of other settings "
                        r"\(data\.token_digest \w+ -> \w+\): give another output folder, or remove this one to start over",
                        edited.err.splitlines()[-1]), edited.err
    data.write_text(original)

    step = max(int(name.removeprefix("checkpoint-")) for name in left if (output / "checkpoints" / name / "trainer_state.json").exists())
    resumed = cli(*options, "--output", output)
    assert resumed.code == 0, resumed.err
    assert f"resuming the interrupted training from {output / 'checkpoints' / f'checkpoint-{step}'} (step {step})" in resumed.err
    # the optimizer, schedule, data order and random state went on from there
    one, two = (json.loads((folder / "training.json").read_text()) for folder in (tmp_path / "straight", output))
    assert two["metrics"] == one["metrics"] and two["epochs"] == one["epochs"]
    assert two["batch"]["optimizer_steps"] == one["batch"]["optimizer_steps"]
    assert not (output / "training-in-progress.json").exists()
    # one tracked run, the refused commands opened none: finished, with the whole training's evaluations
    (run,) = tracked_runs()
    assert run.info.run_id == interrupted_run.info.run_id and run.info.status == "FINISHED"
    assert run.data.metrics["test_accuracy"] == pytest.approx(two["metrics"]["test_accuracy"])
    evaluated = {point.step for point in client.get_metric_history(run.info.run_id, "eval_loss")}
    assert {30, two["batch"]["optimizer_steps"]} <= evaluated

    # a finished training is kept: the same command is refused before anything loads
    finished = (output / "training.json").read_text()
    again = cli(*options, "--output", output)
    assert again.code == 2
    assert again.err == (f"lora-search train: error: {output} holds a finished training (training.json): give another output "
                         "folder, or remove this one to train again\n")
    assert (output / "training.json").read_text() == finished


def test_train_refuses_an_output_folder_it_cannot_use(cli, tiny_bert, tiny_reviews, tmp_path):
    options = _long_training(tmp_path, tiny_bert, tiny_reviews)
    (tmp_path / "a-file").write_text("not a folder\n")
    result = cli(*options, "--output", tmp_path / "a-file" / "run")
    assert result.code == 2
    assert result.err == (f"lora-search train: error: cannot write the output folder {tmp_path / 'a-file' / 'run'} (Not a directory): "
                          "give a folder you can write to\n")

    # checkpoints without the settings they were trained with (another tool's, say) are left alone
    strange = tmp_path / "strange"
    (strange / "checkpoints" / "checkpoint-5").mkdir(parents=True)
    result = cli(*options, "--output", strange)
    assert result.code == 2
    assert result.err.splitlines()[-1] == (f"lora-search train: error: {strange / 'checkpoints'} holds checkpoints of an unknown "
                                           "training (training-in-progress.json is missing): give another output folder, or remove this one")
    assert sorted(path.name for path in strange.rglob("*")) == ["checkpoint-5", "checkpoints"]
    # as are checkpoints whose record was cut short
    (strange / "training-in-progress.json").write_text('{"settings": {"learning_rate": 0.0')
    result = cli(*options, "--output", strange)
    assert result.code == 2
    assert result.err.splitlines()[-1] == (f"lora-search train: error: {strange / 'checkpoints'} holds checkpoints of an unknown "
                                           "training (training-in-progress.json cannot be read): give another output folder, "
                                           "or remove this one")
    assert (strange / "training-in-progress.json").read_text() == '{"settings": {"learning_rate": 0.0'


def test_train_draws_a_live_line_on_a_terminal(tiny_bert, tiny_reviews, tmp_path, monkeypatch):
    import contextlib
    import io

    from lora_search._cli import main

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    preset = tmp_path / "sixteen.yaml"
    preset.write_text(PRESET)
    monkeypatch.setenv("COLUMNS", "200")  # a line is cut to the terminal's width
    terminal = Terminal()
    with contextlib.redirect_stderr(terminal), contextlib.redirect_stdout(io.StringIO()):
        code = main(["train", "--preset", str(preset), "--model", str(tiny_bert), "--data", str(tiny_reviews), "--max-length", "16",
                     "--threads", "1", "--output", str(tmp_path / "out")])
    assert code == 0, terminal.getvalue()
    parts = terminal.getvalue().split("\r\033[K")
    drawn = [re.fullmatch(r"  training  \[[#.]+\] step (\d+)/12  best eval_loss (\S+)  elapsed \S+  left ~\S+", part)
             for part in parts if part.startswith("  training  [")]
    assert drawn and all(drawn), parts
    # redrawn at most once a second: the first step and the last at least, the best value once evaluated
    assert drawn[0][1] == "1" and drawn[0][2] == "-" and drawn[-1][1] == "12"
    losses = [float(match[1]) for match in re.finditer(r"epoch \S+ \(step \d+\): validation loss (\S+),", terminal.getvalue())]
    assert len(losses) == 4 and float(drawn[-1][2]) == pytest.approx(min(losses[:3]), abs=5e-4)  # step 12 is drawn before its evaluation
    # the line is cleared before each evaluation's line, and none is left drawn after the last
    assert all(part.startswith("epoch ") for part in parts[1:] if not part.startswith("  training  [")), parts
    assert parts[-1].startswith("epoch 2.00 (step 12)") and parts[-1].endswith("\n")


def test_run_and_train_say_how_many_rows_max_length_cut(cli, tiny_bert, tiny_reviews, tiny_options, tmp_path):
    """The tiny reviews take 7 tokens each with [CLS] and [SEP]: --max-length 5 cuts every one."""
    options = [*tiny_options(), "--max-length", "5"]  # the last --max-length wins
    searched = cli("run", "--space", "quick-experiment", "--trials", 1, "--storage", f"sqlite:///{tmp_path / 's.db'}", *options)
    assert searched.code == 0, searched.err
    assert ("note: 48 of the 48 training rows and 32 of the 32 validation rows are longer than --max-length 5 tokens "
            "and were cut to it (raise --max-length to keep more of each row)") in searched.err
    preset = tmp_path / "preset.yaml"
    preset.write_text(PRESET.replace("num_train_epochs: 2", "num_train_epochs: 1"))
    trained = cli("train", "--preset", preset, "--output", tmp_path / "out", "--model", tiny_bert, "--data", tiny_reviews,
                  "--max-length", 5, "--threads", 1)
    assert trained.code == 0, trained.err
    assert re.search(r"note: (\d+) of the \1 training rows, (\d+) of the \2 validation rows and (\d+) of the \3 test rows "
                     r"are longer than --max-length 5 tokens", trained.err)
    kept = cli("train", "--preset", preset, "--output", tmp_path / "kept", "--model", tiny_bert, "--data", tiny_reviews,
               "--max-length", 7, "--threads", 1)
    assert kept.code == 0 and "--max-length" not in kept.err, kept.err


def test_train_offers_no_option_only_a_search_uses(cli, tmp_path):
    for option in ("--train-sample", "--eval-sample", "--rungs", "--evaluations", "--memory-budget"):
        refused = cli("train", "--preset", "quick-experiment", "--output", tmp_path / "out", option, "4")
        assert refused.code == 2 and f"unrecognized arguments: {option} 4" in refused.err
        assert option not in cli("train", "--help").out
    assert not (tmp_path / "out").exists()
