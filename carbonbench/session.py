"""Everything that measures a run, opened together and always closed: meters, the
codecarbon sidecar and the power timeline (Ctrl-C and SIGTERM: carbonbench.interrupts,
whose ``Interrupted`` and ``interrupts()`` are also importable from here).

``with Session(...) as session:`` starts the meters and the sidecar; leaving the block,
however it is left, stops them, records codecarbon's run total and every warning in the
run file, and moves the last power samples to the timeline file. Inside, windows are
``session.window(label)``: on every rank at the same moment, summed over ranks.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional

from carbonbench import environment
from carbonbench.distributed.context import Job
from carbonbench.errors import MeterError
from carbonbench.interrupts import Interrupted, interrupts, phase
from carbonbench.meters.base import Measurement, MeterSet
from carbonbench.meters.idle import IdleBaseline, measure_idle
from carbonbench.meters.select import build_meter_set
from carbonbench.run_record import DeviceRecord, RunRecord
from carbonbench.runfile import RunFile, fingerprint, new_run
from carbonbench.timeline import TimelineFile

__all__ = ["Interrupted", "NoSidecar", "Session", "SessionWindow", "interrupts", "make_sidecar"]
IDLE_LABEL = "idle"


@dataclass
class SessionWindow:
    """A window of the session: set ``extra`` inside the block (per-rank figures such as
    the step count); after it, ``measurement`` is the whole job's and ``detail`` its
    per-rank and per-node split (None on one process)."""

    label: str
    extra: dict[str, Any] = field(default_factory=dict)
    measurement: Optional[Measurement] = None
    detail: Optional[dict] = None


class NoSidecar:
    """codecarbon off (or not installed): the same calls, nothing measured, and said so."""

    def __init__(self, reason: str = "measurement.codecarbon is false"):
        self.reason = reason

    def start(self) -> None: ...
    def begin_point(self, label: str) -> None: ...
    def end_point(self) -> None:
        return None

    def stop(self) -> None:
        return None

    def describe(self) -> dict:
        return {"enabled": False}


def make_sidecar(scenario, out_dir, job: Job):
    """codecarbon's offline tracker beside our meters, on the writing rank only."""
    if not job.is_writer or not scenario.measurement.codecarbon:
        return NoSidecar()
    try:
        from carbonbench.meters.codecarbon_sidecar import CodecarbonSidecar  # codecarbon is heavy: only when on
    except ImportError:
        return NoSidecar("codecarbon is not installed")
    return CodecarbonSidecar(scenario.carbon, enabled=True, output_dir=out_dir)


def open_run_file(run, log) -> RunFile:
    """The run file of a runner.Runner: resumed (same fingerprint) or new, written by the writing rank only."""
    scenario, device, job, quick_run = run.scenario, run.device, run.job, run.quick_run
    env = environment.collect(device, getattr(run, "threads", None))
    fp = fingerprint(scenario.to_dict(), job.fingerprint_device(env["device_name"]), quick_run)
    record_device = DeviceRecord(device.type, env["device_name"], job.world_size, str(run.dtype).removeprefix("torch."))

    def new() -> RunRecord:
        record = new_run(scenario.to_dict(), run.source, env, record_device, fp, quick_run)
        job.annotate(record)
        return record

    return RunFile.open(run.out_dir, new, fp, resume=run.resume, writer=job.is_writer, log=log)


def open_session(run, run_file: RunFile) -> "Session":
    """The session of a runner.Runner: its meters (or the ones it was given), sidecar and timeline."""
    scenario, job = run.scenario, run.job
    # Under torchrun each rank meters its own GPU, and only one rank per node the CPU and DRAM.
    meters = run.meters or build_meter_set(run.device, scenario.measurement, gpu_indices=job.gpu_indices())
    # Samples go to disk after every window, so memory stays flat however long the run.
    timeline = TimelineFile(run_file.timeline_path, resume=run.resume) if job.is_writer else None
    return Session(job.filter_meters(meters), job, run_file, make_sidecar(scenario, run.out_dir, job), timeline)


class Session:
    def __init__(
        self,
        meters: MeterSet,
        job: Job,
        run_file: RunFile,
        sidecar: Any = None,
        timeline: Optional[TimelineFile] = None,
    ):
        self.meters = meters
        self.job = job
        self.run_file = run_file
        self.sidecar = sidecar if sidecar is not None else NoSidecar()
        self.timeline = timeline  # the writing rank's file; None elsewhere

    def __enter__(self) -> "Session":
        self.meters.start()
        run = self.run_file.record
        run.meters = self.meters.describe()
        self.job.annotate_meters(run)
        self.sidecar.start()
        return self

    def __exit__(self, *exc) -> bool:
        run = self.run_file.record
        run.codecarbon = _safe_call(self.sidecar.stop, self.run_file.warn)
        run.codecarbon_meter = self.sidecar.describe()
        try:
            self.meters.close()
        except MeterError as err:
            self.run_file.warn(str(err))
        # After a failure the ranks may not meet again: keep this rank's own samples.
        self.spool(gather=False)
        return False

    @property
    def resolution_s(self) -> float:
        return self.meters.resolution_s

    @contextlib.contextmanager
    def window(self, label: str, *, span: bool = False) -> Iterator[SessionWindow]:
        """A measured window, opened at the same moment on every rank; ``span`` labels the
        timeline samples that fall in it with ``label``."""
        handle = SessionWindow(label)
        self.job.mark(label)
        self.job.barrier()
        with self.meters.window(label) as w:
            phase("idle" if label == IDLE_LABEL else "window")
            yield handle
        handle.measurement, handle.detail = self.job.combine(w.measurement, handle.extra)
        if span and self.timeline is not None:
            m = w.measurement
            self.timeline.spans.add(m.start_unix_s, m.start_unix_s + m.duration_s, label)

    def idle(self, seconds: float) -> IdleBaseline:
        return measure_idle(self, seconds, label=IDLE_LABEL)

    def begin_task(self, label: str) -> None:
        self.sidecar.begin_point(label)

    def end_task(self) -> Optional[dict]:
        return self.sidecar.end_point()

    def spool(self, gather: bool = True) -> None:
        """Move the samples taken so far from the meters to the timeline file.

        Only between windows: the meters forget power samples older than now. With
        ``gather`` every rank must call it at the same moment (it is a collective). A
        full disk costs the timeline, never the measurements: one warning in the run file.
        """
        try:
            rows = self.job.drain_timeline(self.meters) if gather else self.meters.drain_timeline()
            if self.timeline is not None:
                self.timeline.append(rows)
        except (OSError, MeterError) as exc:
            self.run_file.warn(f"power timeline: {exc}")


def _safe_call(fn: Callable[[], Any], warn: Callable[[str], None]) -> Any:
    try:
        return fn()
    except Exception as exc:  # codecarbon must never cost us the measurements
        warn(f"codecarbon: {exc}")
        return None
