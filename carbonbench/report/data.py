"""Everything a report shows, read once: the runs, their rows, one row per point, timelines.

Points are pooled over their ``ok`` repeats. Means with 95% confidence intervals come
from ``carbonbench.stats``; energy by component and the idle/active split are pooled as
sum(energy) / sum(tokens), so a longer window weighs more, as it does in J/token itself.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

import pandas as pd

from carbonbench import records, stats
from carbonbench.carbon import derive
from carbonbench.errors import ResultsError, UserError
from carbonbench.meters.base import weakest_method
from carbonbench.reading import MAX_TIMELINE, UnreadableFile, printable, read_text
from carbonbench.records import POINT_FIELDS
from carbonbench.results import COLUMNS, result_files, run_rows
from carbonbench.run_record import RunRecord
from carbonbench.runfile import read_run

POINT_KEYS = list(records.POINT_KEYS)
SIZE_KEYS = list(POINT_FIELDS)
# Per-repeat figures whose mean and 95% CI the points table shows, beyond the stored summary's.
CI_COLUMNS = ("co2e_g_per_million_tokens", "usd_per_million_tokens", "kwh_per_million_tokens")
MEAN_COLUMNS = ("ttft_s", "tpot_s", "latency_p50_s", "latency_p99_s", "mfu", "hfu", "duration_s")
# Each point's stored summary (over ok repeats), and its repeats and weakest method.
SUMMARY_COLUMNS = (
    "n_repeats",
    "joules_per_token_mean",
    "joules_per_token_ci95",
    "tokens_per_s_mean",
    "tokens_per_s_ci95",
    "energy_method",
)


@dataclass
class Run:
    """One result file: its record, where it came from and its power timeline."""

    path: Path
    record: RunRecord
    label: str = ""  # unique within a report
    machine_label: str = ""  # device and host only: runs on one machine share it
    timeline: Optional[pd.DataFrame] = None
    timeline_note: str = ""

    @property
    def run_id(self) -> str:
        return self.record.run_id

    @property
    def machine(self) -> tuple:
        """What makes results comparable hardware: device kind, name and count."""
        d = self.record.device
        return (d.type, d.name, d.count)


@dataclass
class ReportData:
    runs: list[Run]
    rows: pd.DataFrame  # one row per point and repeat, with carbon and cost derived
    points: pd.DataFrame  # one row per point (see point_table)
    skipped: list[str] = field(default_factory=list)

    def run(self, run_id: str) -> Run:
        return next(r for r in self.runs if r.run_id == run_id)


def load(paths: Iterable[str | Path], *, on_error: str = "raise") -> ReportData:
    """Read result files and directories; a run given twice is kept once."""
    runs, frames, skipped, seen = [], [], [], set()
    for path in result_files(paths):
        try:
            record = read_run(path)
        except ResultsError as exc:
            if on_error != "skip":
                raise
            warnings.warn(f"skipped {printable(exc)}", stacklevel=2)  # the file's name and keys, shown safely
            skipped.append(printable(exc))
            continue
        if record.run_id in seen:
            continue
        seen.add(record.run_id)
        run = Run(path=path, record=record)
        run.timeline, run.timeline_note = _timeline(path, record)
        runs.append(run)
        frame = pd.DataFrame(run_rows(record, source=path), columns=COLUMNS)
        # A point that failed after some repeats keeps them as ok rows: its own status says it failed.
        status = {tuple(getattr(p.point, k) for k in POINT_FIELDS): p.status for p in record.points}
        keys = [tuple(r) for r in frame[list(POINT_FIELDS)].itertuples(index=False)]
        frame["point_status"] = [status.get(k) for k in keys]
        # Each point's summary as the run stored it (computed once, carbonbench.records).
        summaries = {tuple(getattr(p.point, k) for k in POINT_FIELDS): p.summary or {} for p in record.points}
        for figure in ("joules_per_token", "tokens_per_s"):
            for stat in ("mean", "std", "ci95"):
                frame[f"{figure}_{stat}"] = [_stat(summaries.get(k), figure, stat) for k in keys]
        frames.append(frame)
    if not runs:
        raise UserError("no result files to report on" + (f" ({len(skipped)} skipped as damaged)" if skipped else ""))
    _label_runs(runs)
    rows = derive(pd.concat(frames, ignore_index=True))
    rows["engine"] = rows["engine"].map(engine_name)
    labels = {r.run_id: r.label for r in runs}
    rows["run_label"] = rows["run_id"].map(labels)
    return ReportData(runs=runs, rows=rows, points=point_table(rows), skipped=skipped)


def engine_name(engine: Any) -> Any:
    """A scenario's engine as a name: newer scenarios record ``{name: ..., options}``."""
    if isinstance(engine, dict):
        return engine.get("name") or "native"
    return engine


def _label_runs(runs: list[Run]) -> None:
    """Short names for legends: the device (and host); the run id only where needed."""
    for run in runs:
        d = run.record.device
        host = run.record.hostname
        count = d.count or 1
        name = str(d.name or d.type or "unknown device")
        run.label = run.machine_label = (f"{count} x " if count > 1 else "") + name + (f" ({host})" if host else "")
    # Two runs on one machine: tell them apart by scenario, then by start time, then id.
    for extra in (lambda r: r.record.scenario_name, lambda r: r.record.started_utc, lambda r: r.run_id):
        counts: dict[str, int] = {}
        for run in runs:
            counts[run.label] = counts.get(run.label, 0) + 1
        for run in runs:
            if counts[run.label] > 1 and extra(run):
                run.label = f"{run.label} · {extra(run)}"


def _timeline(path: Path, record: RunRecord) -> tuple[Optional[pd.DataFrame], str]:
    name = record.timeline_file
    if not name:
        return None, "this run recorded no power timeline"
    # The file name comes from the result file; only a name beside it is read.
    tl_path = path.parent / Path(str(name)).name
    shown = printable(tl_path.name)
    try:
        text = read_text(tl_path, MAX_TIMELINE)  # a pipe or /dev/zero here would hang the report
        # Appended after every window: a kill mid-append leaves a partial last line.
        tl = pd.read_csv(io.StringIO(text[: text.rfind("\n") + 1]))
    except UnreadableFile as exc:
        if exc.missing:
            return None, f"timeline file {shown} is missing beside the result file"
        return None, f"timeline file {shown} could not be read: {exc.phrase('timeline file')}"
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        return None, f"timeline file {shown} could not be read ({type(exc).__name__})"
    missing = {"unix_s", "component", "power_w"} - set(tl.columns)
    if missing:
        return None, f"timeline file lacks columns {', '.join(sorted(missing))}"
    tl["unix_s"] = pd.to_numeric(tl["unix_s"], errors="coerce")
    tl["power_w"] = pd.to_numeric(tl["power_w"], errors="coerce")
    tl = tl.dropna(subset=["unix_s"])
    if "window" not in tl.columns:
        tl["window"] = ""
    tl["window"] = tl["window"].fillna("").astype(str)
    return tl.sort_values("unix_s", kind="stable"), ""


def sizes(row: Any) -> str:
    """The lengths of a point in the run's key style: p128, p64+n16, s128."""
    w = row["workload"]
    if w == "prefill":
        return f"p{_int(row['prompt_tokens'])}"
    if w == "decode":
        return f"p{_int(row['prompt_tokens'])}+n{_int(row['new_tokens'])}"
    if w == "serve":  # the load; lengths are the stream's (docs/serve.md)
        rate = _num(row.get("rate_rps", 0))
        return f"r{rate:g}" if rate > 0 else f"c{_int(row.get('concurrency', 0))}"
    if w == "train" or _num(row["seq_len"]) > 0:
        return f"s{_int(row['seq_len'])}"
    return ""  # a measure_session window without a sequence length (carbonbench.api.session)


def point_label(row: Any) -> str:
    return f"{row['model']} {row['workload']} b{_int(row['batch_size'])} {sizes(row)}"


def length_of(row: Any) -> float:
    """The sequence length a point varies: prompt for prefill/decode, seq_len for train."""
    return _num(row["seq_len"] if row["workload"] == "train" else row["prompt_tokens"])


def _int(x: Any) -> str:
    try:
        return str(int(x))
    except (TypeError, ValueError):
        return "?"


def _num(x: Any) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


RUN_COLUMNS = (
    "run_label",
    "device_type",
    "device_name",
    "n_devices",
    "hostname",
    "scenario",
    "params",
    "quick",
    "grid_g_per_kwh",
    "grid_source",
    "pue",
    "usd_per_kwh",
    "usd_per_device_hour",
    "peak_memory_bytes",
    "weights",
)
SPLIT_COLUMNS = (
    "gpu_j_per_token",
    "gpu_method",
    "cpu_j_per_token",
    "cpu_method",
    "dram_j_per_token",
    "dram_method",
    "active_j_per_token",
    "idle_j_per_token",
    "power_w",
    "tokens_total",
    "energy_j_total",
    "duration_s_total",
)
CODECARBON_COLUMNS = (
    "codecarbon_j_per_token",
    "codecarbon_power_w",
    "codecarbon_repeats",
    "codecarbon_gpu_j_per_token",
    "codecarbon_cpu_j_per_token",
    "codecarbon_ram_j_per_token",
)
POINT_TABLE_COLUMNS = (
    POINT_KEYS
    + list(RUN_COLUMNS)
    + ["status", "error", "flags", "energy_missing"]
    + list(SUMMARY_COLUMNS)
    + [f"{c}_{s}" for c in CI_COLUMNS for s in ("mean", "ci95")]
    + list(MEAN_COLUMNS)
    + list(SPLIT_COLUMNS)
    + list(CODECARBON_COLUMNS)
    + ["label", "sizes", "length"]
)


