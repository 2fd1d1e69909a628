"""`carbonbench recommend RESULTS... --tpot-ms 50`: the cheapest measured serve setting that meets a deadline."""

from __future__ import annotations

import math
from pathlib import Path

import click

from carbonbench.cli.output import echo_json, format_option
from carbonbench.cli.table import echo_safe, format_table


@click.command()
@click.argument("results", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--tpot-ms", type=click.FloatRange(min=0, min_open=True), help="Deadline on time per output token.")
@click.option("--ttft-ms", type=click.FloatRange(min=0, min_open=True), help="Deadline on time to first token.")
@click.option("--objective", type=click.Choice(["energy", "co2e", "usd"]), default="energy", show_default=True)
@click.option(
    "--percentile",
    type=click.Choice(["p50", "p90", "p99"]),
    default="p90",
    show_default=True,
    help="Which latency percentile must meet the deadlines.",
)
@format_option()
def recommend(results, tpot_ms, ttft_ms, objective, percentile, fmt) -> None:
    """Per model, machine and load, the measured serve configuration with the lowest
    objective whose latency meets the deadlines, with its 95% CI over the repeats, and
    what it saves against the fastest configuration and the default (first measured) one.
    Only serve points are ranked (docs/serve.md)."""
    from carbonbench import results as res
    from carbonbench.errors import UserError
    from carbonbench.recommend import OBJECTIVES, load_label
    from carbonbench.recommend import recommend as best

    df = res.load(list(results))
    if not (df["workload"] == "serve").any():
        raise UserError("no serve points in these results (run a scenario with workloads.serve)")
    table = best(df, tpot_ms, ttft_ms, objective, percentile)
    if fmt == "json":
        echo_json(table.to_dict(orient="records"))
        return
    unit = OBJECTIVES[objective][1]
    deadline = ", ".join(
        f"{name} {percentile} <= {v:g} ms" for name, v in (("TPOT", tpot_ms), ("TTFT", ttft_ms)) if v is not None
    )
    echo_safe(f"lowest {objective} ({unit}) meeting {deadline or 'no deadline'}:")
    rows = []
    for _, r in table.iterrows():
        load = load_label(r)
        if r.get("best") is None or (isinstance(r.get("best"), float) and math.isnan(r["best"])):
            rows.append([r["model"], r["device_name"], load, f"none of {r['candidates']} meets it", "", "", "", "", ""])
            continue
        rows.append(
            [
                r["model"],
                r["device_name"],
                load,
                r["best"],
                f"{_n(r['objective'])} ± {_n(r['ci95'])}",
                _n(r["tpot_s"] * 1000),
                _n(r["ttft_s"] * 1000),
                _pct(r["saving_vs_fastest"]),
                _pct(r["saving_vs_default"]),
            ]
        )
    headers = ["model", "device", "load", "best", unit + " (95% CI)", "TPOT ms", "TTFT ms", "vs fastest", "vs default"]
    echo_safe(format_table(headers, rows))
    echo_safe(
        "J/request: measured window energy per output token x mean output tokens per request; "
        "savings are 1 - best / other, on the same load."
    )


def _n(x) -> str:
    return "" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.4g}"


def _pct(x) -> str:
    return "" if x is None or not math.isfinite(x) else f"{x * 100:.0f}%"
