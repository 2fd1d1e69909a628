"""The same energy under other grids: per point, and for whole training jobs."""

from __future__ import annotations

from typing import Optional

import pandas as pd
import plotly.graph_objects as go

from carbonbench.report.html import number as n
from carbonbench.report.html import plot_text as t
from carbonbench.report.plot import (
    MAX_LINES,
    layout,
    method_name,
    pattern,
)


def carbon_by_grid(table: pd.DataFrame) -> Optional[go.Figure]:
    """gCO2e per 1M tokens of each point (a row) under each grid (a colour, clean to dirty)."""
    if table.empty:
        return None
    fig = go.Figure()
    places = table.drop_duplicates("place_label").sort_values("grid_g_per_kwh")
    rows = table.drop_duplicates(["run_label", "label"])
    ticks = {
        (r["run_label"], r["label"]): f"{t(r['label'])} · {t(r['run_label'])} [{t(method_name(r['method']))}]"
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
    return layout(fig, "The same energy under other grids (each run's own PUE)", 160 + 14 * len(table))


def training_by_grid(jobs: pd.DataFrame, run_colors: dict[str, str]) -> Optional[go.Figure]:
    if jobs.empty:
        return None
    cols = [c for c in jobs.columns if c.startswith("co2e_t@")]
    title = "Whole training job at the measured J/token, under several grids (an extrapolation)"
    if len(jobs) > MAX_LINES:  # one trace a job: past MAX_LINES, each machine's and model's cheapest job
        jobs = jobs.sort_values("joules_per_token").groupby(["run_label", "model"], sort=False).head(1)
        title += "; the lowest-J/token point per machine and model (the table has every one)"
    fig = go.Figure()
    for _, j in jobs.iterrows():
        fig.add_trace(
            go.Bar(
                x=[t(c.split("@", 1)[1]) for c in cols],
                y=[j[c] for c in cols],
                name=f"{t(j['label'])} · {t(j['run_label'])} [estimated from {t(method_name(j['method']))}]",
                marker=dict(color=run_colors.get(j["run_label"]), pattern=pattern("estimated")),
                hovertext=[f"{t(j['label'])} · {t(j['run_label'])}<br>{n(j[c], 3)} tCO2e" for c in cols],
                hovertemplate="%{x}: %{hovertext}<extra></extra>",
            )
        )
    fig.update_layout(barmode="group")
    fig.update_yaxes(type="log", title_text="tCO2e for the whole training job")
    fig.update_xaxes(title_text="grid")
    return layout(fig, title, 420)
