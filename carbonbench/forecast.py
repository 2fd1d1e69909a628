"""How long a sweep will take, predicted from FLOPs before anything is measured.

Each step's analytic FLOPs are divided by the rate of a short matmul probe shaped like the
step's own matmuls: ``[tokens, d_model] @ [d_model, ffn_dim]`` of the point's model, with
as many rows as one forward of the step multiplies (prefill and training: batch x
sequence; a decode step: the batch, against a weight as large as the model's, out of
cache). So a batch-1 decode step, which streams the weights for one row, is timed at the
rate such a product really reaches, not at the dense peak.
Training points probe the product with its backward. The probe runs in the run's dtype and at the run's torch threads (the runner sets them
first, carbonbench.threads). Rows are capped where the rate no longer grows, and the
weight at 2^24 elements, so a probe of a large model costs milliseconds, not its weights.

Building each model is timed from a probe of the random initialisation. What it leaves
out (Python overhead per op, attention's own cost at long sequences, the optimizer's
memory traffic, a first step's one-off costs) makes it low for small steps; the benchmark
benchmarks/forecast_accuracy.py measures how far off it is for the shipped scenarios.
It is a warning about hours-long sweeps, not a schedule.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Union

import torch

from carbonbench.opt.card import Architecture
from carbonbench.scenario import Point, Scenario, model_card, model_label
from carbonbench.workloads import decode_flops, prefill_flops, train_flops

LONG_SWEEP_S = 3600.0
MAX_PROBE_ROWS = {"cpu": 256, "cuda": 4096}  # rows beyond which a matmul's rate stops growing
MAX_PROBE_WEIGHT = 1 << 24  # elements of the probe's weight matrix (64 MiB in float32)
STREAMING_ROWS = 64  # fewer rows: memory-bound (decode steps), probed with an out-of-cache weight
PROBE_S = 0.03  # timed seconds per probe shape (after one untimed product)

# FLOP/s of a model's matmul with that many rows; True: with its backward (training)
Rate = Callable[[Architecture, int, bool], float]


@dataclass(frozen=True)
class PlannedPoint:
    point: Point
    step_s: float  # estimated seconds per step
    total_s: float  # estimated seconds for warm-up plus all repeats


@dataclass(frozen=True)
class Forecast:
    points: tuple[PlannedPoint, ...]
    flops_per_s: float  # the probe's rate at the sweep's largest shape
    threads: int = 0  # torch's CPU threads during the probe (0: not recorded)
    dtype: str = ""
    fixed_s: float = 0.0  # once per run: the idle baseline and building the models
    rates: dict = field(default_factory=dict, compare=False)  # (rows, k, n, backward) -> FLOP/s

    @property
    def total_s(self) -> float:
        return self.fixed_s + sum(p.total_s for p in self.points)

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
        rates = sorted(self.rates.values()) or [self.flops_per_s]
        shown = f"{rates[0] / 1e9:.1f}" if len(rates) == 1 else f"{rates[0] / 1e9:.1f}-{rates[-1] / 1e9:.1f}"
        how = ", ".join(x for x in (self.dtype, f"{self.threads} thread(s)" if self.threads else "") if x)
        return (
            f"{len(self.points)} points, estimated {human_duration(self.total_s)} from FLOPs at a probed "
            f"{shown} GFLOP/s{f' ({how})' if how else ''} (slowest step: {slowest.point.key}, "
            f"~{human_duration(slowest.step_s)})"
        )


def probe_flops(
    device: torch.device,
    dtype: torch.dtype,
    seconds: float = PROBE_S,
    shape: tuple[int, int, int] | None = None,
    backward: bool = False,
) -> float:
    """A short loop of ``[m, k] @ [k, n]`` (default: square, 1024 on CUDA, 256 on CPU).

    ``backward``: the product and its backward (both gradients, 6mkn FLOPs), as a
    training step runs its matmuls, with their transposed shapes and autograd's overhead.
    """
    m, k, n = shape or ((1024,) * 3 if device.type == "cuda" else (256,) * 3)
    a = torch.randn(m, k, device=device, dtype=dtype, requires_grad=backward)
    b = torch.randn(k, n, device=device, dtype=dtype, requires_grad=backward)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)

    def product() -> None:
        if backward:
            (a @ b).sum().backward()
        else:
            a @ b

    with torch.enable_grad() if backward else torch.no_grad():
        product()  # the first product pays for the thread pool and the kernel choice
        sync()
        steps, t0 = 0, time.perf_counter()
        while steps < 2 or time.perf_counter() - t0 < seconds:
            product()
            steps += 1
            if steps % 16 == 0:
                sync()  # keep the queue short so the clock sees the work
        sync()
    return (6 if backward else 2) * m * k * n * steps / (time.perf_counter() - t0)


def probe_init(device: torch.device, dtype: torch.dtype, seconds: float = PROBE_S) -> float:
    """Elements per second that a model's random initialisation draws (opt.model.init_weights)."""
    t = torch.empty(1 << 22, device=device, dtype=dtype)
    gen = torch.Generator(device=device).manual_seed(0)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    t.normal_(0.0, 0.02, generator=gen)
    sync()
    steps, t0 = 0, time.perf_counter()
    while steps < 2 or time.perf_counter() - t0 < seconds:
        t.normal_(0.0, 0.02, generator=gen)
        steps += 1
    sync()
    return t.numel() * steps / (time.perf_counter() - t0)


