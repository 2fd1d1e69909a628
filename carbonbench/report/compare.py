"""Cross-hardware comparison: match points between two sides and say who wins, by how much.

A point's identity across machines is what was run (model, workload, batch size and
lengths), not how: engine and dtype usually differ between a CPU and a GPU, so they are
shown side by side rather than matched on. Repeats of a point from several runs on one
side are pooled. Points found on one side only, and points that failed on a side, are
listed, never dropped.

Where the two 95% confidence intervals overlap, the winner is still named but flagged:
the repeats cannot tell the sides apart there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import pandas as pd

from carbonbench.errors import UserError
from carbonbench.report.data import SIZE_KEYS, ReportData
from carbonbench.report.points import point_table


@dataclass(frozen=True)
class Metric:
    column: str  # the points table's mean column prefix
    label: str
    higher_is_better: bool
    verb: str  # how the winner is described: "faster", "less energy"...


METRICS = (
    Metric("tokens_per_s", "tokens/s", True, "faster"),
    Metric("joules_per_token", "J/token", False, "less energy"),
    Metric("co2e_g_per_million_tokens", "gCO2e/1M tok", False, "less CO2e"),
    Metric("usd_per_million_tokens", "$/1M tok", False, "cheaper"),
)
# Decode without its prefill, as optimum-benchmark and LLM-Perf report it (carbonbench.decode_phase);
# blank for other workloads. Kept apart from METRICS: they are not in every comparison.
DECODE_METRICS = (
    Metric("decode_only_tokens_per_s", "decode-only tokens/s", True, "faster"),
    Metric("decode_only_joules_per_token", "decode-only J/token", False, "less energy"),
)
MATCH_KEYS = SIZE_KEYS


def decode_metrics(matched: pd.DataFrame) -> tuple[Metric, ...]:
    """DECODE_METRICS where some matched point has them, else none."""
    column = "a_decode_only_joules_per_token"
    has = column in matched.columns and pd.to_numeric(matched[column], errors="coerce").notna().any()
    return DECODE_METRICS if has else ()


@dataclass
class Side:
    name: str  # "A", "B", or a machine's label in a report
    label: str
    points: pd.DataFrame  # data.point_table rows, pooled over the side's runs
    runs: list[str] = field(default_factory=list)
    settings: str = ""  # grid and prices, since CO2e and $ depend on them


@dataclass
class Comparison:
    a: Side
    b: Side
    matched: pd.DataFrame
    only_a: pd.DataFrame
    only_b: pd.DataFrame
    failed: pd.DataFrame  # on both sides, but not ok on at least one

    def summary(self) -> list[dict[str, Any]]:
        """Per workload: geometric-mean ratio B/A of each metric over the matched points."""
        out: list[dict[str, Any]] = []
        if self.matched.empty:  # no point on both sides: a frame without even the columns to group by
            return out
        for workload, group in self.matched.groupby("workload", sort=False):
            item: dict[str, Any] = {"workload": workload, "points": len(group)}
            for m in METRICS:
                ratios = [r for r in group[f"{m.column}_ratio"] if _finite(r) and r > 0]
                item[f"{m.column}_ratio_geomean"] = (
                    math.exp(sum(map(math.log, ratios)) / len(ratios)) if ratios else math.nan
                )
            out.append(item)
        return out


def side_from_rows(name: str, label: str, rows: pd.DataFrame) -> Side:
    """Pool a side's rows (any number of its runs) into one row per point."""
    pooled = rows.copy()
    runs = list(dict.fromkeys(pooled["run_id"].tolist()))
    pooled["run_id"] = name  # repeats of one point from several runs pool together
    pooled["run_label"] = label
    points = point_table(pooled)
    return Side(name=name, label=label, points=points, runs=runs, settings=_settings(pooled))


def _settings(rows: pd.DataFrame) -> str:
    parts = []
    for cols, fmt in (
        (("grid_g_per_kwh", "grid_source"), "{:.4g} gCO2e/kWh"),
        (("pue",), "PUE {:g}"),
        (("usd_per_kwh",), "${:g}/kWh"),
        (("usd_per_device_hour",), "${:g}/device-hour"),
    ):
        values = sorted({float(v) for v in pd.to_numeric(rows[cols[0]], errors="coerce").dropna()})
        if values:
            parts.append(" or ".join(fmt.format(v) for v in values))
    return ", ".join(parts)


def compare(a: Side, b: Side) -> Comparison:
    pa, pb = _keyed(a.points), _keyed(b.points)
    keys_a, keys_b = set(pa["_match"]), set(pb["_match"])
    rows, failed = [], []
    by_key: dict[str, list[dict]] = {}
    for rb in pb.to_dict("records"):  # plain dicts, matched by key: no frame is filtered per point
        by_key.setdefault(rb["_match"], []).append(rb)
    for ra in pa.to_dict("records"):
        for rb in by_key.get(ra["_match"], []):
            if ra["status"] == "ok" and rb["status"] == "ok" and ra["n_repeats"] and rb["n_repeats"]:
                rows.append(_pair(ra, rb))
            else:
                failed.append(
                    {
                        **{k: ra[k] for k in MATCH_KEYS},
                        "label": ra["label"],
                        "a_status": ra["status"],
                        "a_error": ra["error"],
                        "b_status": rb["status"],
                        "b_error": rb["error"],
                    }
                )
    only_a = pa[~pa["_match"].isin(keys_b)].drop(columns="_match")
    only_b = pb[~pb["_match"].isin(keys_a)].drop(columns="_match")
    matched = pd.DataFrame(rows)
    return Comparison(a, b, matched, only_a, only_b, pd.DataFrame(failed))


