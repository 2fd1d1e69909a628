"""What a reader must know before trusting a figure: weights, partial totals, busy hosts,
how CPU energy was attributed, and why codecarbon's figure differs from ours.

Each caveat is drawn from what the runs recorded, never assumed: a banner appears only
for runs it applies to.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from carbonbench.meters.host import BUSY_FLAG, BUSY_OTHERS_CORES
from carbonbench.report.data import ReportData
from carbonbench.report.html import Cell, banner, esc, num_cell, table

MAX_TABLE_POINTS = 1000  # rows of the codecarbon table; a big sweep lists fewer
WEIGHTS_SOURCES = (
    "Gregersen, Patel and Choukse (arXiv 2409.18324) measured GEMM power at fixed shapes changing by up to "
    "about 40% with the value distribution, bit similarity and sparsity of the operands; Bhalachandra et al. "
    "(arXiv 2212.08805) report up to 67% for an A100 DGEMM"
)


def banners(data: ReportData) -> list[str]:
    out = []
    p = data.points
    random = sorted({str(r) for r in p["run_label"][p["weights"].fillna("").str.startswith("random")]})
    if random:
        out.append(
            banner(
                "warn",
                "<b>Random weights.</b> " + esc(", ".join(random)) + " ran models built from their "
                "cards with random weights. The time and FLOPs of a step do not depend on the weight values; "
                "its power can. " + esc(WEIGHTS_SOURCES) + ". These figures may therefore differ from a "
                "trained model's; load a checkpoint (a local directory or a Hugging Face id in the local "
                "cache) to measure the real thing.",
            )
        )
    partial = p[p["energy_missing"].notna() & (p["energy_missing"] != "")]
    if len(partial):
        parts = "; ".join(f"{r['label']} on {r['run_label']} (no {r['energy_missing']})" for _, r in partial.iterrows())
        out.append(
            banner(
                "bad",
                "<b>Partial totals.</b> A meter could not say for some components, so these totals "
                "leave them out and are marked <i>partial</i> wherever they appear: " + esc(parts) + ".",
            )
        )
    busy = _busy(data)
    if busy:
        out.append(
            banner(
                "warn",
                "<b>Busy host.</b> Other processes used more than "
                f"{BUSY_OTHERS_CORES:g} cores on average during " + esc("; ".join(busy)) + ". A machine-wide "
                "CPU figure counts their work too, and idle and active power then read alike, so active "
                "energy is left out there (n/a) rather than shown as a misleading 0.",
            )
        )
    return out


def _busy(data: ReportData) -> list[str]:
    out = []
    for run in data.runs:
        idle = run.record.idle
        if idle is not None and BUSY_FLAG in idle.flags:
            out.append(f"the idle baseline of {run.label}")
        windows = sum(BUSY_FLAG in r.flags for p in run.record.points for r in p.repeats)
        if windows:
            out.append(f"{windows} window(s) of {run.label}")
    return out


def method_text(method: Any, missing: Any) -> str:
    """A point's energy method, with the components its total leaves out."""
    m = method if isinstance(method, str) and method else "none"
    return f"{m}, partial: no {missing}" if isinstance(missing, str) and missing else m


def attribution(run) -> str:
    """How the run's CPU energy was attributed (the CPU estimate), or '' when it has no estimate."""
    for meter in run.record.meters:
        if isinstance(meter, dict) and meter.get("attribution"):
            return str(meter["attribution"])
    return ""


