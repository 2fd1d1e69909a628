"""Plotly figures for the report. Every user string goes through ``plot_text`` (``t``).

Energy figures carry the energy method in every trace name or hover, and draw estimated
energy differently (open markers, hatched bars), so an estimate never looks like a
measurement. Figures use SVG traces only: WebGL may be missing where reports are read.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from carbonbench.report.html import number as n
from carbonbench.report.html import plot_text as t

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22")
METHOD_SYMBOL = {"counter": "circle", "integrated": "square", "estimated": "diamond-open"}
COMPONENT_COLOR = {"gpu": "#2ca02c", "cpu": "#1f77b4", "dram": "#ff7f0e"}
WORKLOADS = ("prefill", "decode", "train")
METRIC_AXES = (
    ("joules_per_token", "J/token"),
    ("co2e_g_per_million_tokens", "gCO2e per 1M tokens"),
    ("usd_per_million_tokens", "USD per 1M tokens"),
)
MAX_TIMELINE_POINTS = 3000  # per component and run: keeps the file small, the shape intact


def colors(labels) -> dict[str, str]:
    return {label: PALETTE[i % len(PALETTE)] for i, label in enumerate(dict.fromkeys(labels))}


def _layout(fig: go.Figure, title: str, height: int, **kw) -> go.Figure:
    fig.update_layout(
        title=dict(text=title, x=0, xanchor="left"),
        height=height,
        margin=dict(l=70, r=20, t=70, b=50),
        hoverlabel=dict(align="left"),
        legend=dict(font=dict(size=11)),
        **kw,
    )
    return fig


def _workloads(points: pd.DataFrame) -> list[str]:
    present = set(points["workload"])
    return [w for w in WORKLOADS if w in present] + sorted(present - set(WORKLOADS))


def _method(m: Any) -> str:
    return m if isinstance(m, str) and m else "none"


def hover(p: Any) -> str:
    """A point's hover text: what it is, where it ran, its figures with CIs and method."""
    lines = [
        f"<b>{t(p['label'])}</b>",
        t(p["run_label"]),
        f"{t(p['engine'])} · {t(p['dtype'])} · {int(p['n_repeats'] or 0)} repeat(s)",
        f"tokens/s: {n(p['tokens_per_s_mean'])} ± {n(p['tokens_per_s_ci95'], 2) or 'n/a'}",
        f"J/token: {n(p['joules_per_token_mean'])} ± {n(p['joules_per_token_ci95'], 2) or 'n/a'}"
        f" [{t(_method(p['energy_method']))}]",
        f"gCO2e/1M tokens: {n(p['co2e_g_per_million_tokens_mean'])}",
        f"USD/1M tokens: {n(p['usd_per_million_tokens_mean'])}",
    ]
    if _finite(p.get("ttft_s")):
        lines.append(f"TTFT: {n(p['ttft_s'] * 1e3)} ms · TPOT: {n(p['tpot_s'] * 1e3)} ms")
    return "<br>".join(lines)


def _finite(x: Any) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def _ok(points: pd.DataFrame) -> pd.DataFrame:
    return points[(points["status"] == "ok") & (points["n_repeats"].fillna(0) > 0)]


def _log_ticks(values) -> dict:
    vals = sorted({float(v) for v in values if _finite(v) and float(v) > 0})
    return dict(type="log", tickvals=vals, ticktext=[n(v) for v in vals])


