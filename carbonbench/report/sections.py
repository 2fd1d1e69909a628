"""The report's sections, each a function from ReportData to HTML.

Text is escaped with ``esc`` where it is written; numbers go through ``number``. A
section with nothing to show says why, rather than vanishing, so a reader can tell "not
measured" from "forgotten".
"""

from __future__ import annotations

import math
from typing import Any

from carbonbench.carbon import DEFAULT_PLACES, where_to_run
from carbonbench.report import caveats, training
from carbonbench.report import compare as cmp
from carbonbench.report import figures as figs
from carbonbench.report.data import POINT_KEYS, ReportData, empty_reason, machines
from carbonbench.report.html import Cell, Figures, banner, esc, num_cell, number, section, table
from carbonbench.threads import threads_text

METHOD_HELP = (
    ("counter", "read from a hardware energy counter (NVML on NVIDIA GPUs, RAPL on CPUs and DRAM)"),
    ("integrated", "sampled power integrated over time"),
    ("estimated", "a model, such as TDP x utilisation, not a measurement; drawn open or hatched"),
    ("none", "no meter for that component: not counted"),
)


def method_tag(method: Any) -> str:
    m = method if isinstance(method, str) and method else "none"
    cls = next((k for k in ("estimated", "integrated", "counter") if k in m), "none")
    return f'<span class="method {cls}">{esc(m)}</span>'


def _note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'


# ---- summary ------------------------------------------------------------------------------


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
    for label, note in notes:
        parts.append(banner("info", f"<b>Note on {esc(label)}:</b> {esc(note)}"))
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
        return _note(empty_reason(data.points))
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


# ---- cross-hardware comparison --------------------------------------------------------------


def comparison(data: ReportData, figures: Figures, colors: dict[str, str]) -> str:
    groups = machines(data)
    if len(groups) < 2:
        return section(
            "comparison",
            "Cross-hardware comparison",
            _note(
                "All results come from one machine, so there is nothing to compare. Give result files from two machines "
                "(say an A100 run and an H100 run of the same scenario) to see who wins where."
            ),
        )
    base_runs = groups[0][1]
    a = cmp.side_from_rows(
        "A", base_runs[0].machine_label, data.rows[data.rows["run_id"].isin([r.run_id for r in base_runs])]
    )
    parts = [
        _note(
            "Points are matched on model, workload, batch size and lengths; engine and dtype are shown side by "
            "side. Ratios are B / A. gCO2e and $ use each machine's own grid, PUE and prices. Where the 95% "
            "confidence intervals overlap, the repeats cannot tell the machines apart: the winner is flagged."
        )
    ]
    for _, runs in groups[1:]:
        b = cmp.side_from_rows(
            "B", runs[0].machine_label, data.rows[data.rows["run_id"].isin([r.run_id for r in runs])]
        )
        c = cmp.compare(a, b)
        parts.append(f"<h3>B = {esc(b.label)} against A = {esc(a.label)}</h3>")
        parts.append(f'<p class="note">A priced at {esc(a.settings)}; B priced at {esc(b.settings)}.</p>')
        fig = figs.comparison(c, colors.get(base_runs[0].label, "#1f77b4"), colors.get(runs[0].label, "#d62728"))
        if fig is not None:
            parts.append(figures.embed(fig))
            parts.append(_compare_summary(c))
            parts.append(_compare_table(c))
        else:
            parts.append(_note("No point was measured on both machines."))
        parts.append(_unmatched(c))
    return section("comparison", "Cross-hardware comparison", "".join(parts))


def _compare_summary(c: cmp.Comparison) -> str:
    items = []
    for s in c.summary():
        tps, jpt = s["tokens_per_s_ratio_geomean"], s["joules_per_token_ratio_geomean"]
        items.append(
            f"<li><b>{esc(s['workload'])}</b> ({s['points']} matched point(s)): B has "
            f"{esc(number(tps, 3))}x the throughput of A and uses {esc(number(jpt, 3))}x its energy per "
            "token (geometric means).</li>"
        )
    return f'<ul class="tight">{"".join(items)}</ul>'


def _win_cell(row: Any, metric: str) -> Cell:
    who, factor, overlap = row[f"{metric}_winner"], row[f"{metric}_factor"], row[f"{metric}_overlap"]
    if who not in ("A", "B"):
        return Cell(who)
    return Cell(f"{who} x{number(factor, 3)}" + (" (CIs overlap)" if overlap else ""), factor, "" if overlap else "win")


