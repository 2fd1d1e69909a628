"""One row per point, from the rows of its repeats: keys, status, means with CIs, energy split.

Points are pooled over their ``ok`` repeats. Means with 95% confidence intervals come
from ``carbonbench.stats``; energy by component and the idle/active split are pooled as
sum(energy) / sum(tokens), so a longer window weighs more, as it does in J/token itself.

The rows are grouped once and each group is read from plain lists: a sweep of thousands
of points would spend minutes in per-group pandas calls (issue 18: `compare` at 5,000
points took 224 s).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from carbonbench import records, stats
from carbonbench.decode_phase import DECODE_ONLY_POINT_COLUMNS
from carbonbench.meters.base import weakest_method

POINT_KEYS = list(records.POINT_KEYS)
# Per-repeat figures whose mean and 95% CI the points table shows, beyond the stored summary's.
CI_COLUMNS = (
    "co2e_g_per_million_tokens",
    "usd_per_million_tokens",
    "kwh_per_million_tokens",
    *DECODE_ONLY_POINT_COLUMNS,
)
MEAN_COLUMNS = ("ttft_s", "tpot_s", "latency_p50_s", "latency_p99_s", "mfu", "hfu", "duration_s")
# Each point's stored summary (over ok repeats), and its repeats and weakest method.
SUMMARY_COLUMNS = (
    "n_repeats",
    "joules_per_token_mean",
    "joules_per_token_ci95",
    "tokens_per_s_mean",
    "tokens_per_s_ci95",
    "energy_method",
)
RUN_COLUMNS = (
    "run_label",
    "device_type",
    "device_name",
    "n_devices",
    "hostname",
    "scenario",
    "params",
    "quick",
    "grid_g_per_kwh",
    "grid_source",
    "pue",
    "usd_per_kwh",
    "usd_per_device_hour",
    "peak_memory_bytes",
    "weights",
)
SPLIT_COLUMNS = (
    "gpu_j_per_token",
    "gpu_method",
    "cpu_j_per_token",
    "cpu_method",
    "dram_j_per_token",
    "dram_method",
    "active_j_per_token",
    "idle_j_per_token",
    "power_w",
    "tokens_total",
    "energy_j_total",
    "duration_s_total",
)
CODECARBON_COLUMNS = (
    "codecarbon_j_per_token",
    "codecarbon_power_w",
    "codecarbon_repeats",
    "codecarbon_gpu_j_per_token",
    "codecarbon_cpu_j_per_token",
    "codecarbon_ram_j_per_token",
)
POINT_TABLE_COLUMNS = (
    POINT_KEYS
    + list(RUN_COLUMNS)
    + ["status", "error", "flags", "energy_missing"]
    + list(SUMMARY_COLUMNS)
    + [f"{c}_{s}" for c in CI_COLUMNS for s in ("mean", "ci95")]
    + list(MEAN_COLUMNS)
    + ["decode_only_energy_method"]
    + list(SPLIT_COLUMNS)
    + list(CODECARBON_COLUMNS)
    + ["label", "sizes", "length"]
)
NUMBERS = (
    "tokens",
    "duration_s",
    "energy_j",
    "active_energy_j",
    "energy_gpu_j",
    "energy_cpu_j",
    "energy_dram_j",
    "codecarbon_energy_j",
    "codecarbon_gpu_energy_j",
    "codecarbon_cpu_energy_j",
    "codecarbon_ram_energy_j",
    *CI_COLUMNS,
    *MEAN_COLUMNS,
)


def point_table(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per point: keys, status, means with CIs, energy split, codecarbon's figures.

    The columns are POINT_TABLE_COLUMNS, also when there is no point at all.
    """
    if rows.empty:
        return pd.DataFrame(columns=POINT_TABLE_COLUMNS)
    keyed = rows.copy()
    for k in POINT_KEYS:
        keyed[k] = keyed[k].where(keyed[k].notna(), "")  # groupby keeps blank keys this way
    groups = keyed.groupby(POINT_KEYS, sort=False, dropna=False).indices  # first-seen order
    col = _Columns(keyed)
    out = []
    for key, idx in groups.items():
        idx = sorted(idx)
        ok = [i for i in idx if col.text["status"][i] == "ok"]
        first = idx[0]
        row: dict[str, Any] = dict(zip(POINT_KEYS, key if isinstance(key, tuple) else (key,)))
        row.update({c: col.raw[c][first] for c in RUN_COLUMNS})
        errors = [e for e in (col.raw["error"][i] for i in idx) if isinstance(e, str) and e]
        statuses = [
            s for c in ("point_status", "status") if c in col.raw for s in (col.raw[c][i] for i in idx) if _not_ok(s)
        ]
        row.update(
            status=statuses[0] if statuses else ("error" if errors or not ok else "ok"),
            error=errors[0] if errors else "",
            quick=bool(col.raw["quick"][first]),
            flags=_union(col.raw["flags"][i] for i in ok) or "",
            energy_missing=_union(col.raw["energy_missing"][i] for i in ok) or None,
        )
        row.update(dict.fromkeys(SUMMARY_COLUMNS, math.nan), n_repeats=len(ok))
        row["energy_method"] = weakest_method(m for m in (col.raw["energy_method"][i] for i in ok) if _present(m))
        if ok:
            for c in SUMMARY_COLUMNS:
                if c in col.raw and c.endswith(("_mean", "_ci95")):
                    row[c] = col.raw[c][first]
        for c in CI_COLUMNS:
            mean, _, half = stats.ci95(col.num[c][i] for i in ok)
            row[f"{c}_mean"], row[f"{c}_ci95"] = mean, half
        for c in MEAN_COLUMNS:
            values = [v for v in (col.num[c][i] for i in ok) if not math.isnan(v)]
            row[c] = math.fsum(values) / len(values) if values else math.nan
        row["decode_only_energy_method"] = _joined(col.raw.get("decode_only_energy_method"), ok)
        row.update(_energy_split(col, ok))
        row.update(_codecarbon(col, ok))
        out.append(row)
    points = pd.DataFrame(out, columns=POINT_TABLE_COLUMNS)
    records_ = points[["model", "workload", *records.SIZE_FIELDS]].to_dict("records")
    points["sizes"] = [sizes(r) for r in records_]
    points["label"] = [
        f"{r['model']} {r['workload']} b{_int(r['batch_size'])} {s}" for r, s in zip(records_, points["sizes"])
    ]
    points["length"] = [length_of(r) for r in records_]
    return points


