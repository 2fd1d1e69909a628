"""One process writes a run at a time: a lock file beside it, taken with O_EXCL.

Two ``--resume`` runs of one scenario used to both measure the missing point and mix
their samples in one timeline. Now the second refuses, naming the holder; a lock left
by a process that is gone (same host, no such pid) is taken over.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import pytest
from support.forked_cli import Launcher
from support.scenarios import scenario_text

from carbonbench.files import LockFile, LockHeld
from carbonbench.runfile import read_run

TIMEOUT_S = 240


def dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def holder(pid: int, host: str = socket.gethostname()) -> str:
    return json.dumps({"pid": pid, "host": host, "since_utc": "2026-01-01T00:00:00+00:00"}) + "\n"


def test_a_lock_is_exclusive_and_names_its_holder(tmp_path):
    path = tmp_path / "r.lock"
    first = LockFile(path, "results/r.json")
    assert first.acquire() is None
    assert json.loads(path.read_text())["pid"] == os.getpid()
    with pytest.raises(LockHeld) as info:
        LockFile(path, "results/r.json").acquire()
    assert str(info.value).startswith(
        f"results/r.json is in use by another carbonbench run (pid {os.getpid()} on {socket.gethostname()}, since "
    )
    assert str(info.value).endswith(f"wait for it to end, or delete {path} if that process is gone")
    first.release()
    assert not path.exists()
    assert LockFile(path, "r").acquire() is None


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path):
    path = tmp_path / "r.lock"
    pid = dead_pid()
    path.write_text(holder(pid))
    lock = LockFile(path, "r")
    assert lock.acquire()["pid"] == pid
    assert json.loads(path.read_text())["pid"] == os.getpid()


def test_a_lock_held_on_another_host_is_refused(tmp_path):
    path = tmp_path / "r.lock"
    path.write_text(holder(dead_pid(), host="some-other-node"))
    with pytest.raises(LockHeld, match=r"on some-other-node"):
        LockFile(path, "r").acquire()


def test_a_lock_still_being_written_is_refused_and_one_whose_writer_died_is_not(tmp_path):
    path = tmp_path / "r.lock"
    path.write_text("")  # created, its holder not yet written
    with pytest.raises(LockHeld, match="a process that is still writing the lock"):
        LockFile(path, "r").acquire()
    old = os.stat(path).st_mtime - LockFile.STALE_GUARD_S - 5
    os.utime(path, (old, old))
    assert LockFile(path, "r").acquire() is None


@pytest.fixture(scope="module")
def scenario_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("lock") / "two.yaml"
    path.write_text(
        scenario_text(
            name="lock",
            batch_sizes="[2]",
            workloads="{prefill: {prompt_tokens: [8]}, decode: {prompt_tokens: [8], new_tokens: [2]}}",
            sample_interval_s=0.01,
            idle_baseline_s=0.05,
        )
    )
    return path


def test_two_runs_into_one_folder(invoke_cli, scenario_file, tmp_path):
    """A run holds its files; a --resume of it refuses, a new run goes to files of its own."""
    out = tmp_path / "out"
    args = ["run", str(scenario_file), "--out", str(out), "--device", "cpu"]
    first = Launcher(tmp_path).start(args, CARBONBENCH_PAUSE_AT="between-points")
    try:
        first.wait_for("carbonbench: paused at between-points", TIMEOUT_S)
        (held,) = out.glob("*.json")

        second = invoke_cli(*args, "--resume")
        assert second.exit_code == 2, second.output
        assert [line for line in second.output.splitlines() if line.startswith("Error")] == [
            f"Error: {held} is in use by another carbonbench run (pid {first.pid} on {socket.gethostname()}, "
            f"since {json.loads(held.with_suffix('.lock').read_text())['since_utc']}); wait for it to end, "
            f"or delete {held.with_suffix('.lock')} if that process is gone"
        ]

        third = invoke_cli(*args)  # not a resume: a run of its own
        assert third.exit_code == 0, third.output
    finally:
        os.kill(first.pid, signal.SIGTERM)
    assert first.wait(TIMEOUT_S) == 143, first.stderr
    runs = {path: read_run(path) for path in out.glob("*.json")}
    assert len(runs) == 2
    assert runs[held].status == "interrupted" and len(runs[held].points) == 1
    (other,) = set(runs) - {held}
    assert runs[other].status == "complete" and len(runs[other].points) == 2
    assert len({run.timeline_file for run in runs.values()}) == 2
    assert sorted(p.suffix for p in out.iterdir()) == [".csv", ".csv", ".json", ".json"]  # no lock left
