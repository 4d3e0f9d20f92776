"""lora-search spaces, through the real CLI entry point."""

import pytest

from lora_search._cli import main
from lora_search.spaces import suggest_scenario


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("argv", [["spaces"], ["spaces", "list"]])
def test_list(capsys, argv):
    code, out, _ = _run(capsys, *argv)
    assert code == 0
    names = [line.split()[0] for line in out.splitlines()[:5]]
    assert names == ["quick-experiment", "standard", "production", "memory-constrained", "time-constrained"]


def test_show_prints_an_aligned_table(capsys):
    code, out, _ = _run(capsys, "spaces", "show", "memory-constrained", "--gpu-memory", "4GB", "--dataset-size", "500")
    assert code == 0
    assert "resolved for: 500 training examples, cuda 4 GB (no bf16)" in out
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("parameter"))
    column = lines[header].index("range / choices")
    rows = lines[header + 2: header + 26]
    assert all(row[column - 2: column] == "  " and row[column] != " " for row in rows)
    table = {row.split()[0]: row for row in rows}
    assert "one of 2, 4" in table["per_device_train_batch_size"]
    assert "= true (rule)" in table["gradient_checkpointing"]
    assert "= epoch (rule)" in table["eval_strategy"]  # 500 examples: per-epoch evaluation
    assert "5 .. 5" not in table["num_train_epochs"] and "= 5" in table["num_train_epochs"]


def _table(out):
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("parameter"))
    return {row.split()[0]: row for row in lines[header + 2:] if row.strip() and not row[0].isdigit()}


def test_show_assumes_bf16_from_16gb(capsys):
    code, out, _ = _run(capsys, "spaces", "show", "standard", "--gpu-memory", "80GB")
    assert code == 0 and "cuda 80 GB (bf16)" in out and "--no-bf16 says otherwise" in out
    assert "= bf16 (rule)" in _table(out)["precision"]
    code, out, _ = _run(capsys, "spaces", "show", "standard", "--gpu-memory", "80GB", "--no-bf16")
    assert code == 0 and "= fp16 (rule)" in _table(out)["precision"] and "assumed" not in out
    code, out, _ = _run(capsys, "spaces", "show", "standard", "--gpu-memory", "8GB")
    assert "= fp16 (rule)" in _table(out)["precision"] and "no for 8 GB" in out


@pytest.mark.parametrize(("memory", "choices"), [("8000MB", "one of 8, 16"), ("8192MiB", "one of 8, 16"), ("24GB", "one of 16, 32")])
def test_show_offers_the_guides_per_device_row(capsys, memory, choices):
    code, out, _ = _run(capsys, "spaces", "show", "standard", "--gpu-memory", memory)
    row = _table(out)["per_device_train_batch_size"]
    assert code == 0 and choices in row and "the guide's" in row


def test_show_names_the_rules_that_win(capsys):
    code, out, _ = _run(capsys, "spaces", "show", "quick-experiment", "--cpu", "--dataset-size", "200")
    table = _table(out)
    assert code == 0 and "32-128 target for most tasks, over the 16 of its example configs" in table["effective_batch_size"]
    assert "= 5" in table["num_train_epochs"] and "the guide wins" in table["num_train_epochs"]
    assert "at most 200 apart" in table["logging_steps"]
    assert "lowered to evaluations - 1" in table["early_stopping_patience"]
    code, out, _ = _run(capsys, "spaces", "show", "memory-constrained", "--gpu-memory", "4GB")
    assert "8-32 for short memory" in _table(out)["effective_batch_size"]


@pytest.mark.parametrize(("size", "rate"), [("13B", "0.0001 .. 0.0003 (log)"), ("110M", "0.0005 .. 0.001 (log)"), ("7B", "0.0001 .. 0.001 (log)")])
def test_show_narrows_the_learning_rate_by_model_size(capsys, size, rate):
    code, out, _ = _run(capsys, "spaces", "show", "standard", "--cpu", "--model-parameters", size)
    assert code == 0 and f"{size}-parameter model" in out and rate in _table(out)["learning_rate"]


