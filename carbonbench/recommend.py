"""The cheapest measured serve configuration that meets a latency target.

For each model, machine and load (rate or client count), among the measured serve
configurations (engine, dtype, max_batch) whose latency percentile over the repeats'
mean meets every deadline given, the one with the lowest objective: J per request
(``energy``), gCO2e per 1,000 requests (``co2e``) or $ per 1,000 requests (``usd``),
with its 95% CI over the repeats. Beside it, what it saves against the fastest
configuration (lowest TPOT at the percentile) and against the default one (the first
serve point of the earliest run: the scenario's first max_batch).

Only what was measured is ranked: nothing is interpolated between batch limits.
"""

from __future__ import annotations

import math
from typing import Optional

import pandas as pd

from carbonbench.errors import UserError
from carbonbench.stats import ci95

OBJECTIVES = {
    "energy": ("joules_per_request", "J/request"),
    "co2e": ("co2e_g_per_1k_requests", "gCO2e/1k req"),
    "usd": ("usd_per_1k_requests", "$/1k req"),
}
PERCENTILES = ("p50", "p90", "p99")
GROUP = ["model", "hostname", "device_name", "rate_rps", "concurrency"]
CONFIG = ["run_id", "engine", "dtype", "batch_size"]
# Standard deadlines the report answers for (TPOT ms, TTFT ms): interactive chat to batch-ish.
STANDARD_DEADLINES = ((50.0, None), (100.0, None), (200.0, 2000.0))


def configurations(df: pd.DataFrame, objective: str = "energy", percentile: str = "p90") -> pd.DataFrame:
    """One row per measured serve configuration: the objective's mean and CI, latencies' means."""
    if objective not in OBJECTIVES:
        raise UserError(f"objective must be one of {', '.join(OBJECTIVES)} (got {objective!r})")
    if percentile not in PERCENTILES:
        raise UserError(f"percentile must be one of {', '.join(PERCENTILES)} (got {percentile!r})")
    column = OBJECTIVES[objective][0]
    serve = df[(df["workload"] == "serve") & (df["status"] == "ok")] if len(df) else df
    rows = []
    for key, g in serve.groupby(GROUP + CONFIG, dropna=False, sort=False):
        row = dict(zip(GROUP + CONFIG, key))
        mean, _, half = ci95(pd.to_numeric(g[column], errors="coerce").tolist())
        row.update(objective=mean, ci95=half, repeats=len(g), start=g["start_unix_s"].min())
        for lat in ("tpot", "ttft", "e2e"):
            row[f"{lat}_s"] = pd.to_numeric(g[f"{lat}_{percentile}_s"], errors="coerce").mean()
        row["energy_method"] = ",".join(sorted(set(g["energy_method"].dropna())))
        rows.append(row)
    return pd.DataFrame(
        rows,
        columns=GROUP
        + CONFIG
        + ["objective", "ci95", "repeats", "start", "tpot_s", "ttft_s", "e2e_s", "energy_method"],
    )


def recommend(
    df: pd.DataFrame,
    tpot_ms: Optional[float] = None,
    ttft_ms: Optional[float] = None,
    objective: str = "energy",
    percentile: str = "p90",
) -> pd.DataFrame:
    """Per model, machine and load: the best configuration meeting the deadlines (None where none does)."""
    configs = configurations(df, objective, percentile)
    out = []
    for key, g in configs.groupby(GROUP, dropna=False, sort=False):
        meets = pd.Series(True, index=g.index)
        if tpot_ms is not None:
            meets &= g["tpot_s"] * 1000 <= tpot_ms
        if ttft_ms is not None:
            meets &= g["ttft_s"] * 1000 <= ttft_ms
        ok = g[meets & g["objective"].notna()]
        fastest = g.loc[g["tpot_s"].idxmin()] if g["tpot_s"].notna().any() else None
        default = g.sort_values("start").iloc[0]
        row = dict(zip(GROUP, key))
        row.update(candidates=len(g), meeting=len(ok))
        if ok.empty:
            row["best"] = None
            out.append(row)
            continue
        best = ok.loc[ok["objective"].idxmin()]
        row.update(
            best=_describe(best),
            engine=best["engine"],
            dtype=best["dtype"],
            max_batch=int(best["batch_size"]),
            objective=best["objective"],
            ci95=best["ci95"],
            tpot_s=best["tpot_s"],
            ttft_s=best["ttft_s"],
            energy_method=best["energy_method"],
            fastest=_describe(fastest) if fastest is not None else None,
            saving_vs_fastest=_saving(best["objective"], fastest["objective"] if fastest is not None else math.nan),
            default=_describe(default),
            saving_vs_default=_saving(best["objective"], default["objective"]),
        )
        out.append(row)
    return pd.DataFrame(out)


def _describe(row) -> str:
    return f"{row['engine']} {row['dtype']} max_batch {int(row['batch_size'])}"


def _saving(best: float, other: float) -> float:
    """The share of ``other`` that ``best`` saves (0.25: 25% less); NaN if unknown."""
    if not (isinstance(other, (int, float)) and other > 0 and math.isfinite(other)):
        return math.nan
    return 1.0 - best / other


def load_label(row) -> str:
    rate, clients = row.get("rate_rps"), row.get("concurrency")
    return f"{rate:g} req/s" if rate and rate > 0 else f"{int(clients)} clients"
