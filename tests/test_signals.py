"""Ctrl-C and SIGTERM on a real `carbonbench run` process, then --resume.

The run is started as a subprocess; once its run file shows a finished point, it gets
the signal. It must exit 130 (SIGINT) or 143 (SIGTERM), keep the finished points in a
run file marked "interrupted" with its power timeline, and leave no temporary files.
Resuming must then give the same set of points as a run that was never interrupted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from carbonbench.cli import cli
from conftest import ROOT

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

SCENARIO = (  # four short points (about 0.5 s each), so a signal after the first lands mid-sweep
    "name: signals\n"
    "models: [opt-tiny]\n"
    "batch_sizes: [2]\n"
    "workloads:\n"
    "  prefill: {prompt_tokens: [8, 16, 32]}\n"
    "  decode: {prompt_tokens: [8], new_tokens: [4]}\n"
    "measurement: {warmup_steps: 1, warmup_s: 0, min_seconds: 0.2, repeats: 2, sample_interval_s: 0.02,"
    " idle_baseline_s: 0.1, codecarbon: false}\n"
)
START_TIMEOUT_S = 90  # importing torch on a busy machine can be slow
EXIT_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def scenario_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("signals") / "signals.yaml"
    path.write_text(SCENARIO)
    return path


def run_files(out: Path) -> list[Path]:
    return [f for f in out.glob("*.json") if not f.name.startswith(".")]


def first_point_done(out: Path) -> bool:
    for f in run_files(out):
        try:
            run = json.loads(f.read_text())  # written atomically: never half a file
        except (OSError, json.JSONDecodeError):
            continue
        if run.get("points"):
            return True
    return False


SIGNALS = {"SIGINT": (signal.SIGINT, 130), "SIGTERM": (signal.SIGTERM, 143)}


def uninterrupted_run(scenario_file: Path, out: Path) -> set[str]:
    result = CliRunner().invoke(cli, ["run", str(scenario_file), "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    (run_file,) = out.glob("*.json")
    run = json.loads(run_file.read_text())
    assert run["status"] == "complete"
    return {p["key"] for p in run["points"]}


def signal_after_first_point(procs: dict, errors: list) -> None:
    """Runs in a thread: signal each process as soon as its run file holds a point."""
    waiting = set(procs)
    deadline = time.monotonic() + START_TIMEOUT_S
    while waiting and time.monotonic() < deadline:
        for name in sorted(waiting):
            out, proc = procs[name]
            if proc.poll() is not None:
                errors.append(f"{name}: the run ended (status {proc.returncode}) before it could be interrupted")
                waiting.discard(name)
            elif first_point_done(out):
                proc.send_signal(SIGNALS[name][0])
                waiting.discard(name)
        time.sleep(0.05)
    errors.extend(f"{name}: no point finished within {START_TIMEOUT_S} s" for name in sorted(waiting))


@pytest.fixture(scope="module")
def runs(scenario_file, tmp_path_factory) -> tuple[dict[str, tuple[Path, int, str]], set[str]]:
    """Both signalled runs as subprocesses and, meanwhile, an uninterrupted run in this process."""
    env = {**os.environ, "CARBONBENCH_MODEL_DIR": str(ROOT / "model"), "PYTHONPATH": str(ROOT)}
    procs = {}
    for name in SIGNALS:
        out = tmp_path_factory.mktemp(name) / "out"
        procs[name] = (out, subprocess.Popen(
            [sys.executable, "-m", "carbonbench", "run", str(scenario_file), "--out", str(out), "--device", "cpu"],
            cwd=out.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            # A shell may start background jobs with SIGINT ignored; Python then installs no handler.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        ))
    errors: list[str] = []
    watcher = threading.Thread(target=signal_after_first_point, args=(procs, errors), daemon=True)
    watcher.start()
    outcome = {}
    try:
        full = uninterrupted_run(scenario_file, tmp_path_factory.mktemp("full"))
        watcher.join(START_TIMEOUT_S + 5)
        for name, (out, proc) in procs.items():
            _, stderr = proc.communicate(timeout=EXIT_TIMEOUT_S)
            outcome[name] = (out, proc.returncode, stderr.decode(errors="replace"))
    finally:
        for _, proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert not errors, (errors, {name: o[2] for name, o in outcome.items()})
    return outcome, full


@pytest.mark.parametrize("name", list(SIGNALS))
def test_signal_stops_cleanly_and_resume_completes(name, runs, scenario_file):
    interrupted, uninterrupted_keys = runs
    out, returncode, stderr = interrupted[name]
    assert returncode == SIGNALS[name][1], stderr
    assert "Traceback" not in stderr, stderr
    assert "interrupted" in stderr

    (run_file,) = run_files(out)
    run = json.loads(run_file.read_text())
    assert run["status"] == "interrupted"
    kept = {p["key"] for p in run["points"]}
    assert kept and kept < uninterrupted_keys  # some, not all: it was stopped mid-sweep
    assert all(p["status"] == "ok" and p["repeats"] for p in run["points"])
    assert (out / run["timeline_file"]).is_file()
    assert not [f for f in out.rglob(".*")], "temporary files left behind"

    logs = CliRunner().invoke(cli, ["run", str(scenario_file), "--out", str(out), "--device", "cpu", "--resume"])
    assert logs.exit_code == 0, logs.output
    assert f"resume: {len(kept)} of {len(uninterrupted_keys)} points already measured" in logs.output
    (resumed_file,) = run_files(out)
    assert resumed_file == run_file
    resumed = json.loads(resumed_file.read_text())
    assert resumed["status"] == "complete"
    assert {p["key"] for p in resumed["points"]} == uninterrupted_keys
    assert len(resumed["points"]) == len(uninterrupted_keys)
    assert not [f for f in out.rglob(".*")]