def _compare_table(c: cmp.Comparison) -> str:
    rows = []
    for _, r in c.matched.iterrows():
        row = [r["label"], f"{r['a_engine']}/{r['a_dtype']}", f"{r['b_engine']}/{r['b_dtype']}"]
        for m in cmp.METRICS:
            row += [
                num_cell(r[f"a_{m.column}"], half=r[f"a_{m.column}_ci95"]),
                num_cell(r[f"b_{m.column}"], half=r[f"b_{m.column}_ci95"]),
                num_cell(r[f"{m.column}_ratio"], 3),
                _win_cell(r, m.column),
            ]
        row.append(Cell(method_tag(r["a_method"]) + " / " + method_tag(r["b_method"]), raw_html=True))
        rows.append(row)
    heads = ["point", "A engine/dtype", "B engine/dtype"]
    for m in cmp.METRICS:
        heads += [f"A {m.label}", f"B {m.label}", "B/A", m.verb]
    return table(heads + ["energy method A / B"], rows)


def _unmatched(c: cmp.Comparison) -> str:
    out = []
    for side, frame in ((c.a, c.only_a), (c.b, c.only_b)):
        who = f"{side.name} = {side.label}"
        if frame.empty:
            out.append(f"<p>Every point of {esc(who)} has a match.</p>")
            continue
        items = "".join(f"<li>{esc(cmp.describe_point(r))}</li>" for _, r in frame.iterrows())
        out.append(f'<p>Only on {esc(who)} ({len(frame)} point(s)):</p><ul class="tight">{items}</ul>')
    if not c.failed.empty:
        items = "".join(
            f"<li>{esc(r['label'])}: A {esc(r['a_status'])} {esc(r['a_error'] or '')}; "
            f"B {esc(r['b_status'])} {esc(r['b_error'] or '')}</li>"
            for _, r in c.failed.iterrows()
        )
        out.append(f'<p>On both, but failed on one side:</p><ul class="tight">{items}</ul>')
    return "".join(out)


# ---- figures -----------------------------------------------------------------------------


def cost(data: ReportData, figures: Figures, colors: dict[str, str]) -> str:
    parts = []
    for builder, missing in (
        (figs.cost_vs_batch, empty_reason(data.points)),
        (
            figs.cost_vs_length,
            "Each line was measured at one sequence length only; list several prompt_tokens or "
            "seq_len values in the scenario to see cost against length.",
        ),
        (figs.by_model_size, "One model size only; list several models in the scenario to compare sizes."),
    ):
        fig = builder(data.points, colors)
        parts.append(figures.embed(fig) if fig is not None else _note(missing))
    intro = (
        "Joules per token, and the gCO2e and dollars they become under each run's grid, PUE and prices. "
        "Open markers and dotted lines are estimated energy. Decode counts generated tokens only."
    )
    return section("cost", "Cost per token", "".join(parts), esc(intro))


def tradeoff(data: ReportData, figures: Figures, colors: dict[str, str]) -> str:
    parts = []
    fig = figs.tradeoff(data.points, colors)
    parts.append(figures.embed(fig) if fig is not None else _note(empty_reason(data.points)))
    fig = figs.latency(data.points, colors)
    parts.append(figures.embed(fig) if fig is not None else _note("No decode points, so no latency figures."))
    return section(
        "tradeoff",
        "Trade-off: throughput, energy and latency",
        "".join(parts),
        esc(
            "Up and to the left is worse; down and to the right is better. The Pareto front is drawn per "
            "model and workload across every machine."
        ),
    )


def breakdown(data: ReportData, figures: Figures) -> str:
    fig = figs.breakdown(data.points, data.runs)
    body = figures.embed(fig) if fig is not None else _note(empty_reason(data.points))
    intro = (
        "Where the energy goes, as shares of each point's J/token. 'Idle baseline' is the machine's idle "
        "power (measured before the sweep) times the window; 'above idle' is the rest."
    )
    return section("breakdown", "Energy breakdown", body, esc(intro))


def timelines(data: ReportData, figures: Figures) -> str:
    parts = []
    for run in data.runs:
        fig = figs.timeline(run)
        parts.append(
            figures.embed(fig) if fig is not None else _note(f"{run.label}: no power timeline ({run.timeline_note}).")
        )
    return section(
        "timeline",
        "Power timeline",
        "".join(parts),
        esc("Power as sampled during each run; shaded bands are the measured windows (point boundaries)."),
    )


