"""The cross-hardware comparison section: each machine against the first.

Text is escaped with ``esc`` where it is written; numbers go through ``number``. A section with
nothing to show says why, rather than vanishing, so a reader can tell "not measured" from "forgotten".
"""

from __future__ import annotations

from typing import Any

from carbonbench.report import compare as cmp
from carbonbench.report import comparison_figure
from carbonbench.report.data import ReportData, machines
from carbonbench.report.html import Cell, Figures, esc, method_tag, note, num_cell, number, section, table


def comparison(data: ReportData, figures: Figures, colors: dict[str, str]) -> str:
    groups = machines(data)
    if len(groups) < 2:
        return section(
            "comparison",
            "Cross-hardware comparison",
            note(
                "All results come from one machine, so there is nothing to compare. Give result files from two machines "
                "(say an A100 run and an H100 run of the same scenario) to see who wins where."
            ),
        )
    base_runs = groups[0][1]
    a = cmp.side_from_rows(
        "A", base_runs[0].machine_label, data.rows[data.rows["run_id"].isin([r.run_id for r in base_runs])]
    )
    parts = [
        note(
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
        fig = comparison_figure.comparison(
            c, colors.get(base_runs[0].label, "#1f77b4"), colors.get(runs[0].label, "#d62728")
        )
        if fig is not None:
            parts.append(figures.embed(fig))
            parts.append(_compare_summary(c))
            parts.append(_compare_table(c))
        else:
            parts.append(note("No point was measured on both machines."))
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
    metrics = cmp.METRICS + cmp.decode_metrics(c.matched)
    rows = []
    for r in c.matched.to_dict("records"):
        row = [r["label"], f"{r['a_engine']}/{r['a_dtype']}", f"{r['b_engine']}/{r['b_dtype']}"]
        for m in metrics:
            row += [
                num_cell(r[f"a_{m.column}"], half=r[f"a_{m.column}_ci95"]),
                num_cell(r[f"b_{m.column}"], half=r[f"b_{m.column}_ci95"]),
                num_cell(r[f"{m.column}_ratio"], 3),
                _win_cell(r, m.column),
            ]
        row.append(Cell(method_tag(r["a_method"]) + " / " + method_tag(r["b_method"]), raw_html=True))
        rows.append(row)
    heads = ["point", "A engine/dtype", "B engine/dtype"]
    for m in metrics:
        heads += [f"A {m.label}", f"B {m.label}", "B/A", m.verb]
    caption = (
        "Decode-only columns leave each generation's prefill out (tokens after the first, energy attributed by "
        "time share: docs/results.md)."
        if len(metrics) > len(cmp.METRICS)
        else ""
    )
    return table(heads + ["energy method A / B"], rows, caption=caption)


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
