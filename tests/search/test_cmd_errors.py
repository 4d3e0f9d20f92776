"""Bad input to the search-level commands: one line on stderr, exit code 2, nothing changed."""

from __future__ import annotations

import optuna
import pytest


def studies_snapshot(storage: str) -> dict[str, list[tuple[int, str]]]:
    """Each study's trials (number, state): what a refused command must not change."""
    return {
        summary.study_name: [(t.number, t.state.name) for t in optuna.load_study(study_name=summary.study_name, storage=storage).get_trials()]
        for summary in optuna.get_all_study_summaries(storage)
    }


def assert_refused(result, fragment: str) -> None:
    assert result.code == 2, (result.code, result.err)
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert fragment in lines[0], lines[0]


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        (["--trials", "0"], "--trials must be a whole number >= 1"),
        (["--trials", "-2"], "--trials must be a whole number >= 1"),
        (["--sampler", "grid"], "invalid choice: 'grid'"),
        (["--pruner", "asha"], "invalid choice: 'asha'"),
        (["--metric", "bleu"], "unknown metric 'bleu'"),
        (["--timeout", "soon"], "soon"),
        (["--space", "no-such-space"], "no-such-space"),
    ],
)
def test_run_refuses_bad_options_and_leaves_the_studies_alone(searched, cli, options, fragment):
    before = studies_snapshot(searched["storage"])
    base = ["run", "--space", "quick-experiment", "--study", "tiny", "--storage", searched["storage"], "--trials", "9"]
    if "--space" in options:
        base = base[:1] + base[3:]
    result = cli(*base, *options)
    assert_refused(result, fragment)
    assert studies_snapshot(searched["storage"]) == before


def test_run_without_space_or_study_says_what_to_pass(cli, tmp_path):
    result = cli("run", "--trials", "3", "--storage", f"sqlite:///{tmp_path / 's.db'}")
    assert_refused(result, "--space is required")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("storage", ["new.db", "new.journal"])
def test_a_refused_run_leaves_no_storage_file_it_created(cli, tiny_options, tmp_path, storage):
    """The file is created when the storage opens, before the data is read: a run refused on
    its data takes it away again, and one refused on a file holding a study keeps it."""
    path = tmp_path / storage
    result = cli("run", "--space", "quick-experiment", "--trials", "2", "--storage", path, *tiny_options(),
                 "--text-column", "nope")
    assert_refused(result, "has no column 'nope'")
    assert list(tmp_path.iterdir()) == []

    def opened():
        if path.suffix == ".db":
            return f"sqlite:///{path}"
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))

    optuna.create_study(study_name="kept", storage=opened())
    result = cli("run", "--space", "quick-experiment", "--trials", "2", "--storage", path, *tiny_options(),
                 "--text-column", "nope")
    assert_refused(result, "has no column 'nope'")
    assert optuna.get_all_study_names(storage=opened()) == ["kept"]


@pytest.mark.parametrize(
    ("storage", "fragment"),
    [
        ("foo://somewhere/db", "unknown storage scheme 'foo'"),
        ("not-a-storage", "neither a URL nor a .db/.journal file path"),
        ("postgresql://user@127.0.0.1:1/db", "cannot reach the PostgreSQL server at 127.0.0.1:1"),
        ("sqlite:///{tmp}/missing-folder/s.db", "does not exist"),
    ],
)
def test_run_refuses_a_storage_it_cannot_use(cli, tmp_path, storage, fragment):
    result = cli("run", "--space", "quick-experiment", "--trials", "2", "--storage", storage.format(tmp=tmp_path))
    assert_refused(result, fragment)
    assert list(tmp_path.iterdir()) == []


def test_run_refuses_an_unwritable_studies_folder(cli, tmp_path, monkeypatch):
    # a file where the default studies/ folder belongs: it cannot hold the database
    # (a read-only folder would not do: tests run as root in CI, and root writes anyway)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LORA_SEARCH_STORAGE", raising=False)
    (tmp_path / "studies").write_text("not a folder")
    result = cli("run", "--space", "quick-experiment", "--trials", "2")
    assert_refused(result, "studies")
    assert (tmp_path / "studies").read_text() == "not a folder"