def _series(
    points: pd.DataFrame, by: list[str], x: str, metrics, title: str, xtitle: str, run_colors: dict[str, str]
) -> go.Figure:
    """Lines of each metric against ``x``, one column per workload, one line per group."""
    workloads = _workloads(points)
    fig = make_subplots(
        rows=len(metrics),
        cols=len(workloads),
        shared_xaxes="columns",
        column_titles=[t(w) for w in workloads],
        vertical_spacing=0.06,
        horizontal_spacing=0.06,
    )
    for c, w in enumerate(workloads, start=1):
        sub = points[points["workload"] == w]
        for key, g in sub.groupby(by, sort=False, dropna=False):
            g = g.sort_values(x)
            first = g.iloc[0]
            method = _method(first["energy_method"])
            key = key if isinstance(key, tuple) else (key,)
            name = " · ".join(t(k) for k in key) + f" [{t(method)}]"
            for r, (col, _) in enumerate(metrics, start=1):
                fig.add_trace(
                    go.Scatter(
                        x=g[x].tolist(),
                        y=g[f"{col}_mean"].tolist(),
                        mode="lines+markers",
                        name=name,
                        legendgroup=f"{w}|{name}",
                        showlegend=(r == 1),
                        line=dict(
                            color=run_colors.get(first["run_label"]), dash="solid" if method == "counter" else "dot"
                        ),
                        marker=dict(symbol=METHOD_SYMBOL.get(method, "x"), size=8),
                        error_y=dict(type="data", array=g[f"{col}_ci95"].tolist(), visible=True, thickness=1),
                        text=[hover(p) for _, p in g.iterrows()],
                        hovertemplate="%{text}<extra></extra>",
                    ),
                    row=r,
                    col=c,
                )
        fig.update_xaxes(**_log_ticks(sub[x]), row=len(metrics), col=c, title_text=xtitle)
        for r in range(1, len(metrics)):
            fig.update_xaxes(**_log_ticks(sub[x]), row=r, col=c)
    for r, (_, label) in enumerate(metrics, start=1):
        fig.update_yaxes(type="log", title_text=label, row=r, col=1)
        for c in range(2, len(workloads) + 1):
            fig.update_yaxes(type="log", row=r, col=c)
    return _layout(fig, title, 260 * len(metrics) + 120)


def cost_vs_batch(points: pd.DataFrame, run_colors: dict[str, str]) -> Optional[go.Figure]:
    ok = _ok(points)
    if ok.empty:
        return None
    return _series(
        ok,
        ["run_label", "model", "sizes"],
        "batch_size",
        METRIC_AXES,
        "Cost per token against batch size (error bars: 95% CI over repeats)",
        "batch size",
        run_colors,
    )


def cost_vs_length(points: pd.DataFrame, run_colors: dict[str, str]) -> Optional[go.Figure]:
    """Only where some line has two lengths or more; else a flat chart would say nothing."""
    ok = _ok(points).copy()
    if ok.empty:
        return None
    ok["batch"] = "b" + ok["batch_size"].astype(int).astype(str)
    ok["decode_new"] = [f"n{int(v)}" if w == "decode" else "" for v, w in zip(ok["new_tokens"], ok["workload"])]
    by = ["run_label", "model", "batch", "decode_new"]
    if ok.groupby(by + ["workload"])["length"].nunique().max() < 2:
        return None
    return _series(
        ok,
        by,
        "length",
        METRIC_AXES,
        "Cost per token against sequence length (prompt tokens; seq_len for training)",
        "sequence length (tokens)",
        run_colors,
    )


def by_model_size(points: pd.DataFrame, run_colors: dict[str, str]) -> Optional[go.Figure]:
    ok = _ok(points)
    ok = ok[pd.to_numeric(ok["params"], errors="coerce") > 0]
    if ok["params"].nunique() < 2:
        return None
    workloads = _workloads(ok)
    fig = make_subplots(rows=1, cols=len(workloads), column_titles=[t(w) for w in workloads], horizontal_spacing=0.06)
    for c, w in enumerate(workloads, start=1):
        for (run, method), g in ok[ok["workload"] == w].groupby(
            ["run_label", "energy_method"], sort=False, dropna=False
        ):
            fig.add_trace(
                go.Scatter(
                    x=g["params"].tolist(),
                    y=g["joules_per_token_mean"].tolist(),
                    mode="markers",
                    name=f"{t(run)} [{t(_method(method))}]",
                    legendgroup=t(f"{run}|{method}"),
                    showlegend=(c == 1),
                    marker=dict(color=run_colors.get(run), size=9, symbol=METHOD_SYMBOL.get(_method(method), "x")),
                    error_y=dict(type="data", array=g["joules_per_token_ci95"].tolist(), visible=True, thickness=1),
                    text=[hover(p) for _, p in g.iterrows()],
                    hovertemplate="%{text}<extra></extra>",
                ),
                row=1,
                col=c,
            )
        fig.update_xaxes(type="log", title_text="parameters", row=1, col=c)
        fig.update_yaxes(type="log", row=1, col=c)
    fig.update_yaxes(title_text="J/token", row=1, col=1)
    return _layout(fig, "J/token by model size (every batch size and length; hover for which)", 420)


