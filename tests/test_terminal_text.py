"""Text read from files reaches the terminal as text: `run`'s log and progress lines, and
`export`'s CSV when standard output is a terminal, show escape sequences escaped.

Piped elsewhere, `export` passes the data through unchanged: a CSV file keeps its values.
"""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

from support import DATA, ROOT

FIXTURE = DATA / "results" / "opt-125m-h100-fixture-20260901T120000000000Z.json"
CLEAR = "\x1b[2J"


def test_run_log_lines_escape_a_scenario_name_that_would_clear_the_screen(tmp_path, invoke_cli):
    scenario = tmp_path / "s.yaml"
    scenario.write_text(
        'name: "tiny\\e[2J"\n'
        "models: [opt-tiny]\n"
        "batch_sizes: [1]\n"
        "workloads: {prefill: {prompt_tokens: [8]}}\n"
        "measurement: {warmup_steps: 1, warmup_s: 0, min_seconds: 0.02, repeats: 1, idle_baseline_s: 0, "
        "codecarbon: false}\n"
    )
    result = invoke_cli("run", str(scenario), "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    assert CLEAR not in result.output
    assert "tiny\\x1b[2J" in result.output


def _hostile_results(tmp_path: Path) -> Path:
    run = json.loads(FIXTURE.read_text())
    run["timeline_file"] = None
    run["environment"]["hostname"] += CLEAR
    path = tmp_path / "r.json"
    path.write_text(json.dumps(run))
    return path


def test_export_escapes_terminal_controls_on_a_terminal(tmp_path):
    results = _hostile_results(tmp_path)
    leader, follower = pty.openpty()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "carbonbench", "export", str(results)], stdout=follower, stderr=subprocess.PIPE, env=env
    )
    os.close(follower)
    out = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the other end closed
            break
        if not chunk:
            break
        out += chunk
    os.close(leader)
    assert proc.wait(timeout=120) == 0, proc.stderr.read()
    text = out.decode()
    assert CLEAR not in text and "\\x1b[2J" in text


def test_export_piped_keeps_the_data(tmp_path):
    results = _hostile_results(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-m", "carbonbench", "export", str(results)], capture_output=True, text=True, env=env
    )
    assert out.returncode == 0, out.stderr
    assert CLEAR in out.stdout
