"""`lora-search dashboard`: the real command serves optuna-dashboard on the study's storage.

The server runs as a subprocess on a free port; the study is read back through the
dashboard's own HTTP API, and the single-page app is rendered in headless Chromium:
its plots name the metric, and its note gives the scenario, baseline and best trial.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.request

import optuna
import pytest

CHROMIUM = shutil.which("chromium")


@pytest.fixture(scope="module")
def dashboard(searched):
    process = subprocess.Popen(
        [sys.executable, "-m", "lora_search", "dashboard", "--storage", searched["storage"], "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        line = process.stdout.readline()  # printed once the socket listens
        assert "http://127.0.0.1:" in line, process.stderr.read() if process.poll() is not None else line
        yield line.split(" at ")[1].split()[0]
    finally:
        process.send_signal(signal.SIGINT)
        try:
            assert process.wait(timeout=20) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_dashboard_stops_cleanly_on_sigint_or_sigterm_even_started_with_sigint_ignored(searched, stop):
    # a background job of a script (or CI runner) starts with SIGINT ignored: Ctrl-C must still stop it
    process = subprocess.Popen(
        [sys.executable, "-m", "lora_search", "dashboard", "--storage", searched["storage"], "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_ignore_sigint,
    )
    try:
        assert "http://127.0.0.1:" in process.stdout.readline()
        process.send_signal(stop)
        assert process.wait(timeout=20) == 0
        assert process.stderr.read() == ""
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def visible_text(html: str) -> str:
    html = re.sub(r"<(style|script)\b.*?</\1>", " ", html, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.load(response)


def test_dashboard_serves_the_study_with_its_intermediate_values(searched, dashboard):
    study = optuna.load_study(study_name="tiny", storage=searched["storage"])
    summaries = get_json(dashboard + "api/studies")["study_summaries"]
    summary = next(s for s in summaries if s["study_name"] == "tiny")
    assert {"key": "lora_search.space", "value": "quick-experiment"} in summary["user_attrs"]
    detail = get_json(dashboard + f"api/studies/{summary['study_id']}")
    trials = detail["trials"]
    assert [t["number"] for t in trials] == [t.number for t in study.get_trials()]
    assert {"key": "baseline", "value": "True"} in trials[0]["user_attrs"]
    assert detail["has_intermediate_values"]
    assert detail["objective_names"] == ["eval_loss"]
    assert detail["note"]["body"].startswith("**lora-search** scenario `quick-experiment`, eval_loss (minimize)")
    for served, stored in zip(trials, study.get_trials()):
        steps = {v["step"]: v["value"] for v in served["intermediate_values"]}
        assert steps == pytest.approx(stored.intermediate_values)
        assert {p["name"] for p in served["params"]} == set(stored.params)


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (.ci/run installs it)")
def test_dashboard_page_renders_the_study_in_a_browser(dashboard, tmp_path):
    def dom(path: str) -> str:
        result = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / path.replace('/', '_')}",
             "--virtual-time-budget=15000", "--dump-dom", dashboard + path],
            capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": str(tmp_path)},
        )
        assert result.returncode == 0, result.stderr[-2000:]
        return visible_text(result.stdout)

    home = dom("dashboard")
    # the study list, drawn by the app's JavaScript from /api/studies
    assert re.search(r"\btiny Direction: MINIMIZE", home), home[:2000]
    study_id = next(s["study_id"] for s in get_json(dashboard + "api/studies")["study_summaries"] if s["study_name"] == "tiny")
    page = dom(f"dashboard/studies/{study_id}")
    assert "learning_rate" in page, page[:2000]  # a parameter of the trials, drawn from /api/studies/<id>
    # the history plot's axis is the metric (eval_loss also shows in the workload attribute)
    assert re.search(r"\bHistory y Axis eval_loss\b", page) and "Objective 0" not in page, page[:2000]
    note = dom(f"dashboard/studies/{study_id}/note")  # the Markdown note, rendered
    assert re.search(r"\blora-search scenario quick-experiment , eval_loss \(minimize\)", note), note[:2000]
    assert re.search(r"\bbaseline \(guide preset, trial 0\): eval_loss \d", note), note[:2000]