def pareto(g: pd.DataFrame) -> pd.DataFrame:
    """Points no other point beats on both throughput (higher) and J/token (lower)."""
    g = g.dropna(subset=["tokens_per_s_mean", "joules_per_token_mean"])
    g = g.sort_values(["tokens_per_s_mean", "joules_per_token_mean"], ascending=[False, True])
    front, best = [], math.inf
    for i, row in g.iterrows():
        if row["joules_per_token_mean"] < best:
            front.append(i)
            best = row["joules_per_token_mean"]
    return g.loc[front].sort_values("tokens_per_s_mean")


def tradeoff(points: pd.DataFrame, run_colors: dict[str, str]) -> Optional[go.Figure]:
    ok = _ok(points)
    if ok.empty:
        return None
    workloads = _workloads(ok)
    fig = make_subplots(rows=1, cols=len(workloads), column_titles=[t(w) for w in workloads], horizontal_spacing=0.07)
    front_shown = False
    for c, w in enumerate(workloads, start=1):
        sub = ok[ok["workload"] == w]
        for (run, method), g in sub.groupby(["run_label", "energy_method"], sort=False, dropna=False):
            fig.add_trace(
                go.Scatter(
                    x=g["tokens_per_s_mean"].tolist(),
                    y=g["joules_per_token_mean"].tolist(),
                    mode="markers",
                    name=f"{t(run)} [{t(_method(method))}]",
                    legendgroup=t(f"{run}|{method}"),
                    showlegend=(c == 1),
                    marker=dict(color=run_colors.get(run), size=10, symbol=METHOD_SYMBOL.get(_method(method), "x")),
                    error_x=dict(type="data", array=g["tokens_per_s_ci95"].tolist(), visible=True, thickness=1),
                    error_y=dict(type="data", array=g["joules_per_token_ci95"].tolist(), visible=True, thickness=1),
                    text=[hover(p) for _, p in g.iterrows()],
                    hovertemplate="%{text}<extra></extra>",
                ),
                row=1,
                col=c,
            )
        for model, g in sub.groupby("model", sort=False):
            front = pareto(g)
            if front.empty:
                continue
            fig.add_trace(
                go.Scatter(
                    x=front["tokens_per_s_mean"].tolist(),
                    y=front["joules_per_token_mean"].tolist(),
                    mode="lines+markers",
                    name="Pareto front (per model)",
                    legendgroup="pareto",
                    showlegend=not front_shown,
                    line=dict(color="rgba(0,0,0,0.55)", dash="dash", width=1.5),
                    marker=dict(symbol="star", size=13, color="rgba(255,215,0,0.9)", line=dict(color="black", width=1)),
                    text=[f"<b>Pareto front of {t(model)} {t(w)}</b><br>" + hover(p) for _, p in front.iterrows()],
                    hovertemplate="%{text}<extra></extra>",
                ),
                row=1,
                col=c,
            )
            front_shown = True
        fig.update_xaxes(type="log", title_text="tokens/s (higher is better)", row=1, col=c)
        fig.update_yaxes(type="log", row=1, col=c)
    fig.update_yaxes(title_text="J/token (lower is better)", row=1, col=1)
    return _layout(
        fig, "Throughput against energy per token; stars: the Pareto front (no point is both faster and cheaper)", 480
    )


def latency(points: pd.DataFrame, run_colors: dict[str, str]) -> Optional[go.Figure]:
    ok = _ok(points)
    dec = ok[(ok["workload"] == "decode") & ok["ttft_s"].map(_finite)]
    if dec.empty:
        return None
    fig = make_subplots(
        rows=1,
        cols=3,
        horizontal_spacing=0.08,
        subplot_titles=("time to first token (ms)", "time per output token (ms)", "tokens/s against TPOT"),
    )
    for key, g in dec.groupby(["run_label", "model", "sizes"], sort=False):
        g = g.sort_values("batch_size")
        name = " · ".join(t(k) for k in key)
        style = dict(color=run_colors.get(key[0]))
        text = [hover(p) for _, p in g.iterrows()]
        for c, (x, y) in enumerate(
            (
                ("batch_size", g["ttft_s"] * 1e3),
                ("batch_size", g["tpot_s"] * 1e3),
                (g["tpot_s"] * 1e3, g["tokens_per_s_mean"]),
            ),
            start=1,
        ):
            xs = g[x].tolist() if isinstance(x, str) else x.tolist()
            fig.add_trace(
                go.Scatter(
                    x=xs,
                    y=y.tolist(),
                    mode="lines+markers",
                    name=name,
                    legendgroup=name,
                    showlegend=(c == 1),
                    line=style,
                    marker=dict(size=8),
                    text=text,
                    hovertemplate="%{text}<extra></extra>",
                ),
                row=1,
                col=c,
            )
    fig.update_xaxes(**_log_ticks(dec["batch_size"]), title_text="batch size", row=1, col=1)
    fig.update_xaxes(**_log_ticks(dec["batch_size"]), title_text="batch size", row=1, col=2)
    fig.update_xaxes(type="log", title_text="TPOT (ms)", row=1, col=3)
    fig.update_yaxes(type="log")
    return _layout(fig, "Decode latency (means over repeats)", 420)


