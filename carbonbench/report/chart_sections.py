"""The chart sections: cost per token, trade-off, breakdown, power timelines, carbon.

Text is escaped with ``esc`` where it is written; numbers go through ``number``. A section with
nothing to show says why, rather than vanishing, so a reader can tell "not measured" from "forgotten".
"""

from __future__ import annotations

from carbonbench.carbon import DEFAULT_PLACES, where_to_run
from carbonbench.report import (
    breakdown_figure,
    carbon_figures,
    cost_figures,
    timeline_figure,
    tradeoff_figures,
)
from carbonbench.report.data import ReportData, empty_reason
from carbonbench.report.html import Cell, Figures, esc, method_tag, note, num_cell, number, section, table
from carbonbench.report.points import POINT_KEYS

MAX_GRID_ROWS = 20  # points in the grid chart, each a group of bars
MAX_TABLE_POINTS = 1000  # rows in the grid table


def cost(data: ReportData, figures: Figures, colors: dict[str, str]) -> str:
    parts = []
    for builder, missing in (
        (cost_figures.cost_vs_batch, empty_reason(data.points)),
        (
            cost_figures.cost_vs_length,
            "Each line was measured at one sequence length only; list several prompt_tokens or "
            "seq_len values in the scenario to see cost against length.",
        ),
        (cost_figures.by_model_size, "One model size only; list several models in the scenario to compare sizes."),
    ):
        fig = builder(data.points, colors)
        parts.append(figures.embed(fig) if fig is not None else note(missing))
    intro = (
        "Joules per token, and the gCO2e and dollars they become under each run's grid, PUE and prices. "
        "Open markers and dotted lines are estimated energy. Decode counts generated tokens only."
    )
    return section("cost", "Cost per token", "".join(parts), esc(intro))


def tradeoff(data: ReportData, figures: Figures, colors: dict[str, str]) -> str:
    parts = []
    fig = tradeoff_figures.tradeoff(data.points, colors)
    parts.append(figures.embed(fig) if fig is not None else note(empty_reason(data.points)))
    fig = tradeoff_figures.latency(data.points, colors)
    parts.append(figures.embed(fig) if fig is not None else note("No decode points, so no latency figures."))
    return section(
        "tradeoff",
        "Trade-off: throughput, energy and latency",
        "".join(parts),
        esc(
            "Up and to the left is worse; down and to the right is better. The Pareto front is drawn per "
            "model and workload across every machine."
        ),
    )


def breakdown(data: ReportData, figures: Figures) -> str:
    fig = breakdown_figure.breakdown(data.points, data.runs)
    body = figures.embed(fig) if fig is not None else note(empty_reason(data.points))
    intro = (
        "Where the energy goes, as shares of each point's J/token. 'Idle baseline' is the machine's idle "
        "power (measured before the sweep) times the window; 'above idle' is the rest."
    )
    return section("breakdown", "Energy breakdown", body, esc(intro))


def timelines(data: ReportData, figures: Figures) -> str:
    parts = []
    for run in data.runs:
        fig = timeline_figure.timeline(run)
        parts.append(
            figures.embed(fig) if fig is not None else note(f"{run.label}: no power timeline ({run.timeline_note}).")
        )
    return section(
        "timeline",
        "Power timeline",
        "".join(parts),
        esc("Power as sampled during each run; shaded bands are the measured windows (point boundaries)."),
    )


def carbon(data: ReportData, figures: Figures, colors: dict[str, str]) -> str:
    ok = data.rows[data.rows["status"] == "ok"]
    if ok.empty:
        return section("carbon", "Carbon under other grids", note("No point was measured successfully."))
    table_df = where_to_run(ok, places=DEFAULT_PLACES)
    table_df["place_label"] = [f"{p} ({number(g, 3)})" for p, g in zip(table_df["place"], table_df["grid_g_per_kwh"])]
    info = data.points[POINT_KEYS + ["label", "run_label", "energy_method", "joules_per_token_mean"]].rename(
        columns={"energy_method": "method", "joules_per_token_mean": "jpt"}
    )
    for k in POINT_KEYS:
        table_df[k] = table_df[k].where(table_df[k].notna(), "")
        info[k] = info[k].astype(table_df[k].dtype, errors="ignore")
    merged = table_df.merge(info, on=POINT_KEYS, how="left")
    # The chart keeps each machine's best point per model and workload, to stay readable.
    by = ["run_label", "model", "workload"]
    best = info.dropna(subset=["jpt"]).sort_values("jpt").groupby(by).head(1)
    if len(best) > MAX_GRID_ROWS:  # a sweep of many models: the best per machine and workload only
        by = ["run_label", "workload"]
        best = best.groupby(by).head(1)
    shown = merged[merged["label"].isin(best["label"]) & merged["run_label"].isin(best["run_label"])]
    shown = shown.merge(best[["run_label", "label"]], on=["run_label", "label"])
    fig = carbon_figures.carbon_by_grid(shown)  # None when no point has energy (every meter a null meter)
    parts = [figures.embed(fig) if fig is not None else note(empty_reason(data.points))]
    places = list(dict.fromkeys(merged["place_label"]))
    listed, every = merged, merged[["run_label", "label"]].drop_duplicates().shape[0]
    if every > MAX_TABLE_POINTS:  # a row a point and a column a grid: megabytes for a big sweep
        keep = info.dropna(subset=["jpt"]).sort_values("jpt").groupby(["run_label", "model", "workload"]).head(1)
        listed = merged.merge(keep[["run_label", "label"]], on=["run_label", "label"])
    rows = []
    for (run, label), g in listed.groupby(["run_label", "label"], sort=False):
        values = dict(zip(g["place_label"], g["co2e_g_per_million_tokens"]))
        rows.append(
            [run, label, Cell(method_tag(g["method"].iloc[0]), g["method"].iloc[0], raw_html=True)]
            + [num_cell(values.get(p)) for p in places]
        )
    parts.append(
        table(
            ["machine", "point", "energy method"] + [f"{p} gCO2e/1M tok" for p in places],
            rows,
            caption="gCO2e per 1M tokens under each grid (gCO2e/kWh in brackets; codecarbon's data), "
            "each run's own PUE"
            + (
                f"; of {every} points, each machine's lowest-J/token point per model and workload (gCO2e "
                "scales with J/token; the points table has every point's under its own grid)"
                if listed is not merged
                else ""
            ),
        )
    )
    intro = (
        "Energy was measured once; carbon is derived. The chart shows each machine's lowest-J/token point per "
        + ("model and workload" if "model" in by else "workload (there are many models)")
        + ("; the table has every point." if listed is merged else ".")
    )
    return section("carbon", "Carbon under other grids", "".join(parts), esc(intro))
