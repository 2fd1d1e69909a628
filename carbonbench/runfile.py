"""The run file's life: created or resumed, rewritten after every point, closed with a status.

One JSON file per run (``<run-id>.json``, the schema in carbonbench.records and
docs/results.md), rewritten atomically after every point, so a reader never sees half a
file and a crash loses at most the point in flight. ``--resume`` finds the latest run
of the same scenario on the same device (its fingerprint) and continues it.
Under torchrun only rank 0 writes (``writer``); the other ranks keep the record in memory.
"""

from __future__ import annotations

import hashlib
import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional

from carbonbench.errors import ResultsError, UserError
from carbonbench.files import atomic_write_text, safe_name
from carbonbench import __version__
from carbonbench.records import SCHEMA, DeviceRecord, PointRecord, RunRecord

Log = Callable[[str], None]


def now_utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def fingerprint(scenario_dict: dict, device: str, quick_run: bool) -> str:
    """What makes two runs the same measurement: the scenario, the device, the quick flag."""
    text = json.dumps({"scenario": scenario_dict, "device": device, "quick": quick_run}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def new_run_id(scenario_name: str, hostname: str) -> str:
    return f"{safe_name(scenario_name)}-{safe_name(hostname, 30)}-{datetime.now(timezone.utc):%Y%m%dT%H%M%S%fZ}"


def new_run(scenario: dict, source: Optional[str], env: dict, device: DeviceRecord, fp: str, quick: bool) -> RunRecord:
    """The record of a run about to start, named after its scenario, host and start time."""
    run_id = new_run_id(str(scenario.get("name")), env["hostname"])
    return RunRecord(
        run_id=run_id, started_utc=now_utc(), carbonbench_version=__version__, fingerprint=fp, quick=quick,
        scenario=scenario, scenario_source=source, device=device, environment=env,
        timeline_file=f"{run_id}.timeline.csv",
    )


# -- reading and writing ------------------------------------------------------------------
def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN; absent is honest
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def write_run(path: Path, run: RunRecord | dict) -> None:
    """The run file, whole, atomically: a record, or its plain form."""
    data = run.to_dict() if isinstance(run, RunRecord) else run
    atomic_write_text(path, json.dumps(_jsonable(data), indent=1) + "\n")


def read_run(path: str | Path) -> RunRecord:
    """A run file, validated; ResultsError naming the file and the damaged key otherwise."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ResultsError(f"{path}: result file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ResultsError(f"{path}: cannot read result file ({exc})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ResultsError(f"{path}: not valid JSON (truncated or corrupted?) at line {exc.lineno}: {exc.msg}") from None
    except RecursionError:
        raise ResultsError(f"{path}: not a carbonbench result file (JSON nested too deeply)") from None
    try:
        return RunRecord.from_dict(data)
    except ResultsError as exc:
        raise ResultsError(f"{path}: {exc}") from None


def is_run_file(data: Any) -> bool:
    return isinstance(data, dict) and data.get("schema") == SCHEMA


# -- the file of one run ------------------------------------------------------------------
class RunFile:
    """The record of the run under way and the file it is saved to.

    ``save()`` after every change that must survive a crash; ``close(status)`` at the end,
    whatever happened.
    """

    def __init__(self, path: Path, record: RunRecord, *, writer: bool = True, resumed: bool = False):
        self.path = Path(path)
        self.record = record
        self.writer = writer
        self.resumed = resumed

    @classmethod
    def open(cls, out_dir: Path, new: Callable[[], RunRecord], fp: str, *, resume: bool, writer: bool = True,
             log: Log = lambda msg: None) -> "RunFile":
        """The latest run with fingerprint ``fp`` in out_dir when resuming, else ``new()``."""
        out_dir = Path(out_dir)
        if resume:
            found = latest_run(out_dir, fp, log)
            if found is not None:
                path, record = found
                name = record.timeline_file
                if not isinstance(name, str) or safe_name(name) != name:  # the file says where we write: distrust it
                    record.timeline_file = f"{safe_name(path.stem)}.timeline.csv"
                record.points = [p for p in record.points if p.ok]  # failed points are measured again
                return cls(path, record, writer=writer, resumed=True)
        record = new()
        return cls(out_dir / f"{record.run_id}.json", record, writer=writer)

    @property
    def timeline_path(self) -> Path:
        return self.path.parent / str(self.record.timeline_file)

    def warn(self, message: str) -> None:
        """A warning for the run file, said once however often it happens."""
        if message not in self.record.warnings:
            self.record.warnings.append(message)

    def add_point(self, point: PointRecord) -> None:
        self.record.points.append(point)
        self.save()

    def save(self) -> None:
        if self.writer:  # rank 0 writes the one run file of a distributed job
            write_run(self.path, self.record)

    def close(self, status: str) -> None:
        self.record.status = status
        self.record.finished_utc = now_utc()
        self.save()


def latest_run(out_dir: Path, fp: str, log: Log = lambda msg: None) -> Optional[tuple[Path, RunRecord]]:
    """The most recently started run file in out_dir with fingerprint ``fp``; damaged files are skipped."""
    best = None
    for f in sorted(Path(out_dir).glob("*.json")):
        try:
            run = read_run(f)
        except UserError as exc:
            log(f"resume: skipped {exc}")
            continue
        started = str(run.started_utc or "")
        if run.fingerprint == fp and (best is None or started > best[0]):
            best = (started, f, run)
    return best[1:] if best else None