def carbon(data: ReportData, figures: Figures, colors: dict[str, str]) -> str:
    ok = data.rows[data.rows["status"] == "ok"]
    if ok.empty:
        return section("carbon", "Carbon under other grids", _note("No point was measured successfully."))
    table_df = where_to_run(ok, places=DEFAULT_PLACES)
    table_df["place_label"] = [f"{p} ({number(g, 3)})" for p, g in zip(table_df["place"], table_df["grid_g_per_kwh"])]
    info = data.points[POINT_KEYS + ["label", "run_label", "energy_method", "joules_per_token_mean"]].rename(
        columns={"energy_method": "method", "joules_per_token_mean": "jpt"}
    )
    for k in POINT_KEYS:
        table_df[k] = table_df[k].where(table_df[k].notna(), "")
        info[k] = info[k].astype(table_df[k].dtype, errors="ignore")
    merged = table_df.merge(info, on=POINT_KEYS, how="left")
    # The chart keeps each machine's best point per model and workload, to stay readable.
    best = info.dropna(subset=["jpt"]).sort_values("jpt").groupby(["run_label", "model", "workload"]).head(1)
    shown = merged[merged["label"].isin(best["label"]) & merged["run_label"].isin(best["run_label"])]
    shown = shown.merge(best[["run_label", "label"]], on=["run_label", "label"])
    fig = figs.carbon_by_grid(shown)  # None when no point has energy (every meter a null meter)
    parts = [figures.embed(fig) if fig is not None else _note(empty_reason(data.points))]
    places = list(dict.fromkeys(merged["place_label"]))
    rows = []
    for (run, label), g in merged.groupby(["run_label", "label"], sort=False):
        values = dict(zip(g["place_label"], g["co2e_g_per_million_tokens"]))
        rows.append(
            [run, label, Cell(method_tag(g["method"].iloc[0]), g["method"].iloc[0], raw_html=True)]
            + [num_cell(values.get(p)) for p in places]
        )
    parts.append(
        table(
            ["machine", "point", "energy method"] + [f"{p} gCO2e/1M tok" for p in places],
            rows,
            caption="gCO2e per 1M tokens under each grid (gCO2e/kWh in brackets; codecarbon's data), "
            "each run's own PUE",
        )
    )
    intro = (
        "Energy was measured once; carbon is derived. The chart shows each machine's lowest-J/token point per "
        "model and workload; the table has every point."
    )
    return section("carbon", "Carbon under other grids", "".join(parts), esc(intro))


def training_section(data: ReportData, figures: Figures, colors: dict[str, str]) -> str:
    jobs = training.full_jobs(data.points)
    if jobs.empty:
        return section(
            "training",
            "Training extrapolations",
            _note("No training point was measured successfully, so there is nothing to extrapolate."),
        )
    parts = [figures.embed(figs.training_by_grid(jobs, colors))]
    rows = [
        [
            j["run_label"],
            j["label"],
            Cell(method_tag(f"estimated from {j['method']}"), raw_html=True),
            Cell(f"{j['tokens'] / 1e9:g}B", j["tokens"], "num"),
            Cell(j["tokens_source"], cls="wrap"),
            num_cell(j["joules_per_token"]),
            num_cell(j["energy_mwh"], 3),
            num_cell(j["wall_days"], 3),
            num_cell(j["device_days"], 3),
            num_cell(j["co2e_t"], 3),
            num_cell(j["cost_usd"], 3),
        ]
        for _, j in jobs.iterrows()
    ]
    parts.append(
        table(
            [
                "machine",
                "measured step",
                "method",
                "tokens D",
                "D from",
                "J/token",
                "MWh (x PUE)",
                "wall days",
                "device-days",
                "tCO2e (run's grid)",
                "$",
            ],
            rows,
            caption="The measured model trained on D tokens at the measured J/token and tokens/s: "
            "energy = D x J/token x PUE, time = D / tokens/s. Linear in D; no restarts, "
            "evaluation or idle time.",
        )
    )
    ref = training.reference_jobs(data.points)
    if ref.empty:
        parts.append(
            _note(
                "OPT-175B at a measured MFU needs a 16-bit training point on a GPU in the hardware table "
                "(CPU and fp32 runs have no MFU)."
            )
        )
    else:
        rows = [
            [
                Cell(r["what"], cls="wrap"),
                r["hardware"],
                num_cell(r["devices"]),
                num_cell(r["mfu"] * 100, 3),
                num_cell(r["hfu"] * 100, 3),
                num_cell(r["wall_days"], 3),
                num_cell(r["energy_mwh"], 3),
                num_cell(r["pue"]),
                num_cell(r["co2e_t"], 3),
                num_cell(r.get("published_co2e_t")),
                num_cell(r["cost_usd"], 3),
            ]
            for _, r in ref.iterrows()
        ]
        parts.append(
            table(
                [
                    "OPT-175B, 300B tokens",
                    "hardware",
                    "devices",
                    "MFU %",
                    "HFU %",
                    "wall days",
                    "MWh",
                    "PUE",
                    "tCO2e",
                    "published tCO2e",
                    "$",
                ],
                rows,
                caption="Estimates (carbonbench.estimate) with activation recomputation, as the job was "
                "run: MFU counts model FLOPs (full attention, no recomputation), HFU hardware "
                "FLOPs (recomputation included). Device power at TDP for the whole job. A small "
                "model at a small batch uses a small share of a GPU, so its MFU understates what "
                "a 175B model reaches: read the published row as the reference. The published "
                "tCO2e cannot be checked: the paper gives neither its energy nor its grid.",
            )
        )
        parts.append(
            '<details><summary>Assumptions</summary><ul class="tight">'
            + "".join(f"<li>{esc(a)}</li>" for a in ref.iloc[0]["assumptions"])
            + "</ul></details>"
        )
    return section(
        "training",
        "Training extrapolations",
        "".join(parts),
        esc("Estimates built on measured training steps: labelled as estimates, never as measurements."),
    )


