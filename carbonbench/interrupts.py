"""Ctrl-C and SIGTERM: one exception, raised wherever the run is, and never swallowed.

``with interrupts():`` makes both signals raise ``Interrupted`` (exit status 128 +
signal). ``carbonbench run`` installs it before it reads the scenario or imports torch,
so every phase, model build, warm-up and compile included, ends the same way.

A SIGTERM in the warm-up used to be lost: ``Interrupted`` was an ``Exception``, and
torch.compile, which runs inside the warm-up, catches exceptions. Raised while inductor
builds its CPU vector-ISA probe (``cpu_vec_isa.check_build``: ``except Exception:
return False``) it was swallowed, the compile went on and the run completed with status
0; raised inside dynamo's tracing or inductor's lowering it came back wrapped as a torch
error, so the point was recorded as failed and the sweep went on. Now it derives from
BaseException, as KeyboardInterrupt does, and a signal is also remembered: ``phase()``,
called at every phase boundary, raises it again should any library swallow it anyway.
(Ctrl-C before the handlers existed became click's "Aborted!" with status 1.)

The first signal raises; later ones are noted only, so that cleanup (meters, the
timeline, the closing write) is not cut short by an impatient second Ctrl-C. Inside
``deferred()`` (the run file's closing write) a signal is noted and raised at its end.

``CARBONBENCH_PAUSE_AT=PHASE`` is a test hook: at the first ``phase(PHASE)`` the
process prints ``carbonbench: paused at PHASE`` on stderr and waits there for a
signal, so a test can interrupt each phase deterministically (tests/test_signals.py).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from typing import Iterator, Optional

PAUSE_ENV = "CARBONBENCH_PAUSE_AT"
PAUSE_LIMIT_S = 120.0  # a paused process nobody signals goes on by itself
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """Ctrl-C or SIGTERM: the run stops, keeps what it measured, and exits 128 + signal."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.exit_code = 128 + signum


class _State:
    depth = 0  # nested interrupts() blocks
    previous: dict = {}
    received: Optional[int] = None  # the first signal since the outermost block began
    deferring = 0
    paused: set = set()


def _handler(signum, frame) -> None:
    first = _State.received is None
    if first:
        _State.received = signum
    if first and not _State.deferring:
        raise Interrupted(signum)


@contextlib.contextmanager
def interrupts() -> Iterator[None]:
    """SIGINT and SIGTERM raise Interrupted inside; a KeyboardInterrupt leaves as one too.

    Off the main thread Python cannot install handlers: the block then changes nothing.
    """
    installing = _State.depth == 0 and threading.current_thread() is threading.main_thread()
    if installing:
        _State.received, _State.deferring = None, 0
        _State.previous = {s: signal.signal(s, _handler) for s in SIGNALS}
    if installing or _State.depth:
        _State.depth += 1
    try:
        yield
    except KeyboardInterrupt:
        raise Interrupted(signal.SIGINT) from None
    finally:
        if installing or _State.depth:
            _State.depth -= 1
        if installing:
            for s, previous in _State.previous.items():
                signal.signal(s, previous)


def pending() -> Optional[int]:
    """The signal received inside the interrupts() block under way, if any."""
    return _State.received if _State.depth else None


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """A signal inside the block waits for its end (a write that must not be cut short);
    there, unless an exception is already on its way out, a signal received raises."""
    _State.deferring += 1
    try:
        yield
    finally:
        _State.deferring -= 1
    if pending() is not None and not _State.deferring and sys.exc_info()[0] is None:
        raise Interrupted(_State.received)


def phase(name: str, environ=os.environ) -> None:
    """A phase boundary: our handlers are put back should a library have replaced them,
    a signal that some library swallowed is raised here again; with
    CARBONBENCH_PAUSE_AT=name, the first time, wait here for a signal (the test hook)."""
    if _State.depth and threading.current_thread() is threading.main_thread():
        for s in SIGNALS:  # a library (a compiler, a launcher) may have put its own in place
            if signal.getsignal(s) is not _handler:
                signal.signal(s, _handler)
    if environ.get(PAUSE_ENV) == name and name not in _State.paused:
        _State.paused.add(name)
        sys.stderr.write(f"carbonbench: paused at {name}\n")
        sys.stderr.flush()
        deadline = time.monotonic() + PAUSE_LIMIT_S
        while _State.received is None and time.monotonic() < deadline:
            time.sleep(0.01)  # the handler runs here, and raises out of the sleep
    if pending() is not None and not _State.deferring:
        raise Interrupted(_State.received)
