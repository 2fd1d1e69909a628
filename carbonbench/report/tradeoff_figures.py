"""Throughput against energy (with the Pareto front), and decode latency."""

from __future__ import annotations

import math
from typing import Optional

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from carbonbench.report.html import plot_text as t
from carbonbench.report.plot import (
    MAX_LINES,
    METHOD_SYMBOL,
    finite,
    hover,
    hover_texts,
    layout,
    log_ticks,
    method_name,
    ok_points,
    scatter,
    short_hovers,
    workloads_of,
)


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
    ok = ok_points(points)
    if ok.empty:
        return None
    workloads = workloads_of(ok)
    fig = make_subplots(rows=1, cols=len(workloads), column_titles=[t(w) for w in workloads], horizontal_spacing=0.07)
    front_shown = False
    for c, w in enumerate(workloads, start=1):
        sub = ok[ok["workload"] == w]
        for (run, method), g in sub.groupby(["run_label", "energy_method"], sort=False, dropna=False):
            fig.add_trace(
                scatter(
                    len(g),
                    x=g["tokens_per_s_mean"].tolist(),
                    y=g["joules_per_token_mean"].tolist(),
                    mode="markers",
                    name=f"{t(run)} [{t(method_name(method))}]",
                    legendgroup=t(f"{run}|{method}"),
                    showlegend=(c == 1),
                    marker=dict(color=run_colors.get(run), size=10, symbol=METHOD_SYMBOL.get(method_name(method), "x")),
                    error_x=dict(type="data", array=g["tokens_per_s_ci95"].tolist(), visible=True, thickness=1),
                    error_y=dict(type="data", array=g["joules_per_token_ci95"].tolist(), visible=True, thickness=1),
                    text=hover_texts(g),
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
    return layout(
        fig, "Throughput against energy per token; stars: the Pareto front (no point is both faster and cheaper)", 480
    )


def latency(points: pd.DataFrame, run_colors: dict[str, str]) -> Optional[go.Figure]:
    ok = ok_points(points)
    dec = ok[(ok["workload"] == "decode") & ok["ttft_s"].map(finite)]
    if dec.empty:
        return None
    fig = make_subplots(
        rows=1,
        cols=3,
        horizontal_spacing=0.08,
        subplot_titles=("time to first token (ms)", "time per output token (ms)", "tokens/s against TPOT"),
    )
    by = ["run_label", "model", "sizes"]
    lines = dec.groupby(by, sort=False).ngroups <= MAX_LINES  # past it: one marker trace per run
    for key, g in dec.groupby(by if lines else ["run_label"], sort=False):
        key = key if isinstance(key, tuple) else (key,)
        g = g.sort_values("batch_size")
        name = " · ".join(t(k) for k in key)
        style = dict(color=run_colors.get(key[0]))
        full, short = hover_texts(g), short_hovers(g)
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
                scatter(
                    len(g),
                    x=xs,
                    y=y.tolist(),
                    mode="lines+markers" if lines else "markers",
                    name=name,
                    legendgroup=name,
                    showlegend=(c == 1),
                    line=style,
                    marker=dict(size=8, color=style["color"]),
                    text=full if c == 1 else short,
                    hovertemplate="%{text}<extra></extra>"
                    if c == 1
                    else "%{text}<br>%{x:.4g}, %{y:.4g}<extra></extra>",
                ),
                row=1,
                col=c,
            )
    fig.update_xaxes(**log_ticks(dec["batch_size"]), title_text="batch size", row=1, col=1)
    fig.update_xaxes(**log_ticks(dec["batch_size"]), title_text="batch size", row=1, col=2)
    fig.update_xaxes(type="log", title_text="TPOT (ms)", row=1, col=3)
    fig.update_yaxes(type="log")
    title = "Decode latency (means over repeats)"
    if not lines:
        title += f"; past {MAX_LINES} lines, points, one colour per run (hover for which)"
    return layout(fig, title, 420)
