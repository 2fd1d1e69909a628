"""CPU power estimated from utilisation and a TDP, for machines without RAPL.

Power = TDP x (idle_fraction + (1 - idle_fraction) x utilisation), with utilisation the
share of busy time over the visible logical CPUs during the window. This is a model, not a
measurement, and every figure it gives is labelled ``estimated``.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import psutil

from carbonbench.meters.base import ComponentEnergy, Meter

# codecarbon's fallback for unknown CPUs, used here for the same reason: some number is
# needed, and this one is at least a published convention that can be compared with.
WATTS_PER_THREAD_FALLBACK = 4.0
IDLE_FRACTION = 0.1


@dataclass(frozen=True)
class CpuTdp:
    tdp_w: float
    source: str


def cpu_model_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown CPU"


def _codecarbon_tdp_table() -> dict[str, float]:
    try:
        import codecarbon
    except ImportError:
        return {}
    path = Path(codecarbon.__file__).parent / "data" / "hardware" / "cpu_power.csv"
    try:
        with path.open(newline="") as f:
            return {row["Name"].strip(): float(row["TDP"]) for row in csv.DictReader(f) if row.get("TDP")}
    except (OSError, ValueError, KeyError):
        return {}


def lookup_tdp(model_name: str, threads: int, override_w: Optional[float] = None) -> CpuTdp:
    """The TDP to use: the user's, codecarbon's table, or a per-thread fallback."""
    if override_w is not None:
        return CpuTdp(override_w, "scenario: measurement.cpu_tdp_w")
    table = _codecarbon_tdp_table()
    # Longest table entry that appears as a whole token sequence in the model string.
    normalised = re.sub(r"\(r\)|\(tm\)|cpu|@.*$", " ", model_name.lower())
    best = None
    for name, tdp in table.items():
        pattern = r"(?<![\w-])" + re.escape(name.lower()) + r"(?![\w-])"
        if re.search(pattern, normalised) and (best is None or len(name) > len(best[0])):
            best = (name, tdp)
    if best and any(ch.isdigit() for ch in best[0]):
        return CpuTdp(best[1], f"codecarbon cpu_power.csv: {best[0]}")
    return CpuTdp(
        WATTS_PER_THREAD_FALLBACK * threads,
        f"fallback: {WATTS_PER_THREAD_FALLBACK:g} W per thread x {threads} threads (CPU model not in codecarbon's table)",
    )


class CpuEstimateMeter(Meter):
    name = "cpu-estimate"
    resolution_s = 0.0

    def __init__(self, tdp_w: Optional[float] = None):
        self.threads = psutil.cpu_count(logical=True) or 1
        self.model = cpu_model_name()
        self.tdp = lookup_tdp(self.model, self.threads, tdp_w)

    def begin(self) -> Any:
        return psutil.cpu_times()

    def end(self, snapshot, start_unix_s, end_unix_s) -> list[ComponentEnergy]:
        duration_s = max(end_unix_s - start_unix_s, 0.0)
        util = utilisation(snapshot, psutil.cpu_times())
        power_w = self.power_w(util)
        return [ComponentEnergy("cpu", "cpu", power_w * duration_s, "estimated", self.name)]

    def power_w(self, utilisation: float) -> float:
        return self.tdp.tdp_w * (IDLE_FRACTION + (1 - IDLE_FRACTION) * utilisation)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": "cpu",
            "method": "estimated",
            "cpu_model": self.model,
            "threads": self.threads,
            "tdp_w": self.tdp.tdp_w,
            "tdp_source": self.tdp.source,
            "model": f"power = TDP x ({IDLE_FRACTION} + {1 - IDLE_FRACTION:.1f} x utilisation)",
        }


def utilisation(before, after) -> float:
    """Busy share of all logical CPUs between two psutil.cpu_times() snapshots."""
    idle_fields = ("idle", "iowait")
    busy = total = 0.0
    for name in before._fields:
        if name in ("guest", "guest_nice"):  # already counted inside user and nice
            continue
        delta = getattr(after, name) - getattr(before, name)
        total += delta
        if name not in idle_fields:
            busy += delta
    if total <= 0:
        return 0.0
    return min(max(busy / total, 0.0), 1.0)
