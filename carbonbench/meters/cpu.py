"""CPU and DRAM power estimated from models, for machines without readable RAPL.

CPU: power = TDP x (idle_fraction + (1 - idle_fraction) x utilisation), with utilisation
the busy share of all logical CPUs during the window (machine-wide, from /proc/stat via
psutil: other processes count too, as they do for a power meter). TDP x packages on
bare metal. With ``attribution="process"`` the window's package energy is scaled by this
process tree's share of the host's busy CPU time (carbonbench.meters.host), so a busy
neighbour's work is not counted as ours. DRAM: a constant power per GB of installed memory.

These are models, not measurements, and every figure they give is labelled
``estimated``. Their parameters and sources are in ``describe()``.
"""

from __future__ import annotations

import csv
import functools
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

import psutil

from carbonbench.meters.base import ComponentEnergy, Meter
from carbonbench.meters.host import HostClock
from carbonbench.meters.sampler import SampledMeter

Attribution = Literal["machine", "process"]
ATTRIBUTIONS = ("machine", "process")
ATTRIBUTION_TEXT = {
    "machine": "machine: the whole package's estimated energy, whoever used it",
    "process": "process: the package's estimated energy x this process tree's share of the host's busy CPU time "
    "(psutil CPU times of the process and its children)",
}

# codecarbon's fallback for unknown CPUs, used here for the same reason: some number is
# needed, and this one is at least a published convention that can be compared with.
WATTS_PER_THREAD_FALLBACK = 4.0
IDLE_FRACTION = 0.1
# 3 W per 8 GB: Crucial's figure for DDR3/DDR4, and codecarbon's RAM model before 3.0.
# It overstates modern high-capacity RDIMMs; DRAM power barely moves with load, so it
# adds a near-constant term that the idle baseline removes from active energy.
DRAM_WATTS_PER_GB = 3.0 / 8.0
DRAM_MODEL_SOURCE = "3 W per 8 GB of installed memory (Crucial; codecarbon < 3.0)"


@dataclass(frozen=True)
class CpuTdp:
    tdp_w: float
    source: str


@dataclass(frozen=True)
class CpuTopology:
    model: str
    threads: int  # logical CPUs this OS sees
    packages: int  # distinct physical ids (sockets) this OS sees
    virtualised: bool  # the "hypervisor" CPU flag: a VM, where packages are virtual


def cpu_topology(cpuinfo: Optional[str] = None) -> CpuTopology:
    threads = psutil.cpu_count(logical=True) or 1
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    model, packages, virtualised = None, set(), False
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "model name" and model is None:
            model = value
        elif key == "physical id":
            packages.add(value)
        elif key == "flags" and "hypervisor" in value.split():
            virtualised = True
    if model is None:
        import platform

        model = platform.processor() or "unknown CPU"
    return CpuTopology(model, threads, max(len(packages), 1), virtualised)


def cpu_model_name() -> str:
    return cpu_topology().model


@functools.lru_cache(maxsize=1)
def _codecarbon_tdp_table() -> dict[str, float]:
    try:
        import codecarbon
    except ImportError:
        return {}
    path = Path(codecarbon.__file__).parent / "data" / "hardware" / "cpu_power.csv"
    table = {}
    try:
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                try:  # the table has a few malformed rows (e.g. "27.29.5"); skip them only
                    table[_normalise(row["Name"])] = float(row["TDP"])
                except (KeyError, TypeError, ValueError):
                    continue
    except OSError:
        return {}
    return table


def _normalise(name: str) -> str:
    name = re.sub(r"\((r|tm)\)|\bcpu\b|@.*$|\bprocessor\b", " ", name.lower())
    return " ".join(name.split())


def lookup_tdp(model_name: str, threads: int, override_w: Optional[float] = None) -> CpuTdp:
    """The TDP of one package: the user's, codecarbon's table, or a per-thread fallback."""
    if override_w is not None:
        return CpuTdp(override_w, "scenario: measurement.cpu_tdp_w")
    normalised = _normalise(model_name)
    best = None
    # Longest table entry that appears as a whole token sequence in the model string,
    # and that has a model number: "Intel Xeon" alone would match every Xeon.
    for name, tdp in _codecarbon_tdp_table().items():
        if name not in normalised or not any(ch.isdigit() for ch in name) or (best and len(name) <= len(best[0])):
            continue
        if re.search(r"(?<![\w-])" + re.escape(name) + r"(?![\w-])", normalised):
            best = (name, tdp)
    if best:
        return CpuTdp(best[1], f"codecarbon cpu_power.csv: {best[0]}")
    return CpuTdp(
        WATTS_PER_THREAD_FALLBACK * threads,
        f"fallback: {WATTS_PER_THREAD_FALLBACK:g} W per thread x {threads} threads (CPU model not in codecarbon's table)",
    )


