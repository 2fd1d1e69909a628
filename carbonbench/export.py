"""Results as one table for other tools: CSV or Parquet, every repeat or one row per point.

``rows`` is ``carbonbench.results.load``'s tidy frame (one row per point and repeat, with
the derived carbon and cost columns); ``points`` is ``carbonbench.results.summarise`` over
it (mean, standard deviation and 95% CI half-width per point) with each run's scenario
and machine beside it. Parquet is written by pandas through pyarrow, imported only then.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional

import pandas as pd

from carbonbench.errors import UserError
from carbonbench.files import atomic_path
from carbonbench.results import load, summarise

WHATS = ("rows", "points")
FORMATS = ("csv", "parquet")
SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
RUN_COLUMNS = ["run_id", "scenario", "hostname", "device_type", "device_name", "n_devices", "quick"]


def table(paths: Iterable[str | Path], what: str = "rows", on_error: str = "raise") -> pd.DataFrame:
    if what not in WHATS:
        raise ValueError(f"what must be one of {WHATS}, not {what!r}")
    paths = list(paths)
    df = load(paths, on_error=on_error)
    if df.empty:
        raise UserError(f"{', '.join(map(str, paths))}: no result rows to export")
    if what == "rows":
        return df
    runs = df[[c for c in RUN_COLUMNS if c in df.columns]].drop_duplicates("run_id")
    return summarise(df).merge(runs, on="run_id", how="left")


def output_format(fmt: Optional[str], out: Optional[Path]) -> str:
    """The format asked for, else the one out's suffix names, else CSV; a contradiction is an error."""
    implied = SUFFIXES.get(out.suffix.lower()) if out is not None else None
    if fmt and implied and fmt != implied:
        raise UserError(f"-o {out}: the suffix says {implied} but --format is {fmt}")
    chosen = fmt or implied or "csv"
    if chosen == "parquet" and out is None:
        raise UserError("--format parquet writes a binary file: give it with -o FILE.parquet")
    return chosen


def write(df: pd.DataFrame, out: Path, fmt: str) -> None:
    """Write df to out atomically: a reader never sees half a file."""
    with atomic_path(out) as tmp:
        if fmt == "parquet":
            df.to_parquet(tmp, index=False, engine="pyarrow")
        else:
            df.to_csv(tmp, index=False)
