"""The serve fields of a repeat record (``repeat.serve``) and their result columns.

A serve repeat stores, beside the usual window figures (its ``tokens`` are the output
tokens produced in the steady-state window, so ``joules_per_token`` is J per output
token), one mapping: the window's requests, their latency percentiles and the window
energy attributed to prefill, decode and idle gaps (carbonbench.serve_measure). Its
figures are checked on reading like every other number of a run file.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import pandas as pd

from carbonbench.plain import MAPPING, NUMBER, STRING, check, key_path, numbers

LATENCIES = ("ttft", "tpot", "e2e", "queue")
PERCENTILES = ("p50", "p90", "p99")
SCALARS = (
    "requests",
    "completed",
    "output_tokens",
    "prompt_tokens",
    "output_tokens_per_request",
    "requests_per_s",
    "output_tokens_per_s",
    "mean_batch",
    "busy_fraction",
    "window_start_s",
    "window_end_s",
    "stream_s",
    "ramp_requests",
    "joules_per_request",
)
ENERGY_NUMBERS = ("prefill_j", "decode_j", "idle_j", "idle_power_w")

COLUMNS = (
    "serve_requests",
    "output_tokens_per_request",
    "requests_per_s",
    "mean_batch",
    "joules_per_request",
    "prefill_energy_j",
    "decode_energy_j",
    "idle_gap_energy_j",
    "attribution_method",
    *(f"{lat}_{p}_s" for lat in LATENCIES for p in PERCENTILES),
)
DERIVED = ("co2e_g_per_1k_requests", "usd_per_1k_requests")


def check_serve(data: Any, where: str) -> Optional[dict[str, Any]]:
    """A stored ``serve`` mapping, its numbers checked by key path (Damaged otherwise)."""
    data = check(data, MAPPING, where)
    if data is None:
        return None
    for key in SCALARS:
        check(data.get(key), NUMBER, key_path(where, key))
    for lat in LATENCIES:
        numbers(data.get(f"{lat}_s"), key_path(where, f"{lat}_s"))
    energy = check(data.get("energy"), MAPPING, key_path(where, "energy")) or {}
    for key in ENERGY_NUMBERS:
        check(energy.get(key), NUMBER, key_path(key_path(where, "energy"), key))
    check(energy.get("method"), STRING, key_path(key_path(where, "energy"), "method"))
    numbers(energy.get("per_request_j"), key_path(key_path(where, "energy"), "per_request_j"))
    return data


def serve_columns(serve: Optional[dict[str, Any]]) -> dict[str, Any]:
    """A repeat's serve columns (all None for a static point)."""
    if not serve:
        return dict.fromkeys(COLUMNS)
    energy = serve.get("energy") or {}
    out = {
        "serve_requests": serve.get("requests"),
        "output_tokens_per_request": serve.get("output_tokens_per_request"),
        "requests_per_s": serve.get("requests_per_s"),
        "mean_batch": serve.get("mean_batch"),
        "joules_per_request": serve.get("joules_per_request"),
        "prefill_energy_j": energy.get("prefill_j"),
        "decode_energy_j": energy.get("decode_j"),
        "idle_gap_energy_j": energy.get("idle_j"),
        "attribution_method": energy.get("method"),
    }
    for lat in LATENCIES:
        stats = serve.get(f"{lat}_s") or {}
        for p in PERCENTILES:
            out[f"{lat}_{p}_s"] = stats.get(p)
    return out


def derive_request_columns(out: pd.DataFrame) -> None:
    """gCO2e and $ per 1,000 requests, in place: the per-token figures times the stream's
    output tokens per request (NaN for static points)."""
    per_request = pd.to_numeric(out.get("output_tokens_per_request", np.nan), errors="coerce")
    out["co2e_g_per_1k_requests"] = out["co2e_g_per_million_tokens"] / 1e6 * per_request * 1000
    out["usd_per_1k_requests"] = out["usd_per_million_tokens"] / 1e6 * per_request * 1000