class _Columns:
    """The rows' columns as plain lists (``raw``, ``text``) and float arrays (``num``)."""

    def __init__(self, frame: pd.DataFrame):
        self.raw = {c: frame[c].tolist() for c in frame.columns}
        self.text = {"status": [s if isinstance(s, str) else "" for s in self.raw["status"]]}
        self.num = {
            c: pd.to_numeric(frame[c], errors="coerce").to_numpy(dtype=float)
            if c in frame.columns
            else np.full(len(frame), np.nan)
            for c in NUMBERS
        }

    def total(self, c: str, idx: list[int]) -> float:
        """The sum of the finite values; NaN when there is none."""
        values = [v for v in (self.num[c][i] for i in idx) if not math.isnan(v)]
        return math.fsum(values) if values else math.nan


def _not_ok(s: Any) -> bool:
    return isinstance(s, str) and s != "ok"


def _present(m: Any) -> bool:
    return isinstance(m, str) or (m is not None and not (isinstance(m, float) and math.isnan(m)))


def _union(values) -> str:
    """Comma lists (flags, missing components) merged: sorted, each once."""
    return ",".join(sorted({f for v in values if isinstance(v, str) for f in v.split(",") if f}))


def _joined(values, idx: list[int]) -> Any:
    methods = sorted({values[i] for i in idx if isinstance(values[i], str) and values[i]}) if values else []
    return "+".join(methods) if methods else None


def _energy_split(col: _Columns, ok: list[int]) -> dict[str, Any]:
    """J/token by component and idle/active, pooled; each with its method."""
    tokens = col.total("tokens", ok)

    def per(e: float) -> float:
        return e / tokens if tokens and tokens > 0 and math.isfinite(e) else math.nan

    out: dict[str, Any] = {}
    for kind in ("gpu", "cpu", "dram"):
        out[f"{kind}_j_per_token"] = per(col.total(f"energy_{kind}_j", ok))
        out[f"{kind}_method"] = _joined(col.raw[f"energy_{kind}_method"], ok)
    energy, active = col.total("energy_j", ok), col.total("active_energy_j", ok)
    out["active_j_per_token"] = per(active)
    out["idle_j_per_token"] = per(energy - active) if math.isfinite(active) else math.nan
    duration = col.total("duration_s", ok)
    out["power_w"] = energy / duration if duration and duration > 0 else math.nan
    out["tokens_total"], out["energy_j_total"], out["duration_s_total"] = tokens, energy, duration
    return out


def _codecarbon(col: _Columns, ok: list[int]) -> dict[str, Any]:
    """codecarbon's energy over the same windows (one task per repeat), per token and in watts.

    Pooled over the repeats codecarbon reported, against those repeats' tokens and time.
    """
    have = [i for i in ok if not math.isnan(col.num["codecarbon_energy_j"][i])]
    out: dict[str, Any] = {"codecarbon_j_per_token": math.nan, "codecarbon_power_w": math.nan}
    out["codecarbon_repeats"] = len(have)
    for kind in ("gpu", "cpu", "ram"):
        out[f"codecarbon_{kind}_j_per_token"] = math.nan
    tokens, duration = col.total("tokens", have), col.total("duration_s", have)
    if not have or not (tokens > 0):
        return out
    energy = col.total("codecarbon_energy_j", have)
    out["codecarbon_j_per_token"] = energy / tokens
    out["codecarbon_power_w"] = energy / duration if duration > 0 else math.nan
    for kind in ("gpu", "cpu", "ram"):
        out[f"codecarbon_{kind}_j_per_token"] = col.total(f"codecarbon_{kind}_energy_j", have) / tokens
    return out


def sizes(row: Any) -> str:
    """The lengths of a point in the run's key style: p128, p64+n16, s128."""
    w = row["workload"]
    if w == "prefill":
        return f"p{_int(row['prompt_tokens'])}"
    if w == "decode":
        return f"p{_int(row['prompt_tokens'])}+n{_int(row['new_tokens'])}"
    if w == "serve":  # the load; lengths are the stream's (docs/serve.md)
        rate = _num(row.get("rate_rps", 0))
        return f"r{rate:g}" if rate > 0 else f"c{_int(row.get('concurrency', 0))}"
    if w == "train" or _num(row["seq_len"]) > 0:
        return f"s{_int(row['seq_len'])}"
    return ""  # a measure_session window without a sequence length (carbonbench.api.session)


def point_label(row: Any) -> str:
    return f"{row['model']} {row['workload']} b{_int(row['batch_size'])} {sizes(row)}"


def length_of(row: Any) -> float:
    """The sequence length a point varies: prompt for prefill/decode, seq_len for train."""
    return _num(row["seq_len"] if row["workload"] == "train" else row["prompt_tokens"])


def _int(x: Any) -> str:
    try:
        return str(int(x))
    except (TypeError, ValueError):
        return "?"


def _num(x: Any) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan
