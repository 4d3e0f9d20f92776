"""Watching a search: one line per trial into a file, a bar redrawn on a terminal."""

from __future__ import annotations

import io

import optuna
import pytest

from lora_search._progress import Progress, format_duration, format_params

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_progress_writes_one_line_per_trial_without_a_terminal():
    stream = io.StringIO()
    study = optuna.create_study()
    progress = Progress(target=3, metric="eval_loss", direction="minimize", stream=stream)
    progress.start(study)
    study.enqueue_trial({"x": 0.5}, user_attrs={"baseline": True})
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2, callbacks=[progress])
    progress.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("trial 0 (baseline)  eval_loss 0.5")
    assert "1/3 finished" in lines[0] and "2/3 finished" in lines[1]
    assert "\r" not in stream.getvalue()  # no bar redraws into a file


def test_quiet_progress_writes_nothing():
    stream = io.StringIO()
    study = optuna.create_study()
    progress = Progress(target=2, metric="eval_loss", direction="minimize", quiet=True, stream=stream)
    progress.start(study)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2, callbacks=[progress])
    progress.close()
    assert stream.getvalue() == ""


def test_progress_bar_counts_and_estimates():
    study = optuna.create_study()
    progress = Progress(target=4, metric="eval_loss", direction="minimize", stream=io.StringIO())
    progress.start(study)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2, callbacks=[progress])
    bar = progress.bar()
    assert "2/4" in bar and "complete 2 pruned 0 infeasible 0 failed 0" in bar and "left ~" in bar
    assert progress.remaining_seconds(elapsed=10.0) == pytest.approx(10.0)  # 5 s per trial x 2 to go


def test_formatting_helpers():
    assert format_duration(75) == "1:15"
    assert format_duration(3725) == "1:02:05"
    assert format_duration(None) == "?"
    assert format_params({"learning_rate": 0.000512345, "r": 8, "targets": "all-linear"}) == "learning_rate=0.000512 r=8 targets=all-linear"


def test_progress_redraws_a_bar_on_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    study = optuna.create_study()
    progress = Progress(target=2, metric="eval_loss", direction="minimize", stream=stream)
    progress.start(study)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2, callbacks=[progress])
    progress.close()
    text = stream.getvalue()
    assert text.startswith("\r\033[K[") and text.endswith("\r\033[K")  # drawn first, cleared last
    assert "\r\033[Ktrial 0  eval_loss" in text and "\r\033[Ktrial 1  eval_loss" in text
    assert "] 2/2  complete 2 pruned 0" in text
