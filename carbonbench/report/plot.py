"""What every report figure shares: colours, marker symbols by energy method, layout, hover text.

Every user string goes through ``plot_text`` (``t``). Energy figures carry the energy method in every
trace name or hover, and draw estimated energy differently (open markers, hatched bars), so an
estimate never looks like a measurement.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import plotly.graph_objects as go

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

# Above these, a figure is drawn for a big sweep: markers on WebGL, lines collapsed, bars pooled.
WEBGL_POINTS = 2000  # markers in one trace: SVG slows to seconds a redraw past a few thousand
MAX_LINES = 24  # lines in one subplot; past it, one marker trace per run and energy method
COMPACT_HOVER = 300  # points in one trace; past it, hover keeps the point and its two figures
MAX_BARS = 60  # bars in one chart; past it, pooled per model and workload (or the largest shown)


def scatter(count: int, **kw) -> go.Scatter:
    """A scatter trace, on WebGL where it has more than WEBGL_POINTS markers."""
    return (go.Scattergl if count > WEBGL_POINTS else go.Scatter)(**kw)


def colors(labels) -> dict[str, str]:
    return {label: PALETTE[i % len(PALETTE)] for i, label in enumerate(dict.fromkeys(labels))}


def layout(fig: go.Figure, title: str, height: int, **kw) -> go.Figure:
    fig.update_layout(
        title=dict(text=title, x=0, xanchor="left"),
        height=height,
        margin=dict(l=70, r=20, t=70, b=50),
        hoverlabel=dict(align="left"),
        legend=dict(font=dict(size=11)),
        **kw,
    )
    return fig


def workloads_of(points: pd.DataFrame) -> list[str]:
    present = set(points["workload"])
    return [w for w in WORKLOADS if w in present] + sorted(present - set(WORKLOADS))


def method_name(m: Any) -> str:
    return m if isinstance(m, str) and m else "none"


def hover(p: Any) -> str:
    """A point's hover text: what it is, where it ran, its figures with CIs and method."""
    lines = [
        f"<b>{t(p['label'])}</b>",
        t(p["run_label"]),
        f"{t(p['engine'])} · {t(p['dtype'])} · {int(p['n_repeats'] or 0)} repeat(s)",
        f"tokens/s: {n(p['tokens_per_s_mean'])} ± {n(p['tokens_per_s_ci95'], 2) or 'n/a'}",
        f"J/token: {n(p['joules_per_token_mean'])} ± {n(p['joules_per_token_ci95'], 2) or 'n/a'}"
        f" [{t(method_name(p['energy_method']))}]",
        f"gCO2e/1M tokens: {n(p['co2e_g_per_million_tokens_mean'])}",
        f"USD/1M tokens: {n(p['usd_per_million_tokens_mean'])}",
    ]
    if finite(p.get("ttft_s")):
        lines.append(f"TTFT: {n(p['ttft_s'] * 1e3)} ms · TPOT: {n(p['tpot_s'] * 1e3)} ms")
    if finite(p.get("decode_only_joules_per_token_mean")):
        lines.append(
            f"decode only (prefill out): {n(p['decode_only_joules_per_token_mean'])} J/token"
            f" [{t(method_name(p.get('decode_only_energy_method')))}],"
            f" {n(p['decode_only_tokens_per_s_mean'])} tokens/s"
        )
    return "<br>".join(lines)


def compact_hover(p: Any) -> str:
    """What a big sweep's hover keeps: the point and its J/token and tokens/s, with the method;
    the machine is the trace's name, shown beside it."""
    return (
        f"<b>{t(p['label'])}</b><br>J/token: {n(p['joules_per_token_mean'])} ± "
        f"{n(p['joules_per_token_ci95'], 2) or 'n/a'} [{t(method_name(p['energy_method']))}]"
        f"<br>tokens/s: {n(p['tokens_per_s_mean'])} ± {n(p['tokens_per_s_ci95'], 2) or 'n/a'}"
    )


def hover_texts(points: pd.DataFrame) -> list[str]:
    """``hover`` of every row, in order; ``compact_hover`` in a trace of more than COMPACT_HOVER points."""
    each = hover if len(points) <= COMPACT_HOVER else compact_hover
    return [each(p) for p in points.to_dict("records")]


def short_hovers(points: pd.DataFrame) -> list[str]:
    """A point's name: the hover of a trace whose full hover sits in another (the machine is its name)."""
    return [f"<b>{t(label)}</b>" for label in points["label"]]


def finite(x: Any) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def ok_points(points: pd.DataFrame) -> pd.DataFrame:
    return points[(points["status"] == "ok") & (points["n_repeats"].fillna(0) > 0)]


def log_ticks(values) -> dict:
    vals = sorted({float(v) for v in values if finite(v) and float(v) > 0})
    return dict(type="log", tickvals=vals, ticktext=[n(v) for v in vals])


def pattern(method: str) -> dict:
    return dict(shape="/" if "estimated" in method else ("." if "integrated" in method else ""), solidity=0.35)
