"""The report's serve section: each serve point's latency percentiles and per-request
energy, and the cheapest configuration meeting a few standard deadlines (carbonbench.recommend).

The points table can be filtered: rows not containing the typed text are hidden (a
small script of its own; the page's CSP allows inline scripts only).
"""

from __future__ import annotations

import math

import pandas as pd

from carbonbench.recommend import STANDARD_DEADLINES, load_label, recommend
from carbonbench.report.data import ReportData

_FILTER_JS = """
<script>(function(){var i=document.getElementById('serve-filter'),t=document.getElementById('serve-points');
if(!i||!t)return;i.addEventListener('input',function(){var q=i.value.toLowerCase();
Array.prototype.forEach.call(t.tBodies[0].rows,function(r){
r.style.display=r.textContent.toLowerCase().indexOf(q)>=0?'':'none';});});})();</script>
"""


def _mean(g: pd.DataFrame, col: str) -> float:
    return pd.to_numeric(g[col], errors="coerce").mean() if col in g.columns else math.nan


def serve_section(data: ReportData) -> str:
    """The serve section's HTML; empty when no run has serve points."""
    from carbonbench.report.html import num_cell, section, table  # html draws with plotly: only when rendering

    rows = data.rows
    if rows.empty or "workload" not in rows.columns or not (rows["workload"] == "serve").any():
        return ""
    ok = rows[(rows["workload"] == "serve") & (rows["status"] == "ok")]
    body = []
    keys = ["run_id", "model", "device_name", "engine", "dtype", "batch_size", "rate_rps", "concurrency"]
    for key, g in ok.groupby(keys, dropna=False, sort=False):
        k = dict(zip(keys, key))
        cells = [k["model"], k["device_name"], f"{k['engine']} {k['dtype']}", int(k["batch_size"]), load_label(k)]
        cells += [num_cell(_mean(g, c)) for c in ("requests_per_s", "mean_batch")]
        for lat in ("ttft", "tpot", "e2e", "queue"):
            cells += [num_cell(_mean(g, f"{lat}_{p}_s") * 1000, 3) for p in ("p50", "p90", "p99")]
        cells += [num_cell(_mean(g, c)) for c in ("joules_per_request", "joules_per_token")]
        cells += [num_cell(_mean(g, c)) for c in ("prefill_energy_j", "decode_energy_j", "idle_gap_energy_j")]
        cells += [num_cell(_mean(g, c)) for c in ("co2e_g_per_1k_requests", "usd_per_1k_requests")]
        cells.append(",".join(sorted(set(g["energy_method"].dropna()))))
        body.append(cells)
    headers = ["model", "device", "engine", "max_batch", "load", "req/s", "mean batch"]
    headers += [f"{lat} {p} ms" for lat in ("TTFT", "TPOT", "E2E", "queue") for p in ("p50", "p90", "p99")]
    headers += ["J/request", "J/output token", "prefill J (attributed)", "decode J (attributed)"]
    headers += ["idle-gap J (attributed)", "gCO2e/1k req", "$/1k req", "energy method"]
    filt = '<p><label>Filter: <input id="serve-filter" type="search" placeholder="model, engine, load..."></label></p>'
    html = filt + table(headers, body, table_id="serve-points") + _FILTER_JS + _recommendations(rows)
    intro = (
        "Steady-state windows only (ramp-up and drain excluded). J/request and J/output token come from the "
        "measured window energy; the prefill / decode / idle-gap split is <em>attributed</em> by the step "
        "timeline, a derivation from the measured total (docs/serve.md)."
    )
    return section("serve", "Served load", html, intro)


def _recommendations(rows: pd.DataFrame) -> str:
    from carbonbench.report.html import esc, num_cell, table

    out = []
    for tpot, ttft in STANDARD_DEADLINES:
        best = recommend(rows, tpot, ttft)
        what = f"TPOT p90 ≤ {tpot:g} ms" + (f", TTFT p90 ≤ {ttft:g} ms" if ttft else "")
        for _, r in best.iterrows():
            if r.get("best") is None or (isinstance(r.get("best"), float) and math.isnan(r["best"])):
                out.append([what, r["model"], r["device_name"], load_label(r), "none meets it", "", "", ""])
                continue
            out.append(
                [
                    what,
                    r["model"],
                    r["device_name"],
                    load_label(r),
                    r["best"],
                    num_cell(r["objective"], half=r["ci95"]),
                    num_cell(r["saving_vs_fastest"] * 100, 3),
                    num_cell(r["saving_vs_default"] * 100, 3),
                ]
            )
    headers = [
        "deadline",
        "model",
        "device",
        "load",
        "lowest-energy setting",
        "J/request (95% CI)",
        "% saved vs fastest",
        "% saved vs default",
    ]
    return f"<h3>{esc('Cheapest setting per deadline')}</h3>" + table(headers, out)
