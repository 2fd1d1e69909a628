"""Who else is using the CPU: this process tree's share of the host's busy time.

A machine-wide CPU figure (RAPL, or the utilisation estimate) counts every process on
the host. On a shared or busy machine that makes idle and active power read alike: a
baseline taken while another program works is too high, and active energy clamps to 0.
So every window records how much CPU time other processes used in it, and a window (or
idle baseline) where they used more than ``BUSY_OTHERS_CORES`` cores on average is
flagged ``busy-host``. The same share also attributes an estimated package power to this
process tree alone (``measurement.cpu_attribution: process``).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Optional

import psutil

from carbonbench.meters.base import ComponentEnergy, Meter

# Other processes using a quarter of a core on average: well above an idle OS's
# background (a few hundredths of a core), well below one busy thread.
BUSY_OTHERS_CORES = 0.25
BUSY_FLAG = "busy-host"
_IDLE_FIELDS = ("idle", "iowait", "steal")


def machine_cpu_s(times) -> tuple[float, float]:
    """(busy, total) CPU-seconds of all logical CPUs since boot, from psutil.cpu_times()."""
    busy = total = 0.0
    for name in times._fields:
        if name in ("guest", "guest_nice"):  # already counted inside user and nice
            continue
        value = getattr(times, name)
        total += value
        if name not in _IDLE_FIELDS:
            busy += value
    return busy, total


def process_tree_cpu_s(process: Optional[psutil.Process] = None) -> float:
    """CPU-seconds used by this process, its finished children, and its live descendants."""
    process = process or psutil.Process(os.getpid())
    t = process.cpu_times()
    total = t.user + t.system + getattr(t, "children_user", 0.0) + getattr(t, "children_system", 0.0)
    for child in process.children(recursive=True):
        try:
            c = child.cpu_times()
            total += c.user + c.system
        except (psutil.NoSuchProcess, psutil.AccessDenied):  # gone since listed: its time is in the parent's
            continue
    return total


@dataclass(frozen=True)
class HostShare:
    """CPU use over one window: this process tree's, and everyone else's."""

    duration_s: float
    machine_busy_s: float
    tree_s: float

    @property
    def others_cores(self) -> float:
        """Cores' worth of CPU time other processes used, on average over the window."""
        return max(self.machine_busy_s - self.tree_s, 0.0) / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def tree_share(self) -> float:
        """This process tree's share of the host's busy CPU time (0 to 1)."""
        if self.machine_busy_s <= 0:
            return 0.0
        return min(max(self.tree_s / self.machine_busy_s, 0.0), 1.0)

    @property
    def busy(self) -> bool:
        return self.others_cores > BUSY_OTHERS_CORES


class HostClock:
    """Snapshots of machine and process-tree CPU time, turned into a HostShare per window."""

    def __init__(self) -> None:
        self._process = psutil.Process(os.getpid())

    def snapshot(self) -> tuple[float, float, float]:
        busy, _ = machine_cpu_s(psutil.cpu_times())
        return time.perf_counter(), busy, process_tree_cpu_s(self._process)

    def since(self, snapshot: tuple[float, float, float]) -> HostShare:
        return self.share_between(snapshot, self.snapshot())

    @staticmethod
    def share_between(before: tuple[float, float, float], after: tuple[float, float, float]) -> HostShare:
        (t0, busy0, tree0), (t1, busy1, tree1) = before, after
        return HostShare(t1 - t0, busy1 - busy0, tree1 - tree0)


class HostLoadMeter(Meter):
    """No energy of its own: flags windows in which other processes kept the host busy."""

    name = "host-load"
    kind = "host"

    def __init__(self) -> None:
        self._clock = HostClock()

    def begin(self) -> Any:
        return self._clock.snapshot()

    def end(self, snapshot, start_unix_s, end_unix_s) -> list[ComponentEnergy]:
        return []

    def window_flags(self, snapshot: Any) -> tuple[str, ...]:
        return (BUSY_FLAG,) if self._clock.since(snapshot).busy else ()

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "method": "none",
            "flags": f"'{BUSY_FLAG}' when other processes used more than {BUSY_OTHERS_CORES:g} cores on average "
            "during the window (psutil: machine busy CPU time minus this process tree's)",
        }