# ---- tables ------------------------------------------------------------------------------


def tables(data: ReportData) -> str:
    p = data.points
    rows = []
    for _, r in p.iterrows():
        rows.append(
            [
                r["run_label"],
                r["model"],
                r["workload"],
                num_cell(r["batch_size"]),
                r["sizes"],
                r["dtype"],
                Cell(r["status"], r["status"], "" if r["status"] == "ok" else "bad"),
                num_cell(r["n_repeats"]),
                num_cell(r["tokens_per_s_mean"], half=r["tokens_per_s_ci95"]),
                num_cell(r["joules_per_token_mean"], half=r["joules_per_token_ci95"]),
                Cell(
                    method_tag(caveats.method_text(r["energy_method"], r["energy_missing"])) if r["n_repeats"] else "",
                    r["energy_method"],
                    raw_html=True,
                ),
                num_cell(r["kwh_per_million_tokens_mean"], half=r["kwh_per_million_tokens_ci95"]),
                num_cell(r["co2e_g_per_million_tokens_mean"], half=r["co2e_g_per_million_tokens_ci95"]),
                num_cell(r["usd_per_million_tokens_mean"], half=r["usd_per_million_tokens_ci95"]),
                num_cell(_ms(r["ttft_s"])),
                num_cell(_ms(r["tpot_s"])),
                num_cell(_ms(r["latency_p50_s"])),
                num_cell(r["power_w"]),
                num_cell(r["mfu"] * 100 if _fin(r["mfu"]) else None, 3),
                num_cell(r["hfu"] * 100 if _fin(r["hfu"]) else None, 3),
                num_cell(r["peak_memory_bytes"] / 2**20 if _fin(r["peak_memory_bytes"]) else None),
                r["flags"],
            ]
        )
    parts = [
        table(
            [
                "machine",
                "model",
                "workload",
                "batch",
                "sizes",
                "dtype",
                "status",
                "repeats",
                "tokens/s ± 95% CI",
                "J/token ± 95% CI",
                "energy method",
                "kWh / 1M tok",
                "gCO2e / 1M tok",
                "$ / 1M tok",
                "TTFT ms",
                "TPOT ms",
                "step p50 ms",
                "mean W",
                "MFU %",
                "HFU %",
                "peak MiB",
                "flags",
            ],
            rows,
            table_id="points",
            caption="Every point (click a column to sort). ± is the half-width "
            "of the 95% confidence interval over repeats (Student's t).",
        )
    ]
    parts.append("<h3>codecarbon beside carbonbench</h3>" + caveats.codecarbon_table(data))
    failed = p[p["status"] != "ok"]
    parts.append("<h3>Failed points</h3>")
    if failed.empty:
        parts.append(_note("None: every point was measured."))
    else:
        parts.append(
            table(
                ["machine", "point", "status", "repeats kept", "error"],
                [
                    [r["run_label"], r["label"], r["status"], num_cell(r["n_repeats"]), Cell(r["error"], cls="wrap")]
                    for _, r in failed.iterrows()
                ],
                table_id="failed",
            )
        )
    return section("tables", "Tables", "".join(parts))


def _ms(x: Any) -> Any:
    return x * 1e3 if _fin(x) else None


def _fin(x: Any) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False
