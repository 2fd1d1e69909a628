"""The run file's life: created or resumed, every point journalled, closed with a status.

A run writes, beside each other in its output directory (docs/results.md, schema 2):

- ``<run-id>.json``, the run file. Written atomically when the run starts, at most every
  ``SUMMARY_EVERY_S`` while it runs (when anything in it changed), and when it ends,
  whole, with every point. While the run goes on it holds the points it started with
  (those of a resumed run) but not the new ones: those are in the journal.
- ``<run-id>.points.jsonl``, the journal: one finished point per line
  (``PointRecord.to_dict()``), appended and synced as the point finishes, so a crash or
  kill loses at most the point in flight. Once a write of the run file holds every
  point, the journal is removed.
- ``<run-id>.lock`` while a process writes the run: a second run of it refuses to start.

Rewriting the whole file after every point made a sweep cost O(n^2) bytes (1,000 points
wrote 2.4 GB); the journal makes it O(n) (benchmarks/runfile_cost.py).

``read_run`` merges the journal into the run file, so every reader sees every point a
run has finished, even in a file killed mid-run. ``--resume`` finds the latest run of
the same scenario on the same device (its fingerprint) and continues it. A write that
fails (a full disk, a read-only target) costs no measurement: the points stay in memory
and are written after the next point; if the run ends first, ``unsaved`` says where
they went. Under torchrun only rank 0 writes (``writer``); the others keep the record
in memory.
"""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional

from carbonbench import __version__
from carbonbench.errors import ResultsError, UserError
from carbonbench.files import LockFile, WriteError, append_bytes, atomic_write_text, remove, safe_name
from carbonbench.interrupts import deferred, pending, phase
from carbonbench.journal import JOURNAL_SUFFIX, journal_line, journal_path, jsonable, merge_points, read_journal
from carbonbench.reading import MAX_RESULT, JSONContentError, UnreadableFile, parse_json, read_text
from carbonbench.records import PointRecord
from carbonbench.run_record import SCHEMA, SCHEMA_VERSION, DeviceRecord, RunRecord

Log = Callable[[str], None]
LOCK_SUFFIX = ".lock"
SUMMARY_EVERY_S = 30.0


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
        run_id=run_id,
        started_utc=now_utc(),
        carbonbench_version=__version__,
        fingerprint=fp,
        quick=quick,
        scenario=scenario,
        scenario_source=source,
        device=device,
        environment=env,
        timeline_file=f"{run_id}.timeline.csv",
    )


def lock_path(run_path: Path) -> Path:
    return Path(run_path).with_name(Path(run_path).stem + LOCK_SUFFIX)


# -- reading and writing ------------------------------------------------------------------
def run_text(run: RunRecord | dict, points: Optional[list[PointRecord]] = None) -> str:
    """A run file's text; ``points`` in place of the record's own."""
    data = run.to_dict() if isinstance(run, RunRecord) else dict(run)
    if points is not None:
        data["points"] = [p.to_dict() for p in points]
    return json.dumps(jsonable(data), indent=1) + "\n"


def write_run(path: Path, run: RunRecord | dict) -> None:
    """The run file, whole, atomically: a record, or its plain form."""
    atomic_write_text(path, run_text(run))


def read_run(path: str | Path) -> RunRecord:
    """A run file with the points of its journal, validated; ResultsError naming the file
    and the damaged key otherwise."""
    path = Path(path)
    if path.name.endswith(JOURNAL_SUFFIX):
        raise ResultsError(
            f"{path}: the point journal of a run, not a run file; read "
            f"{path.name.removesuffix(JOURNAL_SUFFIX)}.json beside it"
        )
    # The journal first: a run removes it only after a write of the run file that holds
    # all its points, so read in this order the two never miss a point between them.
    journal = read_journal(journal_path(path))
    run = _read_run_file(path)
    if journal:
        run.points = merge_points([*run.points, *journal])
    return run


