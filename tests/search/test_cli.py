"""The command table itself: what every command shares."""

from __future__ import annotations

import subprocess
import sys


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