# -- codecarbon beside carbonbench ----------------------------------------------------------
def codecarbon_table(data: ReportData) -> str:
    p = data.points
    have = p[p["codecarbon_j_per_token"].notna()]
    if have.empty:
        return (
            '<p class="note">codecarbon did not run alongside these measurements (measurement.codecarbon: false).</p>'
        )
    every = len(have)
    if every > MAX_TABLE_POINTS:  # a big sweep: the lowest-J/token point per machine, model and workload
        have = have.sort_values("joules_per_token_mean").groupby(["run_label", "model", "workload"]).head(1)
    rows = []
    for r in have.to_dict("records"):
        rows.append(
            [
                r["run_label"],
                r["label"],
                num_cell(r["joules_per_token_mean"]),
                Cell(esc(method_text(r["energy_method"], r["energy_missing"])), raw_html=True),
                num_cell(r["codecarbon_j_per_token"]),
                num_cell(_ratio(r["codecarbon_j_per_token"], r["joules_per_token_mean"]), 3),
            ]
            + [
                num_cell(_ratio(r[f"codecarbon_{theirs}_j_per_token"], r[f"{ours}_j_per_token"]), 3)
                for ours, theirs in (("gpu", "gpu"), ("cpu", "cpu"), ("dram", "ram"))
            ]
        )
    why = [f"<li><b>{esc(run.label)}</b>: {esc(text)}</li>" for run in data.runs for text in _why(run, data.rows)]
    return table(
        [
            "machine",
            "point",
            "carbonbench J/token",
            "method",
            "codecarbon J/token",
            "codecarbon / ours",
            "GPU: codecarbon / ours",
            "CPU: codecarbon / ours",
            "RAM: codecarbon / ours",
        ],
        rows,
        table_id="codecarbon",
        caption="codecarbon measured the same windows (one codecarbon task per repeat), divided by the same "
        "tokens. Where the two differ, it is the models they use, per component, below."
        + (
            f" Of {every} points, each machine's lowest-J/token point per model and workload."
            if len(have) < every
            else ""
        ),
    ) + ('<ul class="tight">' + "".join(why) + "</ul>" if why else "")


def _why(run, rows: pd.DataFrame) -> list[str]:
    """Per component, why codecarbon's figure for this run differs from ours: from what each recorded."""
    rows = rows[
        (rows["run_id"] == run.run_id)
        & (rows["status"] == "ok")
        & pd.to_numeric(rows["codecarbon_energy_j"], errors="coerce").notna()
    ]
    if rows.empty:
        return []
    out = []
    models = {m.get("kind"): m for m in run.record.meters if isinstance(m, dict)}
    ours_ram, theirs_ram = _watts(rows, "energy_dram_j"), _watts(rows, "codecarbon_ram_energy_j")
    dram = models.get("dram") or {}
    if math.isfinite(ours_ram) and math.isfinite(theirs_ram):
        out.append(
            f"RAM: codecarbon draws {theirs_ram:.3g} W, a fixed guess of about 5 W per DIMM (x86) with the "
            f"DIMM count guessed from the memory size; carbonbench draws {ours_ram:.3g} W "
            f"({dram.get('model') or 'its DRAM meter'})."
        )
    ours_cpu, theirs_cpu = _watts(rows, "energy_cpu_j"), _watts(rows, "codecarbon_cpu_energy_j")
    cpu = models.get("cpu") or models.get("cpu+dram") or {}
    if math.isfinite(ours_cpu) and math.isfinite(theirs_cpu):
        mode = (run.record.codecarbon_meter or {}).get("mode") or "its detected mode"
        ours = cpu.get("model") or ("RAPL package counters" if cpu.get("name") == "rapl" else "its CPU meter")
        out.append(
            f"CPU: codecarbon draws {theirs_cpu:.3g} W ({mode}; without RAPL its load model is TDP x "
            f"(0.1 + 0.9 x load^3), machine-wide); carbonbench draws {ours_cpu:.3g} W ({ours}"
            + (f"; {cpu['attribution']}" if cpu.get("attribution") else "")
            + ")."
        )
    if math.isfinite(_watts(rows, "energy_gpu_j")):
        out.append("GPU: both read the same NVML energy counter; a difference is in when each reads it.")
    return out


def _watts(rows: pd.DataFrame, column: str) -> float:
    """Mean power of one component over the rows' windows (those codecarbon also measured)."""
    energy = pd.to_numeric(rows[column], errors="coerce")
    seconds = pd.to_numeric(rows["duration_s"], errors="coerce")
    have = energy.notna() & seconds.notna()
    total_s = float(seconds[have].sum())
    return float(energy[have].sum()) / total_s if have.any() and total_s > 0 else math.nan


def _ratio(a: Any, b: Any) -> float:
    try:
        a, b = float(a), float(b)
    except (TypeError, ValueError):
        return math.nan
    return a / b if b and math.isfinite(a) and math.isfinite(b) else math.nan
