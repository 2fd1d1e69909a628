"""The report's summary: banners, energy methods, the headline table and the runs.

Text is escaped with ``esc`` where it is written; numbers go through ``number``. A section with
nothing to show says why, rather than vanishing, so a reader can tell "not measured" from "forgotten".
"""

from __future__ import annotations

from typing import Any

from carbonbench.report import caveats
from carbonbench.report.data import ReportData, empty_reason
from carbonbench.report.html import Cell, banner, esc, method_tag, note, num_cell, number, section, table
from carbonbench.threads import threads_text

METHOD_HELP = (
    ("counter", "read from a hardware energy counter (NVML on NVIDIA GPUs, RAPL on CPUs and DRAM)"),
    ("integrated", "sampled power integrated over time"),
    ("estimated", "a model, such as TDP x utilisation, not a measurement; drawn open or hatched"),
    ("none", "no meter for that component: not counted"),
)


def summary(data: ReportData) -> str:
    parts = []
    quick = [r.label for r in data.runs if r.record.quick]
    if quick:
        parts.append(
            banner(
                "warn",
                "<b>Smoke run.</b> " + esc(", ".join(quick)) + " ran with <code>--quick</code> "
                "(short windows, few repeats): these figures show the pipeline works; they are "
                "not numbers to publish.",
            )
        )
    estimated = _estimated_components(data)
    if estimated:
        parts.append(
            banner(
                "warn",
                "<b>Some energy here is estimated, not measured:</b> "
                + esc("; ".join(estimated))
                + ". Estimates come from a model (such as TDP x utilisation); every figure labels its "
                "method and draws estimates open or hatched.",
            )
        )
    notes = [(r.label, r.record.note) for r in data.runs if r.record.note]
    for label, run_note in notes:
        parts.append(banner("info", f"<b>Note on {esc(label)}:</b> {esc(run_note)}"))
    failed = data.points[data.points["status"] != "ok"]
    if len(failed):
        parts.append(
            banner(
                "bad",
                f"<b>{len(failed)} point(s) failed</b> and are listed with their errors under "
                '<a href="#tables">Tables</a>; their figures are left out of the charts.',
            )
        )
    if data.skipped:
        parts.append(banner("bad", "<b>Skipped damaged result files:</b> " + esc("; ".join(data.skipped))))
    parts.extend(caveats.banners(data))
    parts.append(
        '<h3>Energy methods</h3><ul class="tight">'
        + "".join(f"<li>{method_tag(m)} {esc(text)}</li>" for m, text in METHOD_HELP)
        + "</ul>"
    )
    parts.append("<h3>At a glance: the lowest J/token per machine, model and workload</h3>" + _headline(data))
    parts.append("<h3>Runs</h3>" + _runs_table(data))
    return section("summary", "Summary", "".join(parts))


def _engine_text(engine: Any) -> str:
    """'native', or 'native (compile: True, ...)' for scenarios that record engine options."""
    if not isinstance(engine, dict):
        return str(engine or "native")
    options = ", ".join(f"{k}: {v}" for k, v in engine.items() if k != "name")
    return f"{engine.get('name', 'native')}" + (f" ({options})" if options else "")


def _estimated_components(data: ReportData) -> list[str]:
    out = []
    ok = data.points[data.points["status"] == "ok"]
    for label, g in ok.groupby("run_label", sort=False):
        comps = [
            k.upper() for k in ("gpu", "cpu", "dram") if g[f"{k}_method"].fillna("").str.contains("estimated").any()
        ]
        if comps:
            out.append(f"{label}: {', '.join(comps)}")
    return out


