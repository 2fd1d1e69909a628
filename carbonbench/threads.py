"""Torch's CPU threads as a measured setting (``measurement.threads``, ``run --threads``).

An integer is used as given; ``auto`` picks the count from the host. The rule comes from
benchmarks/threads.py (tables in benchmarks/README.md): on a 2-core VM shared with other
busy processes, 2 threads were slower than 1 at every workload, because torch's threads
meet at a barrier after each op and a thread that the scheduler has parked holds the
others up. So ``auto`` takes one thread per physical core this process may run on, less
the cores the rest of the host is keeping busy, and never fewer than one. "Busy" is the
smaller of the 1-minute load average and the CPU time the host spent in a 0.1 s sample
before the run (the load average alone still counts a run that has just ended).
``OMP_NUM_THREADS``, when set, wins, as it does for torch itself.

Interop threads (torch's pool for running independent ops in parallel) get the same
count. Torch allows setting that pool only once per process and only before any inter-op
work; when it is too late, the count already in effect is recorded, with the reason.
Nothing here imports torch until a setting is applied.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Literal, Optional, Union

import psutil

ThreadsSetting = Union[Literal["auto"], int]
MAX_THREADS = 4096  # far above any host; a typo of 10^6 threads is refused when read


@dataclass(frozen=True)
class AutoChoice:
    threads: int
    reason: str


def usable_cpus() -> int:
    """Logical CPUs this process may run on (its affinity mask, else the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows: no affinity call
        return psutil.cpu_count(logical=True) or 1


def auto_threads(
    physical: Optional[int] = None,
    logical: Optional[int] = None,
    usable: Optional[int] = None,
    busy_cpus: Optional[float] = None,
    environ: Optional[dict] = None,
) -> AutoChoice:
    """The count ``auto`` means on this host, and why; arguments default to the host's own."""
    environ = os.environ if environ is None else environ
    try:
        omp = parse(environ.get("OMP_NUM_THREADS", "").strip() or "auto")
    except ValueError:  # unusable for torch too; the host's own rule applies
        omp = "auto"
    if isinstance(omp, int):
        return AutoChoice(omp, f"OMP_NUM_THREADS={omp}")
    physical = physical or psutil.cpu_count(logical=False) or 1
    logical = logical or psutil.cpu_count(logical=True) or physical
    usable = usable or usable_cpus()
    # Affinity counts logical CPUs; with SMT two of them share a core.
    cores = max(1, min(physical, math.ceil(usable * physical / logical)))
    busy_cpus = host_busy_cpus() if busy_cpus is None else busy_cpus
    busy = min(cores - 1, round(busy_cpus * cores / logical)) if busy_cpus > 0.5 else 0
    threads = max(1, cores - busy)
    return AutoChoice(threads, f"{cores} physical core(s) usable, {busy_cpus:.1f} CPUs busy with other work")


def host_busy_cpus(sample_s: float = 0.1) -> float:
    """CPUs' worth of work the rest of the host is doing: min(load average, a short sample)."""
    sampled = psutil.cpu_percent(interval=sample_s) / 100 * (psutil.cpu_count(logical=True) or 1)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else sampled
    return min(load, sampled)


def parse(value: object) -> ThreadsSetting:
    """'auto' or a positive integer (also as text, from the command line); ValueError otherwise."""
    if value == "auto":
        return "auto"
    if isinstance(value, bool):
        raise ValueError(f"expected 'auto' or a positive integer, not {value!r}")
    try:
        n = int(str(value).strip())
    except ValueError:
        raise ValueError(f"expected 'auto' or a positive integer, not {value!r}") from None
    if not 1 <= n <= MAX_THREADS:
        raise ValueError(f"expected 'auto' or an integer from 1 to {MAX_THREADS}, not {value!r}")
    return n


def apply(setting: ThreadsSetting) -> dict:
    """Set torch's intra-op and interop threads; what is in effect, for the environment block."""
    import torch

    choice = auto_threads() if setting == "auto" else AutoChoice(int(setting), "set")
    torch.set_num_threads(choice.threads)
    interop_note = None
    if torch.get_num_interop_threads() != choice.threads:
        try:
            torch.set_num_interop_threads(choice.threads)
        except RuntimeError as exc:  # set once per process, before any inter-op work
            interop_note = f"not changed: {' '.join(str(exc).split())}"
    return {
        "threads_setting": setting,
        "threads_reason": choice.reason,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "torch_interop_note": interop_note,
    }


def threads_text(env: dict) -> str:
    """A run's environment block on threads, for the report (older runs: the count only)."""
    if env.get("torch_threads") is None:
        return ""
    setting = env.get("threads_setting")
    how = f" (measurement.threads {setting}: {env.get('threads_reason')})" if setting is not None else ""
    interop = f", interop {env['torch_interop_threads']}" if env.get("torch_interop_threads") is not None else ""
    note = f"; interop {env['torch_interop_note']}" if env.get("torch_interop_note") else ""
    return f"{env['torch_threads']}{interop}{how}{note}"
