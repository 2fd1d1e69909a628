"""A run's point journal: one finished point per line, appended as each point ends.

``<run-id>.points.jsonl`` sits beside the run file while the run goes on, so that a
point costs one synced append instead of a rewrite of every point before it (a sweep of
n points then writes O(n), not O(n^2)). Readers merge it into the run file
(carbonbench.runfile.read_run); the run removes it once a whole write holds every point.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable

from carbonbench.errors import ResultsError
from carbonbench.reading import MAX_RESULT, UnreadableFile, read_bytes
from carbonbench.records import PointRecord

JOURNAL_SUFFIX = ".points.jsonl"


def jsonable(value: Any) -> Any:
    """value with non-finite floats as None (JSON has no NaN), keys as strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN; absent is honest
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def journal_path(run_path: Path) -> Path:
    return Path(run_path).with_name(Path(run_path).stem + JOURNAL_SUFFIX)


def journal_line(point: PointRecord) -> bytes:
    return (json.dumps(jsonable(point.to_dict()), separators=(",", ":")) + "\n").encode("utf-8")


def read_journal(path: Path) -> list[PointRecord]:
    """The points of a journal, in the order written; [] when there is none. A partial
    last line (a write cut short by a kill) is left out; any other damage is an error."""
    try:  # a regular file of bounded size, as every file a reader is handed
        data = read_bytes(path, MAX_RESULT)
    except UnreadableFile as exc:
        if exc.missing:
            return []
        raise ResultsError(exc.worded("point journal")) from None
    lines = data.split(b"\n")[:-1]  # the last piece is "" or a partial line
    points = []
    for i, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            plain = json.loads(raw)
        except (ValueError, RecursionError):
            raise ResultsError(f"{path}: line {i} is not a point (not valid JSON)") from None
        try:
            if not isinstance(plain, dict):
                raise ResultsError("not a JSON object")
            points.append(PointRecord.from_dict(plain, "point"))
        except ResultsError as exc:
            raise ResultsError(f"{path}: line {i}: {exc}") from None
    return points


def merge_points(points: Iterable[PointRecord]) -> list[PointRecord]:
    """One record per point key, in the order measured: a later ok record replaces an
    earlier one, and a failed one never replaces an ok one."""
    by_key: dict[str, PointRecord] = {}
    for point in points:
        held = by_key.get(point.key)
        if held is not None and held.ok and not point.ok:
            continue
        by_key.pop(point.key, None)
        by_key[point.key] = point
    return list(by_key.values())