def breakdown(points: pd.DataFrame, runs: list) -> Optional[go.Figure]:
    """Share of each point's energy by component and idle/active; hover gives J/token."""
    ok = _ok(points)
    if ok.empty:
        return None
    labels = [r.label for r in runs if r.label in set(ok["run_label"])]
    sizes = [max(1, int((ok["run_label"] == lab).sum())) for lab in labels]
    titles = [x for lab in labels for x in (f"<b>{t(lab)}</b>: by component", "idle baseline vs above idle")]
    fig = make_subplots(
        rows=len(labels),
        cols=2,
        shared_yaxes=True,
        horizontal_spacing=0.06,
        vertical_spacing=0.25 / max(1, len(labels)),
        row_heights=[s / sum(sizes) for s in sizes],
        subplot_titles=titles,
    )
    seen: set = set()
    for r, lab in enumerate(labels, start=1):
        g = ok[ok["run_label"] == lab]
        ticks = [f"{t(p['label'])} ({n(p['joules_per_token_mean'], 3)} J/tok)" for _, p in g.iterrows()]
        total = g[["gpu_j_per_token", "cpu_j_per_token", "dram_j_per_token"]].sum(axis=1, min_count=1)
        for kind in ("gpu", "cpu", "dram"):
            for method, gm in g.groupby(g[f"{kind}_method"].fillna("none"), sort=False):
                if gm[f"{kind}_j_per_token"].isna().all():
                    continue
                idx = [list(g.index).index(i) for i in gm.index]
                name = f"{kind.upper()} [{t(method)}]"
                fig.add_trace(
                    go.Bar(
                        y=[ticks[i] for i in idx],
                        x=(gm[f"{kind}_j_per_token"] / total[gm.index] * 100).tolist(),
                        orientation="h",
                        name=name,
                        legendgroup=name,
                        showlegend=name not in seen,
                        marker=dict(color=COMPONENT_COLOR[kind], pattern=_pattern(method)),
                        hovertext=[f"{kind.upper()} [{t(method)}]: {n(v)} J/token" for v in gm[f"{kind}_j_per_token"]],
                        hovertemplate="%{y}<br>%{hovertext} (%{x:.1f}%)<extra></extra>",
                    ),
                    row=r,
                    col=1,
                )
                seen.add(name)
        split = g["idle_j_per_token"] + g["active_j_per_token"]
        for part, color in (("idle", "#9aa5b1"), ("active", "#7b3fb5")):
            method = "+".join(sorted({_method(m) for m in g["energy_method"]}))
            name = f"{'idle baseline' if part == 'idle' else 'above idle'} [{t(method)}]"
            fig.add_trace(
                go.Bar(
                    y=ticks,
                    x=(g[f"{part}_j_per_token"] / split * 100).tolist(),
                    orientation="h",
                    name=name,
                    legendgroup=name,
                    showlegend=name not in seen,
                    marker=dict(color=color, pattern=_pattern(method)),
                    hovertext=[
                        f"{part}: {n(v)} J/token [{t(_method(m))}]"
                        for v, m in zip(g[f"{part}_j_per_token"], g["energy_method"])
                    ],
                    hovertemplate="%{y}<br>%{hovertext} (%{x:.1f}%)<extra></extra>",
                ),
                row=r,
                col=2,
            )
            seen.add(name)
    fig.update_layout(barmode="stack")
    fig.update_xaxes(range=[0, 100], ticksuffix="%")
    fig.update_yaxes(autorange="reversed", automargin=True)
    return _layout(
        fig,
        "Energy breakdown (hatched: estimated)",
        140 + 30 * sum(sizes) + 70 * len(labels),
        legend_traceorder="normal",
    )


def _pattern(method: str) -> dict:
    return dict(shape="/" if "estimated" in method else ("." if "integrated" in method else ""), solidity=0.35)


