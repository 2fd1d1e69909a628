"""A serve point's measured window: steady state only, and what its energy is per request.

The stream runs whole (ramp-up, steady state, drain) but the meters' window is open
only from when ``ceil(ramp_fraction x requests)`` requests have been given a slot until
the last request has arrived and none waits for a slot, as the ML.ENERGY benchmark
measures: before, the batch is still filling; after, it empties with nothing to take in.
The steady-state requests, over which latencies are taken, are those admitted (given a
slot) inside the window; throughput counts the requests completed inside it.

Measured: the window's energy (by the meters, with their method), its output tokens, so
J per output token; latencies from each request's timestamps. Derived: J per request =
J per output token x the stream's mean output tokens per request.

Attributed (method ``attributed``, a split of the measured total, not a measurement):
the window's energy over the server's step timeline. Time when no step ran (the server
waiting for a request) gets the idle baseline's power when the run measured one (else
the window's mean power); the rest goes to the steps in proportion to each step's time
inside the window (power assumed even across steps). A prefill step's energy is its
request's; a decode step's is split evenly over the requests it advanced. Each
request's share of the idle time is in proportion to its step energy, so the requests'
energies add up to the window's.
"""

from __future__ import annotations

import contextlib
import math
import statistics
from typing import Any, Optional

from carbonbench.records import RepeatRecord, window_label
from carbonbench.serving import Trace

ATTRIBUTED = "attributed"


def percentiles(values: list[float]) -> dict[str, float]:
    """p50, p90, p99 (linear interpolation), mean and n of the finite values."""
    s = sorted(v for v in values if math.isfinite(v))
    if not s:
        return {}

    def pct(q: float) -> float:
        pos = q * (len(s) - 1)
        lo, hi = int(pos), min(int(pos) + 1, len(s) - 1)
        return s[lo] + (s[hi] - s[lo]) * (pos - lo)

    return {"p50": pct(0.5), "p90": pct(0.9), "p99": pct(0.99), "mean": statistics.fmean(s), "n": len(s)}


class WindowGate:
    """Opens the session's window at the ramp-up's end and closes it once everything has
    arrived and nothing waits; passed to the server as its ``on_tick``."""

    def __init__(self, session, label: str, ramp_requests: int, requests: int):
        self.session, self.label = session, label
        self.ramp, self.requests = ramp_requests, requests
        self.stack = contextlib.ExitStack()
        self.window = None
        self.closed = False

    def __call__(self, now_s: float, arrived: int, waiting: int) -> None:
        if self.window is None and arrived - waiting >= self.ramp:
            self.window = self.stack.enter_context(self.session.window(self.label, span=True))
        elif self.window is not None and not self.closed and arrived >= self.requests and not waiting:
            self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.stack.close()


def summarise(trace: Trace, start_unix_s: float, duration_s: float, energy_j: Optional[float], idle_w, ramp: int):
    """(serve mapping, output tokens, steps, model FLOPs, hardware FLOPs) of the window."""
    w0 = start_unix_s - trace.unix0_s
    w1 = w0 + duration_s
    overlaps = [max(0.0, min(s.end_s, w1) - max(s.start_s, w0)) for s in trace.steps]
    inside = [s for s in trace.steps if w0 <= s.end_s <= w1]
    out_tokens = sum(len(s.requests) if s.kind == "decode" else 1 for s in inside)
    prompt_tokens = sum(
        next(r.prompt_tokens for r in trace.served if r.index == s.requests[0]) for s in inside if s.kind == "prefill"
    )
    busy_s = sum(overlaps)
    decode_s = sum(o for o, s in zip(overlaps, trace.steps) if s.kind == "decode")
    batch_time = sum(o * len(s.requests) for o, s in zip(overlaps, trace.steps) if s.kind == "decode")
    arrived = [r for r in trace.served if w0 <= r.admitted_s <= w1]  # the steady-state requests
    stream = trace.served
    per_request_out = statistics.fmean(r.output_tokens for r in stream)
    completed = sum(1 for r in stream if w0 <= r.finish_s <= w1)
    serve: dict[str, Any] = {
        "requests": len(arrived),
        "completed": completed,
        "output_tokens": out_tokens,
        "prompt_tokens": prompt_tokens,
        "output_tokens_per_request": per_request_out,
        "requests_per_s": completed / duration_s if duration_s > 0 else None,
        "output_tokens_per_s": out_tokens / duration_s if duration_s > 0 else None,
        "mean_batch": batch_time / decode_s if decode_s > 0 else None,
        "busy_fraction": busy_s / duration_s if duration_s > 0 else None,
        "window_start_s": w0,
        "window_end_s": w1,
        "stream_s": max(r.finish_s for r in stream),
        "ramp_requests": ramp,
        "ttft_s": percentiles([r.first_token_s - r.arrival_s for r in arrived]),
        "tpot_s": percentiles(
            [(r.finish_s - r.first_token_s) / (r.output_tokens - 1) for r in arrived if r.output_tokens > 1]
        ),
        "e2e_s": percentiles([r.finish_s - r.arrival_s for r in arrived]),
        "queue_s": percentiles([r.admitted_s - r.arrival_s for r in arrived]),
    }
    if energy_j is not None and out_tokens:
        serve["joules_per_request"] = energy_j / out_tokens * per_request_out
    serve["energy"] = attribute(trace, overlaps, w0, w1, energy_j, idle_w)
    model_flops = sum(s.model_flops for s in inside)
    hardware_flops = sum(s.hardware_flops for s in inside)
    return serve, out_tokens, len(inside), model_flops, hardware_flops


