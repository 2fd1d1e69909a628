"""How long a sweep will take, predicted from FLOPs before anything is measured.

The prediction divides each step's analytic FLOPs by a short matmul probe of the device.
It ignores memory-bound work (decode runs slower than it says), so it is a warning about
hours-long sweeps, not a schedule.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from carbonbench.scenario import Point, Scenario, model_card, model_label
from carbonbench.workloads import decode_flops, prefill_flops, train_flops

LONG_SWEEP_S = 3600.0


@dataclass(frozen=True)
class PlannedPoint:
    point: Point
    step_s: float  # estimated seconds per step
    total_s: float  # estimated seconds for warm-up plus all repeats


@dataclass(frozen=True)
class Forecast:
    points: tuple[PlannedPoint, ...]
    flops_per_s: float

    @property
    def total_s(self) -> float:
        return sum(p.total_s for p in self.points)

    @property
    def long(self) -> bool:
        return self.total_s > LONG_SWEEP_S

    @property
    def message(self) -> str:
        """The summary, with a warning in front when the sweep would take hours."""
        return ("WARNING: this sweep would take hours: " if self.long else "") + self.summary

    @property
    def summary(self) -> str:
        slowest = max(self.points, key=lambda p: p.step_s)
        return (
            f"{len(self.points)} points, estimated {human_duration(self.total_s)} from FLOPs at a probed "
            f"{self.flops_per_s / 1e9:.1f} GFLOP/s (slowest step: {slowest.point.key}, "
            f"~{human_duration(slowest.step_s)})"
        )


def probe_flops(device: torch.device, dtype: torch.dtype, seconds: float = 0.2) -> float:
    """A short matmul loop: the device's dense rate, used only to predict durations."""
    n = 1024 if device.type == "cuda" else 256
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    sync()
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        steps += 1
        if steps % 16 == 0:
            sync()  # keep the queue short so the clock sees the work
    sync()
    return 2 * n**3 * steps / (time.perf_counter() - t0)


def plan(scenario: Scenario, points: list[Point], flops_per_s: float) -> list[PlannedPoint]:
    m = scenario.measurement
    cards = {model_label(entry): model_card(entry) for entry in scenario.models}
    recompute = bool(scenario.workloads.train and scenario.workloads.train.activation_checkpointing)
    planned = []
    for p in points:
        arch = cards[p.model].architecture
        if p.workload == "prefill":
            flops = prefill_flops(arch, p.batch_size, p.prompt_tokens)
        elif p.workload in ("decode", "serve"):  # serve: a rough figure, as one full decode batch
            flops = decode_flops(arch, p.batch_size, p.prompt_tokens, p.new_tokens)
        else:
            flops = train_flops(arch, p.batch_size, p.seq_len, recompute)
        step_s = flops / flops_per_s
        warmup = max(m.warmup_steps * step_s, m.warmup_s)
        planned.append(PlannedPoint(p, step_s, warmup + m.repeats * max(m.min_seconds, step_s) + m.cooldown_s))
    return planned


def sweep_forecast(scenario: Scenario, points: list[Point], device: torch.device, dtype: torch.dtype) -> Forecast:
    rate = probe_flops(device, dtype)
    return Forecast(tuple(plan(scenario, points, rate)), rate)


def human_duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.1f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
