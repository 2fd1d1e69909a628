"""Ctrl-C and SIGTERM at every phase of a real `carbonbench run` process, then --resume.

Each run is a process started with ``CARBONBENCH_PAUSE_AT=PHASE`` (carbonbench.interrupts):
it prints ``carbonbench: paused at PHASE`` there and waits, and the test sends the signal
when it sees that line, so every phase is hit deterministically, with no sleeps. The
runs are forked from a process that imported torch already (tests/support/forked_cli.py), but
the startup phase, which comes before those imports, gets a plain subprocess.

Whatever the phase, the run must exit 130 (SIGINT) or 143 (SIGTERM) without a
traceback; once a run file exists it must be valid, marked "interrupted", hold the
points finished so far, and leave no journal, lock or temporary file behind. Resuming
must then end with the same points as a run that was never interrupted, each once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from support import ROOT
from support.forked_cli import Launcher, Run
from support.scenarios import scenario_text

from carbonbench.runfile import read_run

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

SCENARIO = scenario_text(  # two short points, so that a signal between them lands mid-sweep
    name="signals",
    batch_sizes="[2]",
    workloads="{prefill: {prompt_tokens: [8]}, decode: {prompt_tokens: [8], new_tokens: [2]}}",
    sample_interval_s=0.01,
    idle_baseline_s=0.05,
)
SIGNALS = {"SIGINT": (signal.SIGINT, 130), "SIGTERM": (signal.SIGTERM, 143)}
# Each phase, in the order a run meets them, and the points finished when it is reached
# (None: no run file exists yet).
PHASES = {"startup": None, "idle": 0, "model-build": 0, "warm-up": 0, "window": 0, "between-points": 1, "closing": 2}
CELLS = [(phase, name) for phase in PHASES for name in SIGNALS]
TIMEOUT_S = 240  # a dozen runs at once on a busy machine


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("signals")
    (path / "signals.yaml").write_text(SCENARIO)
    return path


@pytest.fixture(scope="module")
def launcher(workdir) -> Launcher:
    return Launcher(workdir)


def run_args(workdir: Path, out: Path, *extra: str) -> list[str]:
    return ["run", str(workdir / "signals.yaml"), "--out", str(out), "--device", "cpu", *extra]


def start_subprocess(args: list[str], stderr_path: Path, **env: str) -> Run:
    """A plain `python -m carbonbench` process, for what happens before its imports."""
    with stderr_path.open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "carbonbench", *args],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env={**os.environ, "CARBONBENCH_MODEL_DIR": str(ROOT / "model"), "PYTHONPATH": str(ROOT), **env},
            # A shell may start background jobs with SIGINT ignored; Python then installs no handler.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
    return Run(proc, stderr_path)


def run_files(out: Path) -> list[Path]:
    return sorted(f for f in out.glob("*.json") if not f.name.startswith(".")) if out.exists() else []


def leftovers(out: Path) -> list[str]:
    """Temporary files, locks, journals: a run that closed properly leaves none."""
    return [f.name for f in out.iterdir() if f.name.startswith(".") or f.suffix in (".lock", ".jsonl")]


def snapshot(out: Path):
    files = run_files(out)
    if not files:
        return None
    (path,) = files
    return {"path": path, "plain": json.loads(path.read_text()), "read": read_run(path), "left": leftovers(out)}


@pytest.fixture(scope="module")
def matrix(workdir, launcher):
    """Every cell: interrupted at its phase, then resumed; and one run never interrupted."""
    outs = {cell: workdir / "-".join(cell) for cell in CELLS}
    runs = {}
    for (phase, name), out in outs.items():
        args = run_args(workdir, out)
        if phase == "startup":
            runs[(phase, name)] = start_subprocess(args, workdir / f"{phase}-{name}.txt", CARBONBENCH_PAUSE_AT=phase)
        else:
            runs[(phase, name)] = launcher.start(args, CARBONBENCH_PAUSE_AT=phase)
    full = launcher.start(run_args(workdir, workdir / "full"))
    try:
        for (phase, name), run in runs.items():
            run.wait_for(f"carbonbench: paused at {phase}", TIMEOUT_S)
            os.kill(run.pid, SIGNALS[name][0])
        interrupted = {cell: (run.wait(TIMEOUT_S), run.stderr, snapshot(outs[cell])) for cell, run in runs.items()}
        assert full.wait(TIMEOUT_S) == 0, full.stderr
        resumes = {cell: launcher.start(run_args(workdir, outs[cell], "--resume")) for cell in CELLS}
        resumed = {cell: (run.wait(TIMEOUT_S), run.stderr, snapshot(outs[cell])) for cell, run in resumes.items()}
    finally:
        for run in [*runs.values(), full]:
            run.kill()
    keys = [p.key for p in read_run(run_files(workdir / "full")[0]).points]
    return interrupted, resumed, keys


@pytest.mark.parametrize("phase, name", CELLS, ids=[f"{p}-{n}" for p, n in CELLS])
def test_a_signal_at_any_phase_stops_cleanly_and_resume_completes(phase, name, matrix):
    interrupted, resumed, uninterrupted_keys = matrix
    returncode, stderr, state = interrupted[(phase, name)]
    assert returncode == SIGNALS[name][1], stderr
    assert "Traceback" not in stderr and "Aborted" not in stderr, stderr
    assert f"interrupted ({name})" in stderr, stderr

    kept = PHASES[phase]
    if kept is None:
        assert state is None and "nothing was measured yet" in stderr
    else:
        run = state["plain"]  # the file alone, whole: the closing write holds every point
        assert run["status"] == "interrupted" and state["read"].status == "interrupted"
        assert [p["key"] for p in run["points"]] == uninterrupted_keys[:kept]
        assert all(p["status"] == "ok" and p["repeats"] for p in run["points"])
        assert (state["path"].parent / run["timeline_file"]).is_file()
        assert state["left"] == []

    returncode, stderr, after = resumed[(phase, name)]
    assert returncode == 0, stderr
    assert f"resume: {kept or 0} of {len(uninterrupted_keys)} points already measured" in stderr
    assert state is None or after["path"] == state["path"]  # the same file, continued
    assert after["plain"]["status"] == "complete"
    assert [p["key"] for p in after["plain"]["points"]] == uninterrupted_keys  # each once
    assert after["left"] == []


def test_a_second_signal_does_not_cut_the_cleanup_short(workdir, launcher):
    """Ctrl-C pressed twice: the second only waits for the first's cleanup."""
    out = workdir / "twice"
    run = launcher.start(run_args(workdir, out), CARBONBENCH_PAUSE_AT="between-points")
    run.wait_for("carbonbench: paused at between-points", TIMEOUT_S)
    os.kill(run.pid, signal.SIGINT)
    os.kill(run.pid, signal.SIGINT)
    assert run.wait(TIMEOUT_S) == 130, run.stderr
    state = snapshot(out)
    assert state["read"].status == "interrupted" and len(state["read"].points) == 1
    assert state["left"] == []
