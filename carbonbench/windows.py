"""What is done with a workload: warm it up (never measured), then measure windows.

A window is time-bounded: steps run until it has lasted ``min_seconds`` (and at least
ten meter updates), with the device synchronised at both edges and after every step so
that each step's latency is its own. Under torchrun every rank stops at the same step.
"""

from __future__ import annotations

import gc
import statistics
import time
from typing import Callable, Optional

import psutil
import torch

from carbonbench.distributed.context import DistributedFailure, Job
from carbonbench.errors import MeterError, UserError
from carbonbench.meters.idle import IdleBaseline
from carbonbench.records import RepeatRecord, window_label
from carbonbench.scenario import MeasurementConfig
from carbonbench.session import Interrupted, Session
from carbonbench.workloads import NonFiniteLoss, Workload

Sync = Callable[[], None]
# A window holds whole steps, so one step longer than this share of min_seconds can stretch it
# well past min_seconds (a decode step is a whole generation): the repeat is flagged.
LONG_STEP_SHARE = 0.25
LONG_STEP = "long-step"


def sync_fn(device: torch.device) -> Sync:
    return (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)


def warm_up(workload: Workload, m: MeasurementConfig, sync: Sync, job: Job) -> dict:
    """Steps until warmup_steps and warmup_s are both reached, each timed.

    The first step pays for torch.compile, CUDA-graph capture and allocator growth; it
    happens here, never in a window. A compiling engine gets at least three steps (a
    second shape or state may compile again), and compile_s is the warm-up's time beyond
    its fastest step's pace. Then the workload is sealed: a recompile or graph capture in
    a window is an error, not a slow window.
    """
    min_steps = max(m.warmup_steps, 3 if workload.compiles else 1)
    times: list[float] = []
    t0 = time.perf_counter()
    # all_done: under torchrun every rank stops at the same step (steps hold collectives).
    while not job.all_done(len(times) >= min_steps and time.perf_counter() - t0 >= m.warmup_s):
        s0 = time.perf_counter()
        workload.step()
        sync()
        times.append(time.perf_counter() - s0)
    workload.check()
    out = {"steps": len(times), "duration_s": time.perf_counter() - t0, "first_step_s": times[0]}
    if len(times) > 1:
        out["steady_step_s"] = min(times[1:])
    if workload.compiles:
        out["compile_s"] = sum(max(t - out["steady_step_s"], 0.0) for t in times)
    workload.seal()
    return out


class Latencies:
    """Per-step wall times of a window, and their percentiles."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def add(self, seconds: float) -> None:
        self.values.append(seconds)

    def percentiles(self) -> dict[str, float]:
        if not self.values:
            return {}
        s = sorted(self.values)

        def pct(q: float) -> float:
            pos = q * (len(s) - 1)
            lo, hi = int(pos), min(int(pos) + 1, len(s) - 1)
            return s[lo] + (s[hi] - s[lo]) * (pos - lo)

        return {
            "p50": pct(0.5),
            "p90": pct(0.9),
            "p99": pct(0.99),
            "mean": statistics.fmean(s),
            "min": s[0],
            "max": s[-1],
        }


def measure_window(
    workload: Workload,
    point_key: str,
    repeat: int,
    session: Session,
    m: MeasurementConfig,
    sync: Sync,
    job: Job,
    idle: Optional[IdleBaseline],
) -> RepeatRecord:
    """One measured window of a point's workload, as a repeat record.

    codecarbon gets one task per window, opened and closed just outside it, so both tools
    measure the same work and their figures compare repeat by repeat.
    """
    # A window shorter than ~10 meter updates measures the update grid, not the work.
    min_s = max(m.min_seconds, 10 * session.resolution_s)
    latencies = Latencies()
    timings: dict[str, list[float]] = {}
    label = window_label(point_key, repeat)
    session.begin_task(label)
    with session.window(label, span=True) as w:
        t0 = time.perf_counter()
        while True:
            s0 = time.perf_counter()
            for k, v in workload.step().items():
                timings.setdefault(k, []).append(v)
            sync()
            latencies.add(time.perf_counter() - s0)
            if job.all_done(time.perf_counter() - t0 >= min_s):
                break
        w.extra["steps"] = len(latencies.values)
    codecarbon = session.end_task()
    workload.check()
    steps = len(latencies.values)
    meas = w.measurement  # every rank's energy summed (CPU and DRAM once per node)
    flags = (["extended-window"] if min_s > m.min_seconds else []) + list(meas.flags)
    if latencies.values and max(latencies.values) > LONG_STEP_SHARE * min_s:
        flags.append(LONG_STEP)  # whole steps only: the window may have run past min_seconds by up to one
    rep = RepeatRecord.from_measurement(
        repeat,
        meas,
        steps=steps,
        tokens=steps * workload.tokens_per_step,
        flops=steps * workload.flops_per_step,
        model_flops=steps * workload.model_flops_per_step,
        latency_s=latencies.percentiles(),
        active_energy_j=idle.active_energy_j(meas) if idle is not None else None,
        codecarbon=codecarbon,
    )
    rep.flags = flags
    for key, value in (w.detail or {}).items():
        setattr(rep, key, value)  # world_size, ranks, nodes
    for key, values in timings.items():
        mean = statistics.fmean(values)
        if key in ("ttft_s", "tpot_s"):
            setattr(rep, key, mean)
        else:
            rep.extra[key] = mean
    return rep


# -- what a failed point was -------------------------------------------------------------
def failure(exc: BaseException) -> Optional[tuple[str, str]]:
    """(status, message) for an error that fails one point; None for one that ends the run."""
    if isinstance(exc, (KeyboardInterrupt, Interrupted, UserError, DistributedFailure)):
        return None
    if isinstance(exc, torch.OutOfMemoryError):
        return "oom", first_line(exc)
    if isinstance(exc, NonFiniteLoss):
        return "nan", str(exc)
    if isinstance(exc, MeterError):
        return "meter-error", str(exc)
    if isinstance(exc, Exception):  # a broken point must not end the sweep
        return "error", f"{type(exc).__name__}: {first_line(exc)}"
    return None


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# -- memory ------------------------------------------------------------------------------
class PeakMemory:
    """The most memory a point held: the CUDA allocator's peak, or the process RSS on the CPU."""

    def __init__(self, device: torch.device):
        self.device = device

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_bytes(self) -> Optional[int]:
        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.device))
        return int(psutil.Process().memory_info().rss)


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