def probe_shape(arch: Architecture, rows: int, device_type: str) -> tuple[int, int, int]:
    """The FFN up-projection with ``rows`` rows, capped as the module docstring says.

    Below STREAMING_ROWS a product is bound by reading its weight, and an FFN matrix of a
    small model sits in the CPU's cache where the model's weights, read once per decode
    step, do not: those probes take a weight as large as the model's matmul weights.
    """
    k, n = arch.d_model, arch.ffn_dim
    if rows < STREAMING_ROWS:
        n = max(n, min(arch.matmul_params(), MAX_PROBE_WEIGHT) // k)
    if k * n > MAX_PROBE_WEIGHT:
        n = max(1, MAX_PROBE_WEIGHT // k)
        k = min(k, MAX_PROBE_WEIGHT // n)
    return min(rows, MAX_PROBE_ROWS.get(device_type, MAX_PROBE_ROWS["cpu"])), k, n


def plan(scenario: Scenario, points: list[Point], rate: Union[float, Rate]) -> list[PlannedPoint]:
    """Each point's step and total time; ``rate`` is a FLOP/s figure, or one per (model, rows)."""
    rate_of: Rate = rate if callable(rate) else (lambda arch, rows, backward=False: float(rate))
    m = scenario.measurement
    cards = {model_label(entry): model_card(entry) for entry in scenario.models}
    recompute = bool(scenario.workloads.train and scenario.workloads.train.activation_checkpointing)
    planned = []
    for p in points:
        arch, b = cards[p.model].architecture, p.batch_size
        if p.workload == "prefill":
            step_s = prefill_flops(arch, b, p.prompt_tokens) / rate_of(arch, b * p.prompt_tokens)
        elif p.workload in ("decode", "serve"):
            first = prefill_flops(arch, b, p.prompt_tokens)
            rest = decode_flops(arch, b, p.prompt_tokens, p.new_tokens) - first
            step_s = first / rate_of(arch, b * p.prompt_tokens) + rest / rate_of(arch, b)
            if p.workload == "serve":
                planned.append(_serve_point(scenario, p, step_s))
                continue
        else:
            step_s = train_flops(arch, b, p.seq_len, recompute) / rate_of(arch, b * p.seq_len, True)
        # Warm-up and windows end on a step's edge: whole steps, as many as reach the time.
        warmup = max(m.warmup_steps, math.ceil(m.warmup_s / step_s)) * step_s
        window = max(1, math.ceil(m.min_seconds / step_s)) * step_s
        planned.append(PlannedPoint(p, step_s, warmup + m.repeats * window + m.cooldown_s))
    return planned


def _serve_point(scenario: Scenario, p: Point, step_s: float) -> PlannedPoint:
    """A serve point: each repeat serves the whole stream, so it lasts as long as the arrivals
    (requests / rate) or the work (full decode batches of the longest request), whichever is
    longer; the warm-up is a burst of one batch and one more request."""
    m, n = scenario.measurement, scenario.workloads.serve.requests
    clients = min(p.batch_size, p.concurrency) if p.concurrency else p.batch_size
    stream_s = max(math.ceil(n / max(1, clients)) * step_s, n / p.rate_rps if p.rate_rps else 0.0)
    warmup = max(m.warmup_steps, 1) * 2 * step_s
    return PlannedPoint(p, step_s, warmup + m.repeats * stream_s + m.cooldown_s)


def sweep_forecast(scenario: Scenario, points: list[Point], device: torch.device, dtype: torch.dtype) -> Forecast:
    """Probe each distinct matmul shape of the sweep once, then plan every point with it."""
    rates: dict[tuple[int, int, int, bool], float] = {}

    def rate_of(arch: Architecture, rows: int, backward: bool = False) -> float:
        key = (*probe_shape(arch, rows, device.type), backward)
        if key not in rates:
            rates[key] = probe_flops(device, dtype, shape=key[:3], backward=backward)
        return rates[key]

    planned = tuple(plan(scenario, points, rate_of))
    # Once per run: the idle baseline, and building each model (random weights drawn at the
    # probed rate; a checkpoint's read is assumed to cost about as much).
    cards = {model_label(entry): model_card(entry) for entry in scenario.models}
    params = sum(cards[name].param_count() for name in {p.model for p in points})
    fixed_s = scenario.measurement.idle_baseline_s + params / probe_init(device, dtype)
    largest = max(rates, key=lambda s: s[0] * s[1] * s[2])
    return Forecast(
        planned,
        rates[largest],
        threads=torch.get_num_threads() if device.type == "cpu" else 0,
        dtype=str(dtype).removeprefix("torch."),
        fixed_s=fixed_s,
        rates=rates,
    )


def human_duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.1f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
