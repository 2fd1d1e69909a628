"""What the hostile-input corpus (tests/test_hostile_*.py) shares: running the CLI under a
deadline, the shape every refusal must have, and the hostile files themselves.

Every case must end, give one line, never a traceback, and never a NaN figure. A case
that hangs is cut off by SIGALRM (in process) or by a subprocess timeout, and fails as
``HANG``; each failed assertion starts with its class (HANG, TRACEBACK, EXIT, LINES,
MESSAGE, CONTROL, NAN, ESCAPED) so a run of the corpus can be tallied by class.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pytest

from support import DATA, ROOT
from support.cli import invoke_cli
from support.scenarios import scenario_text

HOSTILE = DATA / "hostile"
FIXTURE = DATA / "results" / "opt-125m-h100-fixture-20260901T120000000000Z.json"
DEADLINE_S = 20  # far above any case's real time; only a hang reaches it
# Anything a terminal would act on: C0 and C1 controls but newline, and the bidi overrides.
CONTROLS = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
NAN_WORD = re.compile(r"(?<![\w.])(nan|inf|-inf|infinity)(?![\w.])", re.IGNORECASE)


class Hang(BaseException):
    """Raised by the alarm: a BaseException, so that no `except Exception` in the code swallows it."""


@dataclass
class Result:
    exit_code: int
    output: str
    exception: Optional[BaseException] = None


@contextlib.contextmanager
def deadline(seconds: int = DEADLINE_S):
    def on_alarm(signum, frame):
        raise Hang(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def invoke(args: list[Any], env: Optional[dict] = None, seconds: int = DEADLINE_S) -> Result:
    """The CLI in this process, cut off after ``seconds``."""
    try:
        with deadline(seconds):
            r = invoke_cli(*args, env=env)
    except Hang as exc:
        pytest.fail(f"HANG: carbonbench {' '.join(map(str, args))}: {exc}")
    error = r.exception if r.exception is not None and not isinstance(r.exception, SystemExit) else None
    return Result(r.exit_code, r.output, error)


def invoke_subprocess(args: list[Any], env: Optional[dict] = None, seconds: int = 60) -> Result:
    """The CLI in its own process (for what an alarm cannot interrupt, and for warnings
    that pytest would otherwise capture); killed after ``seconds``."""
    full_env = {**os.environ, **(env or {})}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "carbonbench", *map(str, args)],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=seconds,
            env=full_env,
            cwd=ROOT,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"HANG: carbonbench {' '.join(map(str, args))}: killed after {seconds} s")
    return Result(done.returncode, done.stdout + done.stderr)


def assert_no_traceback(result: Result) -> None:
    assert result.exception is None and "Traceback" not in result.output, (
        f"TRACEBACK: {result.exception!r}\n{result.output[-3000:]}"
    )


def assert_safe_text(text: str) -> None:
    found = sorted(set(CONTROLS.findall(text)))
    assert not found, f"CONTROL: {found!r} reached the terminal: {text[-2000:]!r}"


def assert_refused(result: Result, *expected: Any) -> str:
    """Exit 2, exactly one line 'Error: ...' holding each expected text, nothing a terminal acts on."""
    assert_no_traceback(result)
    assert result.exit_code == 2, f"EXIT {result.exit_code}: {result.output[-3000:]}"
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, f"LINES: {len(lines)} lines: {result.output[-3000:]}"
    line = lines[0]
    assert line.startswith("Error: "), f"LINES: {line!r}"
    for text in expected:
        assert " ".join(str(text).split()) in line, f"MESSAGE: {text!r} not in {line!r}"
    assert_safe_text(result.output)
    return line


def assert_ok(result: Result, code: int = 0) -> str:
    """Exit ``code`` with no traceback, no control characters and no NaN or infinite figure."""
    assert_no_traceback(result)
    assert result.exit_code == code, f"EXIT {result.exit_code}: {result.output[-3000:]}"
    assert_safe_text(result.output)
    found = NAN_WORD.findall(result.output)
    assert not found, f"NAN: {found} in {result.output[-3000:]}"
    return result.output


# -- hostile files --------------------------------------------------------------------------
def fifo(path: Path) -> Path:
    """A named pipe with no writer: opening it for reading blocks forever."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return path