def _keyed(points: pd.DataFrame) -> pd.DataFrame:
    p = points.copy()
    # A string key: pandas compares it as one value, where a tuple would be an array.
    p["_match"] = ["\x1f".join(map(str, key)) for key in zip(*(p[k].tolist() for k in MATCH_KEYS))] if len(p) else []
    return p


def _pair(ra: dict, rb: dict) -> dict[str, Any]:
    row: dict[str, Any] = {k: ra[k] for k in MATCH_KEYS}
    row.update(
        label=ra["label"],
        sizes=ra["sizes"],
        a_engine=ra["engine"],
        a_dtype=ra["dtype"],
        b_engine=rb["engine"],
        b_dtype=rb["dtype"],
        a_method=ra["energy_method"],
        b_method=rb["energy_method"],
        a_repeats=ra["n_repeats"],
        b_repeats=rb["n_repeats"],
    )
    row.update(
        a_decode_only_method=ra.get("decode_only_energy_method"),
        b_decode_only_method=rb.get("decode_only_energy_method"),
    )
    for m in METRICS + DECODE_METRICS:
        a, b = _f(ra[f"{m.column}_mean"]), _f(rb[f"{m.column}_mean"])
        ca, cb = _f(ra.get(f"{m.column}_ci95")), _f(rb.get(f"{m.column}_ci95"))
        row[f"a_{m.column}"], row[f"b_{m.column}"] = a, b
        row[f"a_{m.column}_ci95"], row[f"b_{m.column}_ci95"] = ca, cb
        row[f"{m.column}_ratio"] = b / a if _finite(a) and _finite(b) and a > 0 else math.nan
        (row[f"{m.column}_winner"], row[f"{m.column}_factor"], row[f"{m.column}_overlap"]) = winner(
            a, b, ca, cb, m.higher_is_better
        )
    return row


def winner(a: float, b: float, ca: float, cb: float, higher_is_better: bool) -> tuple[str, float, bool]:
    """(who wins: 'A', 'B', 'tie' or '' when unknown; factor >= 1; whether the CIs overlap).

    Overlapping 95% intervals mean the repeats cannot tell the sides apart, whatever the
    factor: the winner is still named, and flagged, rather than hidden.
    """
    if not (_finite(a) and _finite(b)) or a <= 0 or b <= 0:
        return "", math.nan, False
    factor = max(a, b) / min(a, b)
    overlap = _finite(ca) and _finite(cb) and abs(a - b) <= ca + cb
    if a == b:
        return "tie", 1.0, True
    b_better = (b > a) if higher_is_better else (b < a)
    return ("B" if b_better else "A"), factor, bool(overlap)


def _f(x: Any) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


# ---- from paths, for `carbonbench compare` -------------------------------------------------


def side_from_data(name: str, data: ReportData, source: str) -> Side:
    machines = {r.machine for r in data.runs}
    if len(machines) > 1:
        listed = "; ".join(sorted({r.label for r in data.runs}))
        raise UserError(
            f"{source}: results from {len(machines)} machines ({listed}); give one machine per side "
            "(carbonbench report compares any number)"
        )
    return side_from_rows(name, data.runs[0].machine_label, data.rows)


def name_sides(a: Side, b: Side) -> None:
    """Prefix sides with A/B so a table's columns can be read without the header."""
    a.label, b.label = f"A: {a.label}", f"B: {b.label}"


def describe_point(row: Any) -> str:
    return (
        f"{row['label']} ({row['status']}{': ' + row['error'] if row.get('error') else ''})"
        if row.get("status") != "ok"
        else str(row["label"])
    )


def to_dict(c: Comparison) -> dict[str, Any]:
    """The comparison as plain data, for --format json (NaN as null)."""

    def records(df: pd.DataFrame, cols: Optional[Sequence[str]] = None) -> list[dict]:
        if df.empty:
            return []
        frame = df[[k for k in cols if k in df.columns]] if cols else df
        return [{k: _plain(v) for k, v in r.items()} for r in frame.to_dict("records")]

    point_cols = MATCH_KEYS + ["label", "status", "error", "engine", "dtype", "n_repeats"]
    return {
        "a": {"label": c.a.label, "runs": c.a.runs, "settings": c.a.settings},
        "b": {"label": c.b.label, "runs": c.b.runs, "settings": c.b.settings},
        "ratio": "B / A",
        "summary": [{k: _plain(v) for k, v in s.items()} for s in c.summary()],
        "matched": records(c.matched),
        "only_a": records(c.only_a, point_cols),
        "only_b": records(c.only_b, point_cols),
        "failed": records(c.failed),
    }


def _plain(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v
