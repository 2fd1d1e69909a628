"""Everything a report shows, read once: the runs, their rows, one row per point, timelines.

The points table (carbonbench.report.points) is built on first use, once: `compare` reads
rows only, and pools each side's rows into its own table.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

import pandas as pd

from carbonbench.carbon import derive
from carbonbench.errors import ResultsError, UserError
from carbonbench.reading import MAX_TIMELINE, UnreadableFile, printable, read_text
from carbonbench.records import POINT_FIELDS
from carbonbench.report.points import point_table
from carbonbench.results import COLUMNS, result_files, run_rows
from carbonbench.run_record import RunRecord
from carbonbench.runfile import read_run

SIZE_KEYS = list(POINT_FIELDS)


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
    skipped: list[str] = field(default_factory=list)
    _points: Optional[pd.DataFrame] = field(default=None, repr=False)

    @property
    def points(self) -> pd.DataFrame:
        """One row per point (see point_table), built the first time it is asked for."""
        if self._points is None:
            self._points = point_table(self.rows)
        return self._points

    def run(self, run_id: str) -> Run:
        return next(r for r in self.runs if r.run_id == run_id)


def load(paths: Iterable[str | Path], *, on_error: str = "raise", timelines: bool = True) -> ReportData:
    """Read result files and directories; a run given twice is kept once. ``timelines=False``
    leaves the power timelines unread (`compare` draws none: at 5,000 points they are 50 MB a run)."""
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
        if timelines:
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
    return ReportData(runs=runs, rows=rows, skipped=skipped)


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


def _stat(summary: Optional[dict], figure: str, stat: str) -> float:
    value = ((summary or {}).get(figure) or {}).get(stat)
    return float(value) if isinstance(value, (int, float)) else math.nan


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