def timeline(run) -> Optional[go.Figure]:
    """A run's power over time with its measured windows shaded, one band per repeat."""
    tl = run.timeline
    if tl is None or tl.empty:
        return None
    t0 = float(tl["unix_s"].min())
    fig = go.Figure()
    methods = _component_methods(run.record)
    for comp, g in tl.groupby("component", sort=True):
        stride = max(1, math.ceil(len(g) / MAX_TIMELINE_POINTS))
        g = g.iloc[::stride]
        method = methods.get(comp, "")
        fig.add_trace(
            go.Scatter(
                x=(g["unix_s"] - t0).round(3).tolist(),
                y=g["power_w"].tolist(),
                mode="lines",
                name=f"{t(comp)}" + (f" [{t(method)}]" if method else ""),
                line=dict(width=1.3, shape="hv"),
                text=[t(wd) if wd else "between windows" for wd in g["window"]],
                hovertemplate="%{x:.2f} s: %{y:.1f} W<br>%{text}<extra>" + t(comp) + "</extra>",
            )
        )
    shapes, annotations, mids, mid_text = [], [], [], []
    for i, point in enumerate(run.record.points):
        for rep in point.repeats:
            start, dur = rep.start_unix_s, rep.duration_s
            if not (_finite(start) and _finite(dur)):
                continue
            x0, x1 = float(start) - t0, float(start) + float(dur) - t0
            shapes.append(
                dict(
                    type="rect",
                    xref="x",
                    yref="paper",
                    x0=x0,
                    x1=x1,
                    y0=0,
                    y1=1,
                    layer="below",
                    line=dict(width=0.6, color="rgba(0,0,0,0.35)"),
                    fillcolor=PALETTE[i % len(PALETTE)],
                    opacity=0.15,
                )
            )
            mids.append((x0 + x1) / 2)
            mid_text.append(f"{t(point.key)} repeat {t(rep.repeat)}: {n(dur, 3)} s")
            if rep.repeat == 0:
                annotations.append(
                    dict(
                        x=x0,
                        y=1,
                        xref="x",
                        yref="paper",
                        text=t(point.key),
                        showarrow=False,
                        textangle=-90,
                        xanchor="left",
                        yanchor="top",
                        font=dict(size=9, color="#444"),
                    )
                )
    if mids:
        fig.add_trace(
            go.Scatter(
                x=mids,
                y=[0] * len(mids),
                mode="markers",
                name="measured windows",
                marker=dict(symbol="line-ns-open", size=10, color="#555"),
                text=mid_text,
                hovertemplate="%{text}<extra></extra>",
            )
        )
    fig.update_layout(shapes=shapes, annotations=annotations if len(annotations) <= 40 else [])
    fig.update_xaxes(title_text="seconds since the first sample")
    fig.update_yaxes(title_text="power (W)", rangemode="tozero")
    return _layout(fig, f"Power timeline: {t(run.label)} (shaded: measured windows, one band per repeat)", 420)


def _component_methods(record) -> dict[str, str]:
    methods: dict[str, str] = {}
    for p in record.points:
        for rep in p.repeats:
            for comp, c in rep.components.items():
                if c.method:
                    methods.setdefault(comp, c.method)
    for comp, m in (record.idle.method if record.idle is not None else {}).items():
        methods.setdefault(comp, m)
    return methods


def carbon_by_grid(table: pd.DataFrame) -> Optional[go.Figure]:
    """gCO2e per 1M tokens of each point (a row) under each grid (a colour, clean to dirty)."""
    if table.empty:
        return None
    fig = go.Figure()
    places = table.drop_duplicates("place_label").sort_values("grid_g_per_kwh")
    rows = table.drop_duplicates(["run_label", "label"])
    ticks = {
        (r["run_label"], r["label"]): f"{t(r['label'])} · {t(r['run_label'])} [{t(_method(r['method']))}]"
        for _, r in rows.iterrows()
    }
    for i, (_, place) in enumerate(places.iterrows()):
        g = table[table["place_label"] == place["place_label"]]
        shade = i / max(1, len(places) - 1)
        fig.add_trace(
            go.Bar(
                y=[ticks[(r, lab)] for r, lab in zip(g["run_label"], g["label"])],
                x=g["co2e_g_per_million_tokens"].tolist(),
                orientation="h",
                name=t(place["place_label"]),
                marker=dict(color=f"rgb({int(60 + 170 * shade)},{int(160 - 90 * shade)},{int(90 - 40 * shade)})"),
                hovertext=[
                    f"{t(lab)} · {t(r)}<br>{t(place['place_label'])} gCO2e/kWh: {n(v)} gCO2e per 1M tokens"
                    for lab, r, v in zip(g["label"], g["run_label"], g["co2e_g_per_million_tokens"])
                ],
                hovertemplate="%{hovertext}<extra></extra>",
            )
        )
    fig.update_layout(barmode="group", legend_title_text="grid (gCO2e/kWh)")
    fig.update_xaxes(type="log", title_text="gCO2e per 1M tokens")
    fig.update_yaxes(autorange="reversed", automargin=True)
    return _layout(fig, "The same energy under other grids (each run's own PUE)", 160 + 14 * len(table))