def attribute(trace: Trace, overlaps: list[float], w0: float, w1: float, energy_j, idle_w) -> dict[str, Any]:
    """The window's energy split over prefill, decode, idle gaps and requests (see the module docstring)."""
    duration = w1 - w0
    busy_s = sum(overlaps)
    idle_s = max(duration - busy_s, 0.0)
    basis = "step time; gaps at the idle baseline's power" if idle_w else "step time; even power over the window"
    out: dict[str, Any] = {"method": ATTRIBUTED, "basis": basis, "idle_power_w": idle_w}
    if energy_j is None or duration <= 0:
        return out
    if idle_w:
        idle_j = min(energy_j, idle_w * idle_s)
    else:
        idle_j = energy_j * idle_s / duration
    busy_j = energy_j - idle_j
    per_request: dict[int, float] = {}
    split = {"prefill": 0.0, "decode": 0.0}
    for o, step in zip(overlaps, trace.steps):
        if o <= 0 or busy_s <= 0:
            continue
        e = busy_j * o / busy_s
        split[step.kind] += e
        for index in step.requests:
            per_request[index] = per_request.get(index, 0.0) + e / len(step.requests)
    step_total = sum(per_request.values())
    whole = [
        r.index for r in trace.served if w0 <= r.admitted_s and r.finish_s <= w1 and r.index in per_request
    ]  # requests served wholly inside the window
    shares = [per_request[i] * (1 + idle_j / step_total) if step_total else float("nan") for i in whole]
    out.update(prefill_j=split["prefill"], decode_j=split["decode"], idle_j=idle_j)
    out["per_request_j"] = percentiles(shares)
    return out


def serve_repeat(workload, point_key: str, repeat: int, session, m, job, idle) -> RepeatRecord:
    """One repeat of a serve point: the whole stream, the window over its steady state."""
    serve = workload.serve_config
    n = len(workload.specs)
    ramp = min(max(1, math.ceil(serve.ramp_fraction * n)), n - 1)
    label = window_label(point_key, repeat)
    session.begin_task(label)
    gate = WindowGate(session, label, ramp, n)
    try:
        trace = workload.run_stream(on_tick=gate)
    finally:
        gate.close()
    codecarbon = session.end_task()
    meas = gate.window.measurement
    idle_w = idle.total_power_w if idle is not None else None
    summary, tokens, steps, model_flops, hw_flops = summarise(
        trace, meas.start_unix_s, meas.duration_s, meas.energy_j, idle_w, ramp
    )
    min_s = max(m.min_seconds, 10 * session.resolution_s)
    flags = list(meas.flags) + (["short-window"] if meas.duration_s < min_s else [])
    latency = percentiles([s.end_s - s.start_s for s in trace.steps if s.kind == "decode"])
    latency.pop("n", None)
    rep = RepeatRecord.from_measurement(
        repeat,
        meas,
        steps=steps,
        tokens=tokens,
        flops=hw_flops,
        model_flops=model_flops,
        latency_s=latency,
        active_energy_j=idle.active_energy_j(meas) if idle is not None else None,
        codecarbon=codecarbon,
    )
    rep.flags, rep.serve = flags, summary
    rep.ttft_s = summary["ttft_s"].get("mean")
    rep.tpot_s = summary["tpot_s"].get("mean")
    for key, value in (gate.window.detail or {}).items():
        setattr(rep, key, value)
    return rep