def point_table(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per point: keys, status, means with CIs, energy split, codecarbon's figures.

    The columns are POINT_TABLE_COLUMNS, also when there is no point at all.
    """
    if rows.empty:
        return pd.DataFrame(columns=POINT_TABLE_COLUMNS)
    keyed = rows.copy()
    for k in POINT_KEYS:
        keyed[k] = keyed[k].where(keyed[k].notna(), "")  # groupby keeps blank keys this way
    out = []
    for key, group in keyed.groupby(POINT_KEYS, sort=False, dropna=False):
        first = group.iloc[0]
        ok = group[group["status"] == "ok"]
        errors = [e for e in group["error"].tolist() if isinstance(e, str) and e]
        statuses = [
            s
            for col in ("point_status", "status")
            if col in group.columns
            for s in group[col].tolist()
            if isinstance(s, str) and s != "ok"
        ]
        status = statuses[0] if statuses else ("error" if errors or ok.empty else "ok")
        row: dict[str, Any] = dict(zip(POINT_KEYS, key))
        row.update({c: first[c] for c in RUN_COLUMNS})
        row.update(
            status=status,
            error=errors[0] if errors else "",
            quick=bool(first["quick"]),
            flags=",".join(sorted({f for fl in ok["flags"].dropna() for f in str(fl).split(",") if f})),
            energy_missing=",".join(sorted({c for m in ok["energy_missing"].dropna() for c in str(m).split(",") if c}))
            or None,
        )
        row.update(
            dict.fromkeys(SUMMARY_COLUMNS, math.nan),
            n_repeats=len(ok),
            energy_method=weakest_method(ok["energy_method"].dropna()),
        )
        if len(ok):
            row.update(
                {col: first[col] for col in SUMMARY_COLUMNS if col in first.index and col.endswith(("_mean", "_ci95"))}
            )
        for col in CI_COLUMNS:
            mean, _, half = stats.ci95(pd.to_numeric(ok[col], errors="coerce").tolist())
            row[f"{col}_mean"], row[f"{col}_ci95"] = mean, half
        for col in MEAN_COLUMNS:
            values = pd.to_numeric(ok[col], errors="coerce").dropna()
            row[col] = float(values.mean()) if len(values) else math.nan
        row.update(_energy_split(ok))
        row.update(_codecarbon(ok))
        out.append(row)
    points = pd.DataFrame(out, columns=POINT_TABLE_COLUMNS)
    points["label"] = [point_label(r) for _, r in points.iterrows()]
    points["sizes"] = [sizes(r) for _, r in points.iterrows()]
    points["length"] = [length_of(r) for _, r in points.iterrows()]
    return points


def _stat(summary: Optional[dict], figure: str, stat: str) -> float:
    value = ((summary or {}).get(figure) or {}).get(stat)
    return float(value) if isinstance(value, (int, float)) else math.nan


def _sum(series: pd.Series) -> float:
    values = pd.to_numeric(series, errors="coerce").dropna()
    return float(values.sum()) if len(values) else math.nan


def _energy_split(ok: pd.DataFrame) -> dict[str, Any]:
    """J/token by component and idle/active, pooled; each with its method."""
    tokens = _sum(ok["tokens"])

    def per(e: float) -> float:
        return e / tokens if tokens and tokens > 0 and math.isfinite(e) else math.nan

    out: dict[str, Any] = {}
    for kind in ("gpu", "cpu", "dram"):
        out[f"{kind}_j_per_token"] = per(_sum(ok[f"energy_{kind}_j"]))
        methods = [m for m in ok[f"energy_{kind}_method"].dropna().unique() if m]
        out[f"{kind}_method"] = "+".join(sorted(methods)) if methods else None
    energy, active = _sum(ok["energy_j"]), _sum(ok["active_energy_j"])
    out["active_j_per_token"] = per(active)
    out["idle_j_per_token"] = per(energy - active) if math.isfinite(active) else math.nan
    duration = _sum(ok["duration_s"])
    out["power_w"] = energy / duration if duration and duration > 0 else math.nan
    out["tokens_total"], out["energy_j_total"], out["duration_s_total"] = tokens, energy, duration
    return out


def _codecarbon(ok: pd.DataFrame) -> dict[str, Any]:
    """codecarbon's energy over the same windows (one task per repeat), per token and in watts.

    Pooled over the repeats codecarbon reported, against those repeats' tokens and time.
    """
    cc = pd.to_numeric(ok["codecarbon_energy_j"], errors="coerce")
    have = ok[cc.notna()]
    tokens, duration = _sum(have["tokens"]), _sum(have["duration_s"])
    out: dict[str, Any] = {
        "codecarbon_j_per_token": math.nan,
        "codecarbon_power_w": math.nan,
        "codecarbon_repeats": len(have),
    }
    for kind in ("gpu", "cpu", "ram"):
        out[f"codecarbon_{kind}_j_per_token"] = math.nan
    if have.empty or not (tokens > 0):
        return out
    out["codecarbon_j_per_token"] = float(cc.sum()) / tokens
    out["codecarbon_power_w"] = float(cc.sum()) / duration if duration > 0 else math.nan
    for kind in ("gpu", "cpu", "ram"):
        out[f"codecarbon_{kind}_j_per_token"] = _sum(have[f"codecarbon_{kind}_energy_j"]) / tokens
    return out


def empty_reason(points: pd.DataFrame) -> str:
    """Why a chart of energy has nothing to draw: no point succeeded, or (every meter a null
    meter) points ran but none has an energy figure, which must not read as a failure."""
    if (points["status"] == "ok").any():
        return (
            "Points were measured, but none has an energy figure (energy method: none, no meter for any "
            "component): their timings are in the tables."
        )
    return "No point was measured successfully."


def machines(data: ReportData) -> list[tuple[tuple, list[Run]]]:
    """Runs grouped by hardware, in the order first given."""
    groups: dict[tuple, list[Run]] = {}
    for run in data.runs:
        groups.setdefault(run.machine, []).append(run)
    return list(groups.items())
