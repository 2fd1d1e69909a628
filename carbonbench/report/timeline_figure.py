"""A run's power over time, with its measured windows shaded.

Long runs are thinned to at most MAX_TIMELINE_POINTS samples a component by min/max
binning: each bucket of consecutive samples keeps its lowest and its highest, in time
order, so a one-sample spike or dip survives (every n-th sample would drop it). The
windows are drawn as two path shapes (alternate points in alternate colours), not one
rectangle each: a sweep of 5,000 points has 15,000 windows, and plotly redraws every
shape on every zoom.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from carbonbench.report.html import number as n
from carbonbench.report.html import plot_text as t
from carbonbench.report.plot import PALETTE, finite, layout, scatter

MAX_TIMELINE_POINTS = 3000  # per component and run: keeps the file small, the shape intact
MAX_LABELS = 40  # point names written along the top; beyond that the hover says which


def minmax_thin(samples: pd.DataFrame, max_points: int = MAX_TIMELINE_POINTS, column: str = "power_w") -> pd.DataFrame:
    """At most ``max_points`` rows of ``samples`` (in time order), keeping each bucket's min and max."""
    if len(samples) <= max_points:
        return samples
    size = math.ceil(len(samples) / max(1, (max_points - 2) // 2))
    values = pd.to_numeric(samples[column], errors="coerce").to_numpy(dtype=float)
    pad = (-len(values)) % size  # the last bucket is padded with values that never win

    def bucketed(fill: float) -> np.ndarray:
        return np.concatenate([np.where(np.isnan(values), fill, values), np.full(pad, fill)]).reshape(-1, size)

    base = np.arange(len(values) + pad, step=size)
    hi, lo = base + bucketed(-np.inf).argmax(axis=1), base + bucketed(np.inf).argmin(axis=1)
    keep = np.unique(np.concatenate([lo, hi, [0, len(values) - 1]]))
    return samples.iloc[keep[keep < len(values)]]


def timeline(run) -> Optional[go.Figure]:
    """A run's power over time with its measured windows shaded, one band per repeat."""
    tl = run.timeline
    if tl is None or tl.empty:
        return None
    t0 = float(tl["unix_s"].min())
    fig = go.Figure()
    methods = _component_methods(run.record)
    thinned = False
    for comp, g in tl.groupby("component", sort=True):
        thin = minmax_thin(g)
        thinned = thinned or len(thin) < len(g)
        method = methods.get(comp, "")
        fig.add_trace(
            go.Scatter(
                x=(thin["unix_s"] - t0).round(3).tolist(),
                y=thin["power_w"].tolist(),
                mode="lines",
                name=f"{t(comp)}" + (f" [{t(method)}]" if method else ""),
                line=dict(width=1.3, shape="hv"),
                text=[t(wd) if wd else "between windows" for wd in thin["window"]],
                hovertemplate="%{x:.2f} s: %{y:.1f} W<br>%{text}<extra>" + t(comp) + "</extra>",
            )
        )
    bands: list[list[str]] = [[], []]
    annotations, mids, mid_text = [], [], []
    for i, point in enumerate(run.record.points):
        for rep in point.repeats:
            start, dur = rep.start_unix_s, rep.duration_s
            if not (finite(start) and finite(dur)):
                continue
            x0, x1 = float(start) - t0, float(start) + float(dur) - t0
            bands[i % 2].append(f"M{x0:.3f},0L{x0:.3f},1L{x1:.3f},1L{x1:.3f},0Z")
            mids.append(round((x0 + x1) / 2, 3))
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
    shapes = [
        dict(
            type="path",
            path="".join(path),
            xref="x",
            yref="paper",
            layer="below",
            line=dict(width=0.6, color="rgba(0,0,0,0.35)"),
            fillcolor=PALETTE[k],
            opacity=0.15,
        )
        for k, path in enumerate(bands)
        if path
    ]
    if mids:
        fig.add_trace(
            scatter(
                len(mids),
                x=mids,
                y=[0] * len(mids),
                mode="markers",
                name="measured windows",
                marker=dict(symbol="line-ns-open", size=10, color="#555"),
                text=mid_text,
                hovertemplate="%{text}<extra></extra>",
            )
        )
    fig.update_layout(shapes=shapes, annotations=annotations if len(annotations) <= MAX_LABELS else [])
    fig.update_xaxes(title_text="seconds since the first sample")
    fig.update_yaxes(title_text="power (W)", rangemode="tozero")
    title = f"Power timeline: {t(run.label)} (shaded: measured windows, one band per repeat"
    title += "; thinned to each bucket's min and max)" if thinned else ")"
    return layout(fig, title, 420)


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
