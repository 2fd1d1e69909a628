"""`carbonbench compare A B`: the report's cross-hardware comparison, in the terminal."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import click

from carbonbench.cli.output import echo_json, format_option
from carbonbench.cli.table import echo_safe, format_table
from carbonbench.errors import UserError


@click.command()
@click.argument("a", type=click.Path(exists=True, path_type=Path))
@click.argument("b", type=click.Path(exists=True, path_type=Path))
@click.option("--skip-damaged", is_flag=True, help="Skip unreadable result files with a warning instead of failing.")
@format_option("Output format; ratios are B / A.")
def compare(a: Path, b: Path, skip_damaged: bool, fmt: str) -> None:
    """Match the points of two machines' results and show who wins where, by how much.

    A and B are result files or directories, one machine each. Points are matched on
    model, workload, batch size and lengths; points measured on one side only, and
    points that failed, are listed after the table.
    """
    from carbonbench.report import compare as cmp

    (data_a, skipped_a), (data_b, skipped_b) = _load(a, skip_damaged), _load(b, skip_damaged)
    for message in skipped_a + skipped_b:
        echo_safe(f"warning: {message}", err=True)
    side_a = cmp.side_from_data("A", data_a, str(a))
    side_b = cmp.side_from_data("B", data_b, str(b))
    cmp.name_sides(side_a, side_b)
    result = cmp.compare(side_a, side_b)
    if fmt == "json":
        echo_json(cmp.to_dict(result))
    else:
        echo_safe(render_text(result))  # labels, run ids and errors come from the files


def _load(path: Path, skip_damaged: bool):
    """One side's results, and the warnings for the files skipped as damaged."""
    from carbonbench.report.data import load

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            data = load([path], on_error="skip" if skip_damaged else "raise", timelines=False)
        except UserError:
            if not caught:
                raise
            # Every file of the side was skipped: one line says so, and why the first was.
            raise UserError(
                f"{path}: no result files left to compare after skipping the damaged ones "
                f"({caught[0].message}{f', and {len(caught) - 1} more' if len(caught) > 1 else ''})"
            ) from None
    return data, [str(w.message) for w in caught]


def _n(x, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return ""
    if x != 0 and abs(x) >= 10**digits:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


def _win(row, column: str) -> str:
    who, factor = row[f"{column}_winner"], row[f"{column}_factor"]
    if who in ("tie", ""):
        return who
    return f"{who} x{_n(factor, 3)}" + (" (CIs overlap)" if row[f"{column}_overlap"] else "")


def render_text(c) -> str:
    from carbonbench.report.compare import METRICS
    from carbonbench.report.compare import decode_metrics as cmp_decode_metrics

    out = [
        c.a.label,
        f"   runs: {', '.join(c.a.runs)}",
        f"   priced at: {c.a.settings}",
        c.b.label,
        f"   runs: {', '.join(c.b.runs)}",
        f"   priced at: {c.b.settings}",
        "",
    ]
    if c.matched.empty:
        out.append("No point was measured on both sides.")
    else:
        perf, money = [], []
        for _, r in c.matched.iterrows():
            what = [r["model"], r["workload"], int(r["batch_size"]), r["sizes"]]
            perf.append(
                what
                + [f"{r['a_dtype']}/{r['b_dtype']}"]
                + [
                    v
                    for m in METRICS[:2]
                    for v in (
                        _n(r[f"a_{m.column}"]),
                        _n(r[f"b_{m.column}"]),
                        _n(r[f"{m.column}_ratio"], 3),
                        _win(r, m.column),
                    )
                ]
                + [f"{r['a_method']}/{r['b_method']}"]
            )
            money.append(
                what
                + [
                    v
                    for m in METRICS[2:]
                    for v in (
                        _n(r[f"a_{m.column}"]),
                        _n(r[f"b_{m.column}"]),
                        _n(r[f"{m.column}_ratio"], 3),
                        _win(r, m.column),
                    )
                ]
            )
        where = ["model", "workload", "batch", "sizes"]
        out.append(
            f"Matched points: {len(c.matched)} (ratio = B/A; winner x factor; 'CIs overlap': the 95% intervals cannot tell A from B)"
        )
        out.append(
            format_table(
                where
                + [
                    "dtype A/B",
                    "A tok/s",
                    "B tok/s",
                    "B/A",
                    "faster",
                    "A J/tok",
                    "B J/tok",
                    "B/A",
                    "less energy",
                    "energy method A/B",
                ],
                perf,
            )
        )
        out.append("")
        out.append(
            format_table(
                where + ["A gCO2e/1M", "B gCO2e/1M", "B/A", "less CO2e", "A $/1M", "B $/1M", "B/A", "cheaper"], money
            )
        )
        out.append("gCO2e and $ use each side's own grid, PUE and prices (above).")
        decode = cmp_decode_metrics(c.matched)
        if decode:
            dec = c.matched[c.matched["a_decode_only_joules_per_token"].notna()]
            out.append("")
            out.append(
                "Decode only, prefill left out (tokens after the first; energy attributed by time share, "
                "docs/results.md), as optimum-benchmark and LLM-Perf report decode:"
            )
            out.append(
                format_table(
                    where + [h for m in decode for h in (f"A {m.label}", f"B {m.label}", "B/A", m.verb)],
                    [
                        [r["model"], r["workload"], int(r["batch_size"]), r["sizes"]]
                        + [
                            v
                            for m in decode
                            for v in (
                                _n(r[f"a_{m.column}"]),
                                _n(r[f"b_{m.column}"]),
                                _n(r[f"{m.column}_ratio"], 3),
                                _win(r, m.column),
                            )
                        ]
                        for _, r in dec.iterrows()
                    ],
                )
            )
        out.append("")
        for s in c.summary():
            tps, jpt = s["tokens_per_s_ratio_geomean"], s["joules_per_token_ratio_geomean"]
            out.append(
                f"{s['workload']}: B/A tokens/s x{_n(tps, 3)}, J/token x{_n(jpt, 3)} "
                f"(geometric mean over {s['points']} matched point(s))"
            )
    for title, frame in ((f"Only in {c.a.label}", c.only_a), (f"Only in {c.b.label}", c.only_b)):
        if not frame.empty:
            out.append("")
            out.append(f"{title}: {len(frame)} point(s)")
            out += [f"  - {_point(r)}" for _, r in frame.iterrows()]
    if not c.failed.empty:
        out.append("")
        out.append(f"On both sides but failed on one: {len(c.failed)} point(s)")
        for _, r in c.failed.iterrows():
            out.append(
                f"  - {r['label']}: A {r['a_status']}{_err(r['a_error'])}; B {r['b_status']}{_err(r['b_error'])}"
            )
    return "\n".join(out)


def _point(r) -> str:
    if r["status"] == "ok":
        return str(r["label"])
    return f"{r['label']} ({r['status']}{_err(r['error'])})"


def _err(e) -> str:
    return f": {e}" if isinstance(e, str) and e else ""
