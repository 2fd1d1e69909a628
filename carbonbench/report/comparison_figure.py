"""Cross-hardware ratios, B / A, per matched point."""

from __future__ import annotations

import math
from typing import Optional

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from carbonbench.report.html import number as n
from carbonbench.report.html import plot_text as t
from carbonbench.report.plot import (
    MAX_BARS,
    finite,
    layout,
    method_name,
)


def comparison(c, a_color: str, b_color: str) -> Optional[go.Figure]:
    """B/A ratios per matched point: who wins where, and by how much."""
    m = c.matched
    if m.empty:
        return None
    shown = len(m)
    if shown > MAX_BARS:  # one bar a point; the table below has every point
        spread = m["joules_per_token_ratio"].map(lambda r: abs(math.log(r)) if finite(r) and r > 0 else -1.0)
        m = m.loc[spread.sort_values(ascending=False, kind="stable").index[:MAX_BARS]]
    fig = make_subplots(
        rows=1,
        cols=2,
        shared_yaxes=True,
        horizontal_spacing=0.09,
        subplot_titles=("tokens/s, B / A (right of 1: B faster)", "J/token, B / A (left of 1: B uses less energy)"),
    )
    # Energy methods in the labels: a ratio of an estimate to a counter reading is no better than the estimate.
    labels = [
        f"{t(x)} [{t(method_name(a))}/{t(method_name(b))}]" for x, a, b in zip(m["label"], m["a_method"], m["b_method"])
    ]
    for col, (metric, _higher) in enumerate((("tokens_per_s", True), ("joules_per_token", False)), start=1):
        ratios = m[f"{metric}_ratio"].tolist()
        winners = m[f"{metric}_winner"].tolist()
        overlap = m[f"{metric}_overlap"].tolist()
        # Bars grow from 1 (no difference) towards the ratio, so a bigger win is a longer bar.
        fig.add_trace(
            go.Bar(
                y=labels,
                x=[r - 1 if finite(r) else None for r in ratios],
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
    if shown > len(m):
        title += f"; the {len(m)} of {shown} matched points whose J/token differs most (the table has all)"
    return layout(fig, title, 140 + 30 * len(m))
