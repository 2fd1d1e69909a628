"""Background sampling of power (and whatever else a meter reads), off the measured path.

A ``Sampler`` runs one daemon thread that calls a meter's ``read()`` every ``interval_s``
and keeps the rows. The measured loop never calls into it: the only contact is a lock
held for a list append. Errors are recorded, not swallowed: a fatal one (or a run of
transient ones) stops the thread, the meter reports it through ``Meter.flags()``, and
``stop()`` re-raises it as a ``SamplerError``.

``integrate`` turns a power series into energy over a window by the trapezoidal rule,
interpolating at the window edges, so a sample need not fall exactly on an edge.
"""

from __future__ import annotations

import bisect
import threading
import time
from typing import Any, Callable, Optional, Sequence

from carbonbench.errors import MeterError
from carbonbench.meters.base import Meter

# Every column a timeline row may carry; rows leave out (or set None) what they lack.
TIMELINE_COLUMNS = (
    "unix_s",
    "component",
    "kind",  # gpu, cpu or dram: what the component is, so no reader guesses it from the name
    "power_w",
    "sm_clock_mhz",
    "mem_clock_mhz",
    "gpu_util_pct",
    "mem_util_pct",
    "temperature_c",
    "memory_used_bytes",
    "cpu_util_pct",
    "rss_bytes",
)


class SamplerError(MeterError):
    """The background sampler failed; ``__cause__`` holds the original error."""


class Sampler:
    """Calls ``read() -> list[row]`` every ``interval_s`` on a daemon thread.

    Each row is a dict with at least ``unix_s``, ``component`` and ``power_w``.
    ``add(rows)`` lets the owning meter insert samples of its own (taken at window
    edges), so the series covers every window exactly.
    """

    def __init__(
        self,
        read: Callable[[], list[dict[str, Any]]],
        interval_s: float,
        name: str,
        max_consecutive_errors: int = 3,
    ):
        if interval_s <= 0:
            raise ValueError(f"sampler interval must be positive (got {interval_s})")
        self._read = read
        self.interval_s = float(interval_s)
        self.name = name
        self.max_consecutive_errors = max_consecutive_errors
        self._lock = threading.Lock()
        self._rows: list[dict[str, Any]] = []
        # Per component: sorted times and powers, for integration without a scan.
        self._series: dict[str, tuple[list[float], list[float]]] = {}
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.error: Optional[BaseException] = None
        self.error_messages: list[str] = []  # every error seen, transient ones included
        self.reads = 0
        self.read_time_s = 0.0
        self.thread_cpu_s = 0.0  # CPU time of the sampler thread: its cost, whatever the load

    # -- lifecycle -------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.running:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"carbonbench-sampler-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop and join the thread; raise SamplerError if it failed. Safe to call twice."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout_s)
            if thread.is_alive():  # a read stuck in the driver: leave the daemon behind
                raise SamplerError(f"{self.name} sampler did not stop within {timeout_s:g} s")
        if self.error is not None:
            error, self.error = self.error, None
            raise SamplerError(f"{self.name} sampler failed: {error}") from error

    def _run(self) -> None:
        cpu0 = self.thread_cpu_s - time.thread_time()  # carried over across restarts
        consecutive = 0
        next_t = time.perf_counter()
        while not self._stop.is_set():
            t0 = time.perf_counter()
            try:
                rows = self._read()
            except Exception as exc:
                consecutive += 1
                if len(self.error_messages) < 100:
                    self.error_messages.append(f"{type(exc).__name__}: {exc}")
                if getattr(exc, "fatal", False) or consecutive >= self.max_consecutive_errors:
                    self.error = exc
                    return
            else:
                consecutive = 0
                self.add(rows)
            self.reads += 1
            self.read_time_s += time.perf_counter() - t0
            self.thread_cpu_s = cpu0 + time.thread_time()
            next_t += self.interval_s
            delay = next_t - time.perf_counter()
            if delay < 0:  # fell behind (slow reads): skip the missed ticks, don't burst
                next_t = time.perf_counter()
                delay = 0.0
            self._stop.wait(delay)

    # -- data ------------------------------------------------------------------------
    def add(self, rows: Sequence[dict[str, Any]]) -> None:
        with self._lock:
            for row in rows:
                self._rows.append(row)
                power = row.get("power_w")
                if power is None:
                    continue
                times, powers = self._series.setdefault(row["component"], ([], []))
                t = row["unix_s"]
                if not times or t >= times[-1]:
                    times.append(t)
                    powers.append(power)
                else:  # an edge sample that raced a thread sample
                    i = bisect.bisect_right(times, t)
                    times.insert(i, t)
                    powers.insert(i, power)

    def rows(self) -> list[dict[str, Any]]:
        with self._lock:
            return sorted(self._rows, key=lambda r: r["unix_s"])

    def drain(self, before_unix_s: float) -> list[dict[str, Any]]:
        """Hand over the rows taken so far and forget power samples before ``before_unix_s``.

        A long run would otherwise hold every sample until its end. The caller promises
        that no window ending before ``before_unix_s`` is left to integrate; one sample
        before it is kept per component, so a window opening right after still has a
        neighbour to interpolate from.
        """
        with self._lock:
            rows, self._rows = self._rows, []
            for component, (times, powers) in self._series.items():
                cut = bisect.bisect_left(times, before_unix_s) - 1
                if cut > 0:
                    self._series[component] = (times[cut:], powers[cut:])
        rows.sort(key=lambda r: r["unix_s"])
        return rows

    def integrate(self, component: str, start_unix_s: float, end_unix_s: float) -> Optional[float]:
        with self._lock:
            times, powers = self._series.get(component, ([], []))
            return integrate(times, powers, start_unix_s, end_unix_s, max_gap_s=max(1.0, 3 * self.interval_s))

    def stats(self) -> dict[str, Any]:
        return {
            "interval_s": self.interval_s,
            "running": self.running,
            "reads": self.reads,
            "mean_read_s": self.read_time_s / self.reads if self.reads else None,
            "thread_cpu_s": self.thread_cpu_s,
            "errors": list(self.error_messages),
        }


