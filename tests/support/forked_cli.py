"""`carbonbench` as real processes, cheaply: forked from one that imported torch already.

A ``python -m carbonbench run`` spends seconds importing torch (and the torch modules a
model build pulls in) before it measures anything; a test that runs a dozen of them pays
that a dozen times. Here a forkserver imports it all once (``PRELOAD``), and every run is
a process forked from it: a real process, with real signals and its own exit status,
that runs the real command line (``carbonbench.cli``) from its first line, stderr going
to a file the test can watch. Only the first imports are skipped, so a test of what
happens *during* them (the startup phase) starts a plain subprocess instead.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from pathlib import Path
from typing import Optional

# What a run imports, lazily, on its way to the first window.
PRELOAD = (
    "carbonbench.cli",
    "carbonbench.runner",
    "carbonbench.cli.run",
    "torch._refs",
    "torch._decomp",
    "torch._prims",
    "torch._meta_registrations",
    "torch._dynamo",
    "torch._inductor",
    "sympy",
)


def _main(args: list[str], env: dict, stderr_path: str) -> None:
    os.environ.update(env)
    fd = os.open(stderr_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 2)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    import torch

    from carbonbench.cli import cli

    torch.set_num_threads(1)  # a dozen runs share two cores: no thread oversubscription
    code = 0
    try:
        cli.main(args=args, prog_name="carbonbench")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


class Run:
    """One `carbonbench ARGS` process; ``stderr`` is what it printed so far."""

    def __init__(self, process, stderr_path: Path):
        self.process, self.stderr_path = process, stderr_path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for(self, line: str, timeout_s: float) -> None:
        """Until stderr holds ``line`` (the process printed it); AssertionError if it ends first."""
        deadline = time.monotonic() + timeout_s
        while line not in self.stderr.splitlines():
            if self.returncode is not None or time.monotonic() > deadline:
                raise AssertionError(f"no line {line!r} (exit status {self.returncode}):\n{self.stderr}")
            time.sleep(0.02)

    @property
    def returncode(self) -> Optional[int]:
        code = self.process.poll() if hasattr(self.process, "poll") else self.process.exitcode
        return 128 - code if code is not None and code < 0 else code  # killed by a signal, as a shell says

    def wait(self, timeout_s: float) -> int:
        deadline = time.monotonic() + timeout_s
        while self.returncode is None:
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"still running after {timeout_s} s:\n{self.stderr}")
            time.sleep(0.02)
        return self.returncode

    def kill(self) -> None:
        if self.returncode is None:
            self.process.kill()


class Launcher:
    """Starts runs, forked from a forkserver that has ``PRELOAD`` imported."""

    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)
        self.context = multiprocessing.get_context("forkserver")
        self.context.set_forkserver_preload([*PRELOAD, __name__])
        self._count = 0

    def start(self, args: list[str], **env: str) -> Run:
        self._count += 1
        stderr_path = self.workdir / f"stderr-{self._count}.txt"
        process = self.context.Process(target=_main, args=(list(args), env, str(stderr_path)), daemon=True)
        process.start()
        return Run(process, stderr_path)