def test_show_a_user_file(capsys, tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("extends: standard\nstudy:\n  rungs: 3\nlora:\n  r: {choices: [16, 32]}\n")
    code, out, _ = _run(capsys, "spaces", "show", str(path), "--cpu")
    assert code == 0
    assert "space mine:" in out and "one of 16, 32" in out and "= fp32 (rule)" in out
    assert "study defaults: timeout none, pruner successive-halving, rungs 3, trials 16" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["spaces", "show", "tiny", "--cpu"], "unknown space 'tiny': choose one of quick-experiment, standard"),
        (["spaces", "show", "missing.yaml", "--cpu"], "space file 'missing.yaml' not found"),
        (["spaces", "show", "standard", "--gpu-memory", "lots"], "memory size 'lots' not understood"),
        (["spaces", "show", "standard", "--devices", "2"], "give --gpu-memory too"),
        (["spaces", "show", "standard", "--gpu-memory", "8GB", "--devices", "0"], "devices must be a positive integer, got 0"),
        (["spaces", "show", "standard", "--cpu", "--dataset-size", "0"], "dataset_size must be a positive"),
        (["spaces", "suggest", "--hours", "0", "--cpu"], "--hours must be more than zero"),
        (["spaces", "suggest", "--hours", "inf", "--cpu"], "and finite, got inf"),
        (["spaces", "suggest", "--hours", "nan", "--cpu"], "and finite, got nan"),
        (["spaces", "suggest", "--gpu-memory", "infGB"], "memory size 'infGB' not understood"),
        (["spaces", "suggest", "--hours", "3x", "--cpu"], "--hours '3x' not understood: write a number of hours"),
        (["spaces", "show", "standard", "--cpu", "--model-parameters", "7"], "model size '7' would be 7 parameters"),
        (["spaces", "show", "standard", "--cpu", "--model-parameters", "big"], "model size 'big' not understood"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, argv, message):
    code, out, err = _run(capsys, *argv)
    assert code == 2
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def test_invalid_space_file_exit_2(capsys, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("training:\n  learning_rate: 1e-4\n")
    code, _, err = _run(capsys, "spaces", "show", str(path), "--cpu")
    assert code == 2 and f"{path}: training.learning_rate: '1e-4' was read as text" in err and "write 1.0e-4" in err
    path.write_text("training: {learning_rate: [\n")
    code, _, err = _run(capsys, "spaces", "show", str(path), "--cpu")
    assert code == 2 and "not valid YAML" in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("argv", "name", "why"),
    [
        (["--gpu-memory", "8GB", "--hours", "1"], "quick-experiment", "quick-experiment window"),
        (["--gpu-memory", "8000MB", "--hours", "1"], "quick-experiment", "8 GB of GPU memory is 8 GB or more"),
        (["--gpu-memory", "4GB", "--hours", "12"], "memory-constrained", "under 8 GB"),
        (["--gpu-memory", "24GB", "--hours", "0.5"], "time-constrained", "30 minutes"),
        (["--gpu-memory", "16GB", "--hours", "4"], "standard", "2 to 8 hours"),
        (["--gpu-memory", "24GB", "--hours", "12"], "production", "8 hours or more"),
        (["--cpu"], "quick-experiment", "no time budget given (--hours): on a CPU"),
        (["--gpu-memory", "16"], "standard", "no time budget given (--hours): the balanced standard space"),
        (["--cpu", "--hours", "30m"], "time-constrained", "0.5 h is at most the guide's 30 minutes"),
        (["--gpu-memory", "16GB", "--hours", "3h"], "standard", "3 h falls in the guide's standard window"),
    ],
)
def test_suggest_explains(capsys, argv, name, why):
    code, out, _ = _run(capsys, "spaces", "suggest", *argv)
    assert code == 0
    assert out.splitlines()[0].startswith(f"suggested space: {name}")
    assert why in out and f"lora-search run --space {name}" in out


def test_suggest_detects_hardware_when_not_told(capsys):
    code, out, _ = _run(capsys, "spaces", "suggest", "--hours", "1")
    assert code == 0 and "(detected: " in out.splitlines()[0]


@pytest.mark.parametrize(
    ("memory", "hours", "name"),
    [
        (7.99, None, "memory-constrained"), (8.0, None, "standard"), (None, 0.5, "time-constrained"),
        (8.0, 0.51, "quick-experiment"), (8.0, 1.99, "quick-experiment"), (8.0, 2.0, "standard"),
        (16.0, 7.99, "standard"), (16.0, 8.0, "production"), (7.0, 0.25, "memory-constrained"),
    ],
)
def test_suggest_thresholds(memory, hours, name):
    assert suggest_scenario(memory, hours)[0] == name


def test_the_space_file_in_the_help_is_valid_and_searches_what_it_says(tmp_path):
    import textwrap

    from lora_search._cmd_spaces import DESCRIPTION
    from lora_search.spaces import RunProfile, load_space

    lines = DESCRIPTION.splitlines()
    start = lines.index("  extends: memory-constrained          # else every parameter starts fixed at its default")
    end = lines.index("    use_rslora: false", start)
    path = tmp_path / "example.yaml"
    path.write_text(textwrap.dedent("\n".join(lines[start:end + 1])) + "\n")
    space = load_space(str(path))
    assert (space.study_defaults.trials, space.effective_batch) == (20, (16, 32))
    resolved = {param.key: param for param in space.resolve(RunProfile(4000)).params}
    assert resolved["lora.r"].choices == (8, 16, 32)
    assert resolved["lr_scheduler_type"].choices == ("linear", "cosine")
