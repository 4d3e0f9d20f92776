"""The command table itself: what every command shares."""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_a_reader_that_goes_away_is_no_error():
    # `lora-search spaces | head -1`: the pipe closes before the listing is written.
    process = subprocess.Popen(
        [sys.executable, "-m", "lora_search", "spaces"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    process.stdout.close()
    stderr = process.stderr.read().decode()
    process.stderr.close()
    assert process.wait() in (0, 141)
    assert stderr == ""


def test_no_command_prints_the_help_and_exits_2():
    result = subprocess.run([sys.executable, "-m", "lora_search"], capture_output=True, text=True)
    assert result.returncode == 2
    assert "a typical session" in result.stdout


def test_version_is_the_installed_distributions():
    from importlib.metadata import version

    result = subprocess.run([sys.executable, "-m", "lora_search", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout == f"lora-search {version('lora-search')}\n"


def test_a_mistyped_option_names_its_commands_help_and_the_nearest_option(capsys):
    from lora_search._cli import main

    with pytest.raises(SystemExit, match="^2$"):
        main(["run", "--space", "standard", "--tirals=3", "--workres", "2"])
    assert capsys.readouterr().err == ("lora-search run: error: unrecognized arguments: --tirals=3 --workres 2 "
                                       "(did you mean --trials, --workers?) (see 'lora-search run --help')\n")
    with pytest.raises(SystemExit, match="^2$"):
        main(["--bogus"])
    assert capsys.readouterr().err == "lora-search: error: unrecognized arguments: --bogus (see 'lora-search --help')\n"


def test_the_workload_options_state_the_workloads_defaults():
    """Each option whose Workload field has a default says it in its help, as the field has it."""
    from lora_search._options import WORKLOAD_OPTIONS
    from lora_search.objectives import Workload

    defaults = Workload().to_dict()
    stated = []
    for name, _, help_text in WORKLOAD_OPTIONS:
        default = defaults[name]
        if default is None:
            continue
        shown = repr(default) if isinstance(default, str) else str(default)
        # a scenario may set its rungs; the Workload's 1 applies where it does not
        said = f"else {shown}" if name == "rungs" else f"default {shown}"
        assert said in help_text or f"{default} (default)" in help_text, (name, help_text)
        stated.append(name)
    assert len(stated) == 8  # every field with a default but holdout_fraction, which has no option