@pytest.mark.parametrize("command", [["show"], ["export", "--name", "x"], ["report"]])
def test_unknown_study_lists_the_known_ones(searched, cli, tmp_path, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    result = cli(command[0], "no-such-study", *command[1:], "--storage", searched["storage"])
    assert_refused(result, "no study named 'no-such-study'")
    assert "tiny" in result.err
    assert list(tmp_path.iterdir()) == []


def test_reading_commands_refuse_a_missing_storage_file(cli, tmp_path):
    result = cli("studies", "--storage", f"sqlite:///{tmp_path / 'nothing.db'}")
    assert_refused(result, "no SQLite file")
    assert list(tmp_path.iterdir()) == []


def test_export_of_a_study_without_a_finished_trial_is_refused(cli, tmp_path, monkeypatch, tiny_bert, tiny_reviews):
    from lora_search import RunRequest
    from lora_search._prepare import prepare

    monkeypatch.chdir(tmp_path)
    storage = f"sqlite:///{tmp_path / 's.db'}"
    workload = {"model": str(tiny_bert), "data": str(tiny_reviews), "train_sample": 16, "eval_sample": 16, "max_length": 16}
    prepare(RunRequest(space="quick-experiment", study="empty", storage=storage, trials=2, workload=workload))
    assert [t.state.name for t in optuna.load_study(study_name="empty", storage=storage).get_trials()] == ["WAITING"]
    result = cli("export", "empty", "--name", "nothing", "--storage", storage)
    assert_refused(result, "has no complete feasible trial")
    assert not (tmp_path / "studies").exists()


def test_unknown_presets_are_refused(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert_refused(cli("presets", "show", "no-such-preset"), "no preset named 'no-such-preset'")
    assert_refused(cli("train", "--preset", "no-such-preset", "--output", tmp_path / "out"), "no preset named 'no-such-preset'")
    assert_refused(cli("train", "--preset", "missing/preset.yaml", "--output", tmp_path / "out"), "no preset file")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("weights", "workers"), [("model.safetensors", []), ("model.safetensors", ["--workers", "2"]),
                                                  ("pytorch_model.bin", [])])
def test_run_refuses_a_model_whose_weights_file_is_cut_short_before_the_study_exists(cli, tiny_bert, tiny_options, tmp_path,
                                                                                      weights, workers):
    """A download cut short: one line naming the file, with workers too (whose parent counts the
    base from its config and leaves the weights to them), and no study made. A .bin file is
    torch.save's archive, as older transformers saved models."""
    import shutil

    import torch
    from safetensors.torch import load_file

    model = tmp_path / "model"
    shutil.copytree(tiny_bert, model)
    if weights.endswith(".bin"):
        torch.save(load_file(model / "model.safetensors"), model / weights)
        (model / "model.safetensors").unlink()
    whole = (model / weights).read_bytes()
    (model / weights).write_bytes(whole[: len(whole) // 2])
    storage = f"sqlite:///{tmp_path / 's.db'}"
    options = [*tiny_options(), "--model", str(model)]  # the later --model wins
    result = cli("run", "--space", "quick-experiment", "--trials", "2", "--storage", storage, *options, *workers)
    assert_refused(result, f"model '{model}': weights file {weights} does not open (")
    assert studies_snapshot(storage) == {}


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["dashboard", "--port", "-1"], "argument --port: '-1' is not a port: give a number from 0 to 65535"),
        (["dashboard", "--port", "65536"], "argument --port: '65536' is not a port"),
        (["train", "--preset", "quick", "--output", ""], "argument --output: empty: name a file or folder"),
        (["report", "tiny", "--output", " "], "argument --output: empty: name a file or folder"),
        (["run", "--space", "quick-experiment", "--seed", "-1"], "seed: must be an integer from 0 to 4294967295 (2**32 - 1), got -1"),
        (["train", "--preset", "quick", "--output", "out", "--seed", "4294967296"], "seed: must be an integer from 0 to 4294967295"),
    ],
)
def test_options_out_of_their_range_are_refused_before_anything_is_written(cli, tmp_path, monkeypatch, argv, fragment):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LORA_SEARCH_STORAGE", raising=False)
    assert_refused(cli(*argv), fragment)
    assert list(tmp_path.iterdir()) == []


def test_dashboard_on_an_address_this_host_lacks_says_to_fix_the_host(searched, cli):
    result = cli("dashboard", "--host", "192.0.2.1", "--port", "0", "--storage", searched["storage"])  # TEST-NET-1: no host has it
    assert_refused(result, "cannot listen on 192.0.2.1:0: Cannot assign requested address (give a name or address of this host as --host)")


@pytest.fixture
def small_disk(tmp_path):
    """An 8 MiB tmpfs at tmp_path/disk (root only: CI runs as root), unmounted after."""
    import shutil
    import subprocess

    disk = tmp_path / "disk"
    disk.mkdir()
    if shutil.which("mount") is None or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8M", "tmpfs", str(disk)],
                                                       capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


@pytest.mark.parametrize("storage", ["s.journal", "s.db"])
def test_a_full_disk_is_named_and_the_same_command_goes_on_once_there_is_room(small_disk, tiny_options, storage):
    """Each command its own process, as a user's: the one the full disk stopped leaves its
    running trial behind, which the next one reclaims by its dead pid."""
    import shutil
    import subprocess
    import sys

    stored = small_disk / storage

    def lora_search(*args):
        return subprocess.run([sys.executable, "-m", "lora_search", *map(str, args), *map(str, tiny_options())],
                              capture_output=True, text=True, timeout=300)

    first = lora_search("run", "--space", "quick-experiment", "--trials", 1, "--study", "full", "--storage", stored)
    assert first.returncode == 0, first.stderr
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (shutil.disk_usage(small_disk).free - 4096))  # 4 KiB left: the next trials' records fill it
    stopped = lora_search("run", "--study", "full", "--trials", 30, "--storage", stored, "--quiet")
    assert stopped.returncode == 1 and stopped.stderr.strip().splitlines()[-1] == (
        "lora-search run: error: the disk is full; free some space and run the same command again (what was stored is kept)")
    filler.unlink()
    resumed = lora_search("run", "--study", "full", "--trials", 4, "--storage", stored, "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    listed = subprocess.run([sys.executable, "-m", "lora_search", "show", "full", "--storage", str(stored)],
                            capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert "baseline (guide preset):\n  trial 0: eval_loss " in listed.stdout and "trials: " in listed.stdout