def _headline(data: ReportData) -> str:
    ok = data.points[(data.points["status"] == "ok") & data.points["joules_per_token_mean"].notna()]
    if ok.empty:
        return note(empty_reason(data.points))
    rows = []
    for _, g in ok.groupby(["run_label", "model", "workload"], sort=False):
        p = g.loc[g["joules_per_token_mean"].idxmin()]
        rows.append(
            [
                p["run_label"],
                p["model"],
                p["workload"],
                f"b{int(p['batch_size'])} {p['sizes']}",
                num_cell(p["joules_per_token_mean"], half=p["joules_per_token_ci95"]),
                num_cell(p["tokens_per_s_mean"], half=p["tokens_per_s_ci95"]),
                num_cell(p["co2e_g_per_million_tokens_mean"]),
                num_cell(p["usd_per_million_tokens_mean"], 3),
                Cell(
                    method_tag(caveats.method_text(p["energy_method"], p["energy_missing"])),
                    p["energy_method"],
                    raw_html=True,
                ),
            ]
        )
    return table(
        [
            "machine",
            "model",
            "workload",
            "point",
            "J/token ± 95% CI",
            "tokens/s ± 95% CI",
            "gCO2e / 1M tokens",
            "$ / 1M tokens",
            "energy method",
        ],
        rows,
    )


def _runs_table(data: ReportData) -> str:
    fields = []
    for run in data.runs:
        rec = run.record
        sc, dev, env = rec.scenario, rec.device, rec.environment
        carbon, cost, idle = rec.carbon, rec.cost, rec.idle
        pts = data.points[data.points["run_id"] == run.run_id]
        g = pts.iloc[0] if len(pts) else {}
        grid = f"{number(g.get('grid_g_per_kwh'))} gCO2e/kWh ({g.get('grid_source')})" if len(pts) else ""
        idle_w = (
            ", ".join(f"{c} {number(w, 3)} W [{idle.method.get(c, '?')}]" for c, w in idle.power_w.items())
            if idle is not None
            else ""
        )
        meters = "; ".join(
            f"{m.get('name')} ({m.get('kind')}, {m.get('method')})" for m in rec.meters if isinstance(m, dict)
        )
        cc = rec.codecarbon_meter or {}
        fields.append(
            {
                "scenario": sc.get("name"),
                "description": sc.get("description"),
                "run id": run.run_id,
                "status": rec.status,
                "measured": f"{rec.started_utc} to {rec.finished_utc}",
                "quick (smoke run)": "yes" if rec.quick else "no",
                "device": f"{dev.count} x {dev.name} ({dev.type}, {dev.dtype})",
                "host": env.get("hostname"),
                "CPU": env.get("cpu_model"),
                "torch threads": threads_text(env),
                "RAM": f"{number((env.get('ram_bytes') or 0) / 2**30, 3)} GiB" if env.get("ram_bytes") else "",
                "software": ", ".join(
                    f"{k} {env.get(k)}"
                    for k in ("carbonbench", "python", "torch", "cuda", "nvidia_driver")
                    if env.get(k)
                ),
                "OS": env.get("os"),
                "engine": _engine_text(sc.get("engine")),
                "grid": grid
                or (f"{carbon.get('country')}" + (f"/{carbon.get('region')}" if carbon.get("region") else "")),
                "PUE": carbon.get("pue"),
                "prices": f"${cost.get('usd_per_kwh')}/kWh, ${cost.get('usd_per_device_hour')}/device-hour",
                "meters": meters,
                "CPU attribution": caveats.attribution(run) or "none (no CPU estimate)",
                "weights": ", ".join(sorted(set(pts["weights"].dropna().astype(str)))) if len(pts) else "",
                "idle baseline": idle_w
                + (
                    " [busy host: other processes were working]"
                    if idle is not None and "busy-host" in idle.flags
                    else ""
                ),
                "codecarbon": (
                    f"{cc.get('version')} ({', '.join(map(str, cc.get('mode') or [])) or cc.get('tracker', '')})"
                    if cc.get("enabled")
                    else "off"
                ),
                "timeline": f"{len(run.timeline)} samples" if run.timeline is not None else run.timeline_note,
                "file": str(run.path),
            }
        )
    names = list(fields[0])
    head = "<tr><th></th>" + "".join(f"<th>{esc(r.label)}</th>" for r in data.runs) + "</tr>"
    body = "".join(
        "<tr><th>" + esc(k) + "</th>" + "".join(f"<td>{esc(f.get(k))}</td>" for f in fields) + "</tr>" for k in names
    )
    return f'<div class="table-wrap"><table class="runs"><thead>{head}</thead><tbody>{body}</tbody></table></div>'