def endless(path: Path) -> Path:
    """A symlink to /dev/zero: reads never end."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to("/dev/zero")
    return path


def sparse(path: Path, size: int = 1 << 30, head: bytes = b"") -> Path:
    """A file of ``size`` bytes that takes no disk space (zeros after ``head``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(size)
    return path


def deep_dir(root: Path, depth: int) -> Path:
    """root/d/d/.../d, ``depth`` levels, made with relative steps (no path grows past PATH_MAX)."""
    root.mkdir(parents=True, exist_ok=True)
    here = os.open(root, os.O_RDONLY)
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=here)
            nxt = os.open("d", os.O_RDONLY, dir_fd=here)
            os.close(here)
            here = nxt
    finally:
        os.close(here)
    return root


def remove_deep(root: Path, depth: int) -> None:
    """Undo deep_dir (and write_deep) from the bottom up: shutil.rmtree, and so pytest's
    own clean-up, recurses once per level and fails past Python's recursion limit."""
    for level in range(depth, 0, -1):
        here = root.joinpath(*["d"] * level)
        for entry in os.scandir(here):
            if not entry.is_dir(follow_symlinks=False):
                os.unlink(entry.path)
        os.rmdir(here)


def write_deep(root: Path, depth: int, name: str, text: str) -> None:
    """A file at the bottom of deep_dir(root, depth)."""
    here = os.open(root, os.O_RDONLY)
    try:
        for _ in range(depth):
            nxt = os.open("d", os.O_RDONLY, dir_fd=here)
            os.close(here)
            here = nxt
        fd = os.open(name, os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=here)
        with os.fdopen(fd, "w") as f:
            f.write(text)
    finally:
        os.close(here)


# -- result files ---------------------------------------------------------------------------
_BASE_RUN = json.loads(FIXTURE.read_text())


def base_run() -> dict:
    """The synthetic H100 fixture: a sound run of twelve points, GPU, CPU and DRAM meters."""
    run = copy.deepcopy(_BASE_RUN)
    run["timeline_file"] = None
    return run


def small_run() -> dict:
    """The fixture cut to three points (a prefill, a decode, the failed one): reports of it draw fast."""
    run = base_run()
    run["points"] = [run["points"][i] for i in (0, 3, 11)]
    return run


def save_run(path: Path, run: Any, *, raw: Optional[str] = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(raw if raw is not None else json.dumps(run))
    return path


def no_energy_run() -> dict:
    """A run whose every meter is a null meter: timings, no energy at all."""
    run = base_run()
    run["run_id"] = "no-energy-host-20250101T000000Z"
    run["idle"] = None
    run["meters"] = [
        {"name": f"null-{k}", "kind": k, "method": "none", "reason": "no meter"} for k in ("gpu", "cpu", "dram")
    ]
    for point in run["points"]:
        point.pop("summary", None)
        for rep in point["repeats"]:
            rep.update(energy_j=None, method="none", energy_method="none", active_energy_j=None, codecarbon=None)
            rep["components"] = {
                k: {"kind": k, "energy_j": None, "method": "none", "meter": f"null-{k}"} for k in ("gpu", "cpu", "dram")
            }
    return run


def write_scenario(directory: Path, *, name: str = "scenario.yaml", **kwargs) -> Path:
    path = directory / name
    path.write_text(scenario_text(**kwargs))
    return path


def html_text(html: str) -> str:
    """The report's visible text and attributes: scripts (plotly.js, figure JSON) left out."""
    return re.sub(r"<script\b.*?</script>", "", html, flags=re.DOTALL | re.IGNORECASE)