class SampledMeter(Meter):
    """A meter that may keep a background timeline: the sampler's life follows the meter's."""

    def _init_sampler(self, read: Callable[[], list[dict[str, Any]]], interval_s: Optional[float]) -> None:
        # Without an interval the sampler never starts, but its buffer still takes edge rows.
        self._sampling = interval_s is not None
        self.sampler = Sampler(read, interval_s or 1.0, self.name)

    def start(self) -> None:
        if self._sampling:
            self.sampler.start()

    def close(self) -> None:
        self.sampler.stop()

    def flags(self) -> tuple[str, ...]:
        if self._sampling and not self.sampler.running:
            return (f"sampler-stopped:{self.name}",)
        return ()

    def timeline(self) -> list[dict[str, Any]]:
        return self.sampler.rows()

    def drain_timeline(self, before_unix_s: float) -> list[dict[str, Any]]:
        return self.sampler.drain(before_unix_s)

    def sampler_stats(self) -> dict[str, Any]:
        return {**self.sampler.stats(), "enabled": self._sampling}


def integrate(
    times: Sequence[float],
    powers: Sequence[float],
    t0: float,
    t1: float,
    max_gap_s: Optional[float] = None,
) -> Optional[float]:
    """Energy (J) of a sorted power series (W) over [t0, t1] by the trapezoidal rule.

    The power at each edge is interpolated between its neighbours, or held from the
    nearest sample when the series stops short of the edge. None when there is no
    sample, or when the series stops more than ``max_gap_s`` short of either edge:
    holding a value that long would be a guess, not an integral.
    """
    if t1 < t0:
        raise ValueError(f"window ends before it starts ({t0} > {t1})")
    if not times:
        return None
    if max_gap_s is not None and (times[0] - t0 > max_gap_s or t1 - times[-1] > max_gap_s):
        return None
    if t1 == t0:
        return 0.0
    lo = bisect.bisect_right(times, t0)
    hi = bisect.bisect_left(times, t1)
    ts = [t0, *times[lo:hi], t1]
    ps = [_at(times, powers, t0), *powers[lo:hi], _at(times, powers, t1)]
    return sum((ts[i + 1] - ts[i]) * (ps[i + 1] + ps[i]) / 2 for i in range(len(ts) - 1))


def _at(times: Sequence[float], powers: Sequence[float], t: float) -> float:
    i = bisect.bisect_left(times, t)
    if i == 0:
        return powers[0]
    if i == len(times):
        return powers[-1]
    ta, tb = times[i - 1], times[i]
    if tb == ta:
        return powers[i]
    return powers[i - 1] + (powers[i] - powers[i - 1]) * (t - ta) / (tb - ta)
