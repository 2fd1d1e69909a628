"""Where each point's energy goes: by component, and idle baseline against above idle."""

from __future__ import annotations

import math
from typing import Optional

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from carbonbench.meters.base import weakest_method
from carbonbench.report.html import number as n
from carbonbench.report.html import plot_text as t
from carbonbench.report.plot import (
    COMPONENT_COLOR,
    MAX_BARS,
    layout,
    method_name,
    ok_points,
    pattern,
)


def breakdown(points: pd.DataFrame, runs: list) -> Optional[go.Figure]:
    """Share of each point's energy by component and idle/active; hover gives J/token."""
    ok = ok_points(points)
    if ok.empty:
        return None
    labels = [r.label for r in runs if r.label in set(ok["run_label"])]
    # A run of more than MAX_BARS points is shown pooled per model and workload: one bar a point
    # would make the chart 30 px a point tall (150,000 px at 5,000 points).
    big = [lab for lab in labels if (ok["run_label"] == lab).sum() > MAX_BARS]
    if big:
        ok = pd.concat([ok[~ok["run_label"].isin(big)], *(pooled(ok[ok["run_label"] == lab]) for lab in big)])
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
        ticks = [f"{t(p['label'])} ({n(p['joules_per_token_mean'], 3)} J/tok)" for p in g.to_dict("records")]
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
                        marker=dict(color=COMPONENT_COLOR[kind], pattern=pattern(method)),
                        hovertext=[f"{kind.upper()} [{t(method)}]: {n(v)} J/token" for v in gm[f"{kind}_j_per_token"]],
                        hovertemplate="%{y}<br>%{hovertext} (%{x:.1f}%)<extra></extra>",
                    ),
                    row=r,
                    col=1,
                )
                seen.add(name)
        split = g["idle_j_per_token"] + g["active_j_per_token"]
        for part, color in (("idle", "#9aa5b1"), ("active", "#7b3fb5")):
            method = "+".join(sorted({method_name(m) for m in g["energy_method"]}))
            name = f"{'idle baseline' if part == 'idle' else 'above idle'} [{t(method)}]"
            fig.add_trace(
                go.Bar(
                    y=ticks,
                    x=(g[f"{part}_j_per_token"] / split * 100).tolist(),
                    orientation="h",
                    name=name,
                    legendgroup=name,
                    showlegend=name not in seen,
                    marker=dict(color=color, pattern=pattern(method)),
                    hovertext=[
                        f"{part}: {n(v)} J/token [{t(method_name(m))}]"
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
    return layout(
        fig,
        "Energy breakdown (hatched: estimated)"
        + (f"; runs of more than {MAX_BARS} points pooled per model and workload (energy over tokens)" if big else ""),
        140 + 30 * sum(sizes) + 70 * len(labels),
        legend_traceorder="normal",
    )


def pooled(points: pd.DataFrame) -> pd.DataFrame:
    """One row per model and workload: J/token by component and idle/active as sum(energy) / sum(tokens)."""
    out = []
    for (model, workload), g in points.groupby(["model", "workload"], sort=False):
        tokens = pd.to_numeric(g["tokens_total"], errors="coerce")
        total = tokens.sum()
        row = g.iloc[0].to_dict()

        row.update(
            label=f"{model} {workload}, {len(g)} points pooled",
            joules_per_token_mean=float(g["energy_j_total"].sum(min_count=1) / total) if total > 0 else math.nan,
            energy_method=weakest_method(g["energy_method"].dropna()),
            **{c: _per_token(g[c], tokens) for c in ("gpu_j_per_token", "cpu_j_per_token", "dram_j_per_token")},
            **{c: _per_token(g[c], tokens) for c in ("idle_j_per_token", "active_j_per_token")},
            **{f"{k}_method": _methods(g[f"{k}_method"]) for k in ("gpu", "cpu", "dram")},
        )
        out.append(row)
    return pd.DataFrame(out, columns=points.columns)


def _per_token(j_per_token: pd.Series, tokens: pd.Series) -> float:
    """Pooled J/token: each point's energy (J/token x its tokens) summed, over all the tokens."""
    total = tokens.sum()
    energy = (pd.to_numeric(j_per_token, errors="coerce") * tokens).sum(min_count=1)
    return float(energy / total) if total > 0 else math.nan


def _methods(values: pd.Series):
    found = sorted({m for v in values.dropna() for m in str(v).split("+") if m})
    return "+".join(found) if found else None