def training_by_grid(jobs: pd.DataFrame, run_colors: dict[str, str]) -> Optional[go.Figure]:
    if jobs.empty:
        return None
    cols = [c for c in jobs.columns if c.startswith("co2e_t@")]
    fig = go.Figure()
    for _, j in jobs.iterrows():
        fig.add_trace(
            go.Bar(
                x=[t(c.split("@", 1)[1]) for c in cols],
                y=[j[c] for c in cols],
                name=f"{t(j['label'])} · {t(j['run_label'])} [estimated from {t(_method(j['method']))}]",
                marker=dict(color=run_colors.get(j["run_label"]), pattern=_pattern("estimated")),
                hovertext=[f"{t(j['label'])} · {t(j['run_label'])}<br>{n(j[c], 3)} tCO2e" for c in cols],
                hovertemplate="%{x}: %{hovertext}<extra></extra>",
            )
        )
    fig.update_layout(barmode="group")
    fig.update_yaxes(type="log", title_text="tCO2e for the whole training job")
    fig.update_xaxes(title_text="grid")
    return _layout(fig, "Whole training job at the measured J/token, under several grids (an extrapolation)", 420)


def comparison(c, a_color: str, b_color: str) -> Optional[go.Figure]:
    """B/A ratios per matched point: who wins where, and by how much."""
    m = c.matched
    if m.empty:
        return None
    fig = make_subplots(
        rows=1,
        cols=2,
        shared_yaxes=True,
        horizontal_spacing=0.09,
        subplot_titles=("tokens/s, B / A (right of 1: B faster)", "J/token, B / A (left of 1: B uses less energy)"),
    )
    # Energy methods in the labels: a ratio of an estimate to a counter reading is no better than the estimate.
    labels = [f"{t(x)} [{t(_method(a))}/{t(_method(b))}]" for x, a, b in zip(m["label"], m["a_method"], m["b_method"])]
    for col, (metric, _higher) in enumerate((("tokens_per_s", True), ("joules_per_token", False)), start=1):
        ratios = m[f"{metric}_ratio"].tolist()
        winners = m[f"{metric}_winner"].tolist()
        overlap = m[f"{metric}_overlap"].tolist()
        # Bars grow from 1 (no difference) towards the ratio, so a bigger win is a longer bar.
        fig.add_trace(
            go.Bar(
                y=labels,
                x=[r - 1 if _finite(r) else None for r in ratios],
                base=1,
                orientation="h",
                showlegend=False,
                marker=dict(
                    color=[b_color if w == "B" else a_color if w == "A" else "#999" for w in winners],
                    opacity=[0.4 if o else 1.0 for o in overlap],
                ),
                text=[f"{w} x{n(f, 3)}" if w in ("A", "B") else w for w, f in zip(winners, m[f"{metric}_factor"])],
                textposition="outside",
                cliponaxis=False,
                hovertext=[
                    f"{lab}<br>A: {n(a)} · B: {n(b)}<br>B/A = {n(r, 3)}" + ("<br>95% CIs overlap" if o else "")
                    for lab, a, b, r, o in zip(labels, m[f"a_{metric}"], m[f"b_{metric}"], ratios, overlap)
                ],
                hovertemplate="%{hovertext}<extra></extra>",
            ),
            row=1,
            col=col,
        )
        fig.add_vline(x=1, line=dict(color="black", width=1), row=1, col=col)
        fig.update_xaxes(type="log", row=1, col=col)
    fig.update_yaxes(autorange="reversed", automargin=True)
    title = "Who wins where: bars in the winner's colour, pale where the 95% CIs overlap"
    return _layout(fig, title, 140 + 30 * len(m))