def machine_tdp(topology: CpuTopology, override_w: Optional[float] = None) -> CpuTdp:
    """The TDP that bounds this machine's CPU power, with how it was reached.

    A table TDP is per package, so bare metal multiplies it by the socket count. In a VM
    the table TDP is the whole host package's and the VM's share is unknown (the host's
    thread count is not visible), so it stands as an upper bound, said so in the source;
    ``measurement.cpu_tdp_w`` is the way to give the real share.
    """
    tdp = lookup_tdp(topology.model, topology.threads, override_w)
    if override_w is not None or tdp.source.startswith("fallback"):
        return tdp  # already for the whole machine (the fallback counts visible threads)
    if topology.virtualised:
        return CpuTdp(tdp.tdp_w, tdp.source + "; VM: a whole host package, an upper bound for this VM's share")
    if topology.packages > 1:
        return CpuTdp(tdp.tdp_w * topology.packages, f"{tdp.source} x {topology.packages} packages")
    return tdp


class CpuEstimateMeter(SampledMeter):
    """CPU energy from utilisation and TDP. ``sample_interval_s`` turns on a timeline."""

    name = "cpu-estimate"
    resolution_s = 0.0

    def __init__(
        self,
        tdp_w: Optional[float] = None,
        *,
        sample_interval_s: Optional[float] = None,
        topology: Optional[CpuTopology] = None,
        attribution: Attribution = "machine",
    ):
        if attribution not in ATTRIBUTIONS:
            raise ValueError(f"attribution must be one of {ATTRIBUTIONS}, not {attribution!r}")
        self.attribution = attribution
        self._clock = HostClock()
        self.topology = topology or cpu_topology()
        self.threads = self.topology.threads
        self.model = self.topology.model
        self.tdp = machine_tdp(self.topology, tdp_w)
        self._init_sampler(self._sample, sample_interval_s)
        self._prev_times = None
        self._process = psutil.Process(os.getpid())

    def begin(self) -> Any:
        return psutil.cpu_times(), (self._clock.snapshot() if self.attribution == "process" else None)

    def end(self, snapshot, start_unix_s, end_unix_s) -> list[ComponentEnergy]:
        times, host = snapshot
        duration_s = max(end_unix_s - start_unix_s, 0.0)
        energy_j = self.power_w(utilisation(times, psutil.cpu_times())) * duration_s
        if host is not None:
            energy_j *= self._clock.since(host).tree_share
        return [ComponentEnergy("cpu", "cpu", energy_j, "estimated", self.name)]

    def power_w(self, utilisation: float) -> float:
        return self.tdp.tdp_w * (IDLE_FRACTION + (1 - IDLE_FRACTION) * utilisation)

    # The timeline: what the model sees (utilisation, hence power) plus memory, which is
    # what a CPU run runs out of. Cheap reads only: /proc/stat and two /proc files.
    def _sample(self) -> list[dict[str, Any]]:
        now, times = time.time(), psutil.cpu_times()
        host = self._clock.snapshot() if self.attribution == "process" else None
        prev, self._prev_times = self._prev_times, (times, host)
        if prev is None:
            return []
        util = utilisation(prev[0], times)
        # The timeline's power is attributed as the windows' energy is.
        share = self._clock.share_between(prev[1], host).tree_share if host is not None else 1.0
        return [
            {
                "unix_s": now,
                "component": "cpu",
                "kind": "cpu",
                "power_w": self.power_w(util) * share,
                "cpu_util_pct": 100.0 * util,
                "memory_used_bytes": psutil.virtual_memory().used,
                "rss_bytes": self._process.memory_info().rss,
            }
        ]

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": "cpu",
            "method": "estimated",
            "cpu_model": self.model,
            "threads": self.threads,
            "packages": self.topology.packages,
            "virtualised": self.topology.virtualised,
            "tdp_w": self.tdp.tdp_w,
            "tdp_source": self.tdp.source,
            "model": f"power = TDP x ({IDLE_FRACTION:g} + {1 - IDLE_FRACTION:g} x utilisation)",
            "utilisation": "machine-wide busy share of all logical CPUs (psutil.cpu_times)",
            "attribution": ATTRIBUTION_TEXT[self.attribution],
            "sampler": self.sampler_stats(),
        }


class DramEstimateMeter(Meter):
    """DRAM energy as a constant power per GB of installed memory."""

    name = "dram-estimate"
    resolution_s = 0.0

    def __init__(self, watts_per_gb: float = DRAM_WATTS_PER_GB, total_bytes: Optional[int] = None):
        self.total_bytes = total_bytes if total_bytes is not None else psutil.virtual_memory().total
        self.watts_per_gb = watts_per_gb
        self.power_w = self.watts_per_gb * self.total_bytes / 1e9

    def begin(self) -> Any:
        return None

    def end(self, snapshot, start_unix_s, end_unix_s) -> list[ComponentEnergy]:
        duration_s = max(end_unix_s - start_unix_s, 0.0)
        return [ComponentEnergy("dram", "dram", self.power_w * duration_s, "estimated", self.name)]

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": "dram",
            "method": "estimated",
            "memory_bytes": self.total_bytes,
            "power_w": self.power_w,
            "model": f"power = {self.watts_per_gb:g} W/GB x installed memory, constant",
            "source": DRAM_MODEL_SOURCE if self.watts_per_gb == DRAM_WATTS_PER_GB else "caller",
        }


def utilisation(before, after) -> float:
    """Busy share of all logical CPUs between two psutil.cpu_times() snapshots."""
    # steal: a VM's vCPU waiting for the host, which then burns power for someone else
    idle_fields = ("idle", "iowait", "steal")
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