def _read_run_file(path: Path) -> RunRecord:
    try:  # a regular file of bounded size: a pipe or /dev/zero would hang or fill memory
        text = read_text(path, MAX_RESULT)
    except UnreadableFile as exc:
        raise ResultsError(exc.worded("result file")) from None
    try:
        data = parse_json(text, finite=False)  # duplicate keys refused; numbers are checked by from_dict
    except JSONContentError as exc:
        raise ResultsError(f"{path}: {exc.why}" + (f" in {exc.where}" if exc.where else "")) from None
    except json.JSONDecodeError as exc:
        raise ResultsError(
            f"{path}: not valid JSON (truncated or corrupted?) at line {exc.lineno}: {exc.msg}"
        ) from None
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
    """The record of the run under way and the files it is saved to.

    ``add_point()`` journals a finished point; ``save()`` writes the run file now (after
    a change that must survive a crash); ``close(status)`` at the end, whatever happened,
    writes it whole and releases the run. A failed write is said once through ``log``
    and retried at the next point; ``unsaved`` is then, after ``close``, the one line
    that says where the points are.
    """

    def __init__(
        self,
        path: Path,
        record: RunRecord,
        *,
        writer: bool = True,
        resumed: bool = False,
        log: Log = lambda msg: None,
        summary_every_s: float = SUMMARY_EVERY_S,
    ):
        self.path = Path(path)
        self.record = record
        self.writer = writer
        self.resumed = resumed
        self.log = log
        self.summary_every_s = summary_every_s
        self.journal = journal_path(self.path)
        self.unsaved: Optional[str] = None
        self.closed = False
        self._lock: Optional[LockFile] = None
        self._in_file: list[PointRecord] = list(record.points)  # what the run file itself holds
        self._unjournalled: list[PointRecord] = []
        self._summary_text: Optional[str] = None
        self._summary_at = -math.inf
        self._failing: dict[str, str] = {}  # path -> the error said about it

    @classmethod
    def open(
        cls,
        out_dir: Path,
        new: Callable[[], RunRecord],
        fp: str,
        *,
        resume: bool,
        writer: bool = True,
        log: Log = lambda msg: None,
    ) -> "RunFile":
        """The latest run with fingerprint ``fp`` in out_dir when resuming, else ``new()``:
        locked (LockHeld when another process has it) and written."""
        out_dir = Path(out_dir)
        found = latest_run(out_dir, fp, log) if resume else None
        for _ in range(5):  # a new run's id may be taken (the same microsecond): draw another
            record = None if found else new()
            path = found[0] if found else out_dir / f"{record.run_id}.json"
            lock = LockFile(lock_path(path), str(path)) if writer else None
            if (not found and path.exists()) or (lock is not None and not _take(lock, log, fresh=not found)):
                continue
            try:
                if found:  # again, now that it is ours: another process may have just added to it
                    record = cls._continue(path, read_run(path))
                run_file = cls(path, record, writer=writer, resumed=found is not None, log=log)
                run_file._lock = lock
                run_file._begin()
                return run_file
            except BaseException:
                if lock is not None:
                    lock.release()
                raise
        raise UserError(f"{out_dir}: could not find a free run id")

    @staticmethod
    def _continue(path: Path, record: RunRecord) -> RunRecord:
        name = record.timeline_file
        if not isinstance(name, str) or safe_name(name) != name:  # the file says where we write: distrust it
            record.timeline_file = f"{safe_name(path.stem)}.timeline.csv"
        record.points = merge_points(p for p in record.points if p.ok)  # failed points are measured again
        record.schema_version = SCHEMA_VERSION  # from now on it has a journal beside it
        return record

    def _begin(self) -> None:
        """The first write: the run file with every point so far; a journal left by an
        earlier process is then redundant. A failure here ends the run before it starts."""
        if self.writer:
            self._write_whole()
            remove(self.journal)

    @property
    def timeline_path(self) -> Path:
        return self.path.parent / str(self.record.timeline_file)

    def warn(self, message: str) -> None:
        """A warning for the run file, said once however often it happens."""
        if message not in self.record.warnings:
            self.record.warnings.append(message)

    def add_point(self, point: PointRecord) -> None:
        self.record.points.append(point)
        self._unjournalled.append(point)
        if self._flush_journal() and time.monotonic() - self._summary_at >= self.summary_every_s:
            self.save()

    def save(self, status: Optional[str] = None) -> bool:
        """Write the run file now (with the points it held at the start while the run goes
        on, every point once closed); False when the write failed and waits for a retry."""
        if status is not None:
            self.record.status = status
        if not self.writer:  # rank 0 writes the one run file of a distributed job
            return True
        if self.closed:
            return self._try(self.path, self._write_whole, "")
        text = run_text(self.record, self._in_file)
        if text == self._summary_text:
            self._summary_at = time.monotonic()
            return True
        return self._try(
            self.path,
            lambda: self._write_summary(text),
            f"every point is in {self.journal.name}; the run file is written again after the next point",
        )

    def save_all(self) -> bool:
        """Write the run file now with every point as it is, for records that change after
        they were added (a measure session's points gain a repeat per window); the journal,
        now redundant (and older than the file), is removed. A whole write per call: for
        throttled use."""
        if not self.writer:
            return True
        if self._try(self.path, self._write_whole, "the run file is written again at the next save"):
            remove(self.journal)
            return True
        return False

    def close(self, status: str) -> None:
        """The last write, whole. A signal that came before it makes the status
        "interrupted"; one that comes during it waits for it (cut short, it would leave
        the file "running"), then raises."""
        with deferred():
            phase("closing")
            self.record.status = "interrupted" if pending() else status
            self.record.finished_utc = now_utc()
            self.closed = True
            if not self.writer:
                return
            try:
                if self._try(self.path, self._write_whole, ""):
                    remove(self.journal)
                else:
                    self.unsaved = self._rescue()
            finally:
                if self._lock is not None:
                    self._lock.release()

    # -- writing -------------------------------------------------------------------------
    def _write_summary(self, text: str) -> None:
        atomic_write_text(self.path, text)
        self._summary_text, self._summary_at = text, time.monotonic()

    def _write_whole(self) -> bool:
        text = run_text(self.record)
        atomic_write_text(self.path, text)
        self._in_file, self._unjournalled = list(self.record.points), []
        self._summary_text, self._summary_at = text, time.monotonic()
        return True

    def _flush_journal(self) -> bool:
        if not self.writer or not self._unjournalled:
            return True
        data = b"".join(journal_line(p) for p in self._unjournalled)
        if not self._try(
            self.journal,
            lambda: append_bytes(self.journal, data),
            f"{len(self._unjournalled)} point(s) kept in memory, written after the next point",
        ):
            return False
        self._unjournalled = []
        return True

    def _try(self, path: Path, write: Callable[[], Any], meanwhile: str) -> bool:
        """Run a write; a failure is said once (per file and error), with what happens
        ``meanwhile``, and left for a retry."""
        try:
            write()
        except WriteError as exc:
            if self._failing.get(str(path)) != str(exc):
                self._failing[str(path)] = str(exc)
                self.warn(f"run file: {exc}")
                if not self.closed:
                    self.log(f"{exc}; {meanwhile}")
            return False
        if self._failing.pop(str(path), None) is not None and not self.closed:
            self.log(f"{path}: written again, nothing lost")
        return True

    def _rescue(self) -> str:
        """The closing write failed: say where the points are, saving them elsewhere if need be."""
        error = self._failing.get(str(self.path), "cannot write the run file")
        n = len(self.record.points)
        if self._flush_journal():
            return (
                f"{error}; its {n} point(s) are in {self.path} and its journal {self.journal}, "
                "which readers and --resume merge"
            )
        for folder in rescue_folders():
            rescue = folder / f"carbonbench-{safe_name(self.path.stem)}.json"
            try:
                write_run(rescue, self.record)
            except WriteError:
                continue
            return f"{error}; all {n} point(s) are saved in {rescue} instead"
        kept = n - len(self._unjournalled)
        return (
            f"{error}; nowhere to save the points: {kept} of {n} are in {self.path} and {self.journal}, "
            f"{len(self._unjournalled)} are lost"
        )


def rescue_folders() -> list[Path]:
    """Where the points go when the run's own directory refuses them (often another disk)."""
    return [Path(tempfile.gettempdir()), Path.home()]


def _take(lock: LockFile, log: Log, *, fresh: bool) -> bool:
    """Take a run's lock; False for a new run whose id is taken (draw another)."""
    try:
        holder = lock.acquire()
    except UserError:
        if fresh:
            return False
        raise
    if holder is not None:
        log(f"{lock.what}: took over the lock of pid {holder.get('pid')} on {holder.get('host')}, which is gone")
    return True


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
