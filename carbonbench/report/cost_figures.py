"""Cost per token (J/token, gCO2e, $) against batch size, sequence length and model size."""

from __future__ import annotations

from typing import Optional

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from carbonbench.report.html import plot_text as t
from carbonbench.report.plot import (
    MAX_LINES,
    METHOD_SYMBOL,
    METRIC_AXES,
    hover_texts,
    layout,
    log_ticks,
    method_name,
    ok_points,
    scatter,
    short_hovers,
    workloads_of,
)


def _series(
    points: pd.DataFrame, by: list[str], x: str, metrics, title: str, xtitle: str, run_colors: dict[str, str]
) -> go.Figure:
    """Lines of each metric against ``x``, one column per workload, one line per group."""
    workloads = workloads_of(points)
    fig = make_subplots(
        rows=len(metrics),
        cols=len(workloads),
        shared_xaxes="columns",
        column_titles=[t(w) for w in workloads],
        vertical_spacing=0.06,
        horizontal_spacing=0.06,
    )
    collapsed = False
    for c, w in enumerate(workloads, start=1):
        sub = points[points["workload"] == w]
        # Past MAX_LINES lines a subplot is unreadable and heavy: one marker trace per run and method.
        lines = sub.groupby(by, sort=False, dropna=False).ngroups <= MAX_LINES
        collapsed = collapsed or not lines
        for key, g in sub.groupby(by if lines else ["run_label", "energy_method"], sort=False, dropna=False):
            g = g.sort_values(x)
            first = g.iloc[0]
            method = method_name(first["energy_method"])
            key = key if isinstance(key, tuple) else (key,)
            name = " · ".join(t(k) for k in key[: len(key) if lines else 1]) + f" [{t(method)}]"
            full, short = hover_texts(g), short_hovers(g)
            for r, (col, unit) in enumerate(metrics, start=1):
                fig.add_trace(
                    scatter(
                        len(g),
                        x=g[x].tolist(),
                        y=g[f"{col}_mean"].tolist(),
                        mode="lines+markers" if lines else "markers",
                        name=name,
                        legendgroup=f"{w}|{name}",
                        showlegend=(r == 1),
                        line=dict(
                            color=run_colors.get(first["run_label"]), dash="solid" if method == "counter" else "dot"
                        ),
                        marker=dict(
                            symbol=METHOD_SYMBOL.get(method, "x"), size=8, color=run_colors.get(first["run_label"])
                        ),
                        error_y=dict(type="data", array=g[f"{col}_ci95"].tolist(), visible=True, thickness=1),
                        # The full hover once, on the first metric; the others name the point and their value.
                        text=full if r == 1 else short,
                        hovertemplate="%{text}<extra></extra>"
                        if r == 1
                        else f"%{{text}}<br>%{{y:.4g}} {unit}<extra></extra>",
                    ),
                    row=r,
                    col=c,
                )
        fig.update_xaxes(**log_ticks(sub[x]), row=len(metrics), col=c, title_text=xtitle)
        for r in range(1, len(metrics)):
            fig.update_xaxes(**log_ticks(sub[x]), row=r, col=c)
    for r, (_, label) in enumerate(metrics, start=1):
        fig.update_yaxes(type="log", title_text=label, row=r, col=1)
        for c in range(2, len(workloads) + 1):
            fig.update_yaxes(type="log", row=r, col=c)
    if collapsed:
        title += f"; past {MAX_LINES} lines a subplot shows points, one colour per run (hover for which)"
    return layout(fig, title, 260 * len(metrics) + 120)


def cost_vs_batch(points: pd.DataFrame, run_colors: dict[str, str]) -> Optional[go.Figure]:
    ok = ok_points(points)
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
    ok = ok_points(points).copy()
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
    ok = ok_points(points)
    ok = ok[pd.to_numeric(ok["params"], errors="coerce") > 0]
    if ok["params"].nunique() < 2:
        return None
    workloads = workloads_of(ok)
    fig = make_subplots(rows=1, cols=len(workloads), column_titles=[t(w) for w in workloads], horizontal_spacing=0.06)
    for c, w in enumerate(workloads, start=1):
        for (run, method), g in ok[ok["workload"] == w].groupby(
            ["run_label", "energy_method"], sort=False, dropna=False
        ):
            fig.add_trace(
                scatter(
                    len(g),
                    x=g["params"].tolist(),
                    y=g["joules_per_token_mean"].tolist(),
                    mode="markers",
                    name=f"{t(run)} [{t(method_name(method))}]",
                    legendgroup=t(f"{run}|{method}"),
                    showlegend=(c == 1),
                    marker=dict(color=run_colors.get(run), size=9, symbol=METHOD_SYMBOL.get(method_name(method), "x")),
                    error_y=dict(type="data", array=g["joules_per_token_ci95"].tolist(), visible=True, thickness=1),
                    text=hover_texts(g),
                    hovertemplate="%{text}<extra></extra>",
                ),
                row=1,
                col=c,
            )
        fig.update_xaxes(type="log", title_text="parameters", row=1, col=c)
        fig.update_yaxes(type="log", row=1, col=c)
    fig.update_yaxes(title_text="J/token", row=1, col=1)
    return layout(fig, "J/token by model size (every batch size and length; hover for which)", 420)
