"""``carbonbench.measure_session``: many windows of your own code, as an ordinary run file.

    with carbonbench.measure_session("my-training", out="results/", country="FRA") as s:
        for batch in batches:
            with s.measure("step", tokens=batch_tokens):
                train_step(batch)

The file is a normal run file (carbonbench.records), so ``carbonbench report``,
``carbonbench compare``, ``carbonbench export`` and ``results.load`` read it as they read
a benchmark run. The mapping onto the schema:

- the run's ``scenario`` section describes the session (``kind: session``, its name,
  device, grid, PUE, prices, idle baseline), and its ``engine`` is ``custom``;
- each window name (with its optional batch size and sequence length) is a point:
  ``model`` = the window name, ``workload`` = ``custom``; each window is a repeat, so
  a point's J/token has a mean and a 95% CI over its windows; tokens are optional
  (without them a window has energy but no J/token);
- a window whose block raised is a repeat with status ``error`` (``interrupted`` for
  Ctrl-C), its energy kept; its point then says ``error`` with the message.

It reuses what a benchmark run uses: ``RunFile`` (the file), ``Session`` (meters,
codecarbon and the power timeline as one context manager), ``TimelineFile``.
The file is rewritten at most every ``save_every_s`` (a rewrite per training step
would cost more than the step), between outermost windows, and whenever the session
closes, however it closes; a hard kill loses at most the windows since the last save.
"""

from __future__ import annotations

import atexit
import time
from pathlib import Path
from typing import Any, Optional

from carbonbench import environment
from carbonbench.api.window import (
    Measure,
    Settings,
    WindowResult,
    meter_failure,
    meter_set,
    result_of,
    unique_label,
)
from carbonbench.distributed.context import Single
from carbonbench.errors import MeterError, UserError
from carbonbench.meters.base import Measurement
from carbonbench.records import PointRecord, RepeatRecord, point_summary, window_label
from carbonbench.run_record import DeviceRecord, RunRecord
from carbonbench.runfile import RunFile, fingerprint, new_run
from carbonbench.session import Interrupted, Session, make_sidecar
from carbonbench.timeline import TimelineFile

WORKLOAD = "custom"
ENGINE = {"name": "custom", "options": {}, "notes": ["your own code, measured with carbonbench.measure_session"]}


def point_key(name: str, batch_size: int, seq_len: int) -> str:
    """A benchmark point's key style (model/workload/b<batch>/s<seq>), sizes only when given."""
    return "/".join(
        [name, WORKLOAD] + ([f"b{batch_size}"] if batch_size else []) + ([f"s{seq_len}"] if seq_len else [])
    )


class MeasureSession:
    """Windows of one process into one run file (see the module docstring)."""

    def __init__(
        self,
        name: str,
        *,
        out: "str | Path" = "results",
        description: str = "",
        idle_baseline_s: float = 0.0,
        codecarbon: bool = False,
        save_every_s: float = 5.0,
        **settings: Any,
    ):
        if not isinstance(name, str) or not name.strip():
            raise UserError(f"carbonbench.measure_session: a session needs a non-empty name (got {name!r})")
        self.name, self.description, self.out_dir = name, description, Path(out)
        if not save_every_s >= 0:
            raise UserError(f"carbonbench.measure_session: save_every_s must be >= 0 (got {save_every_s!r})")
        self.save_every_s = float(save_every_s)
        self.settings = Settings.make(idle_baseline_s=idle_baseline_s, codecarbon=codecarbon, **settings)
        self.run_file: Optional[RunFile] = None
        self._session: Optional[Session] = None
        self._points: dict[str, PointRecord] = {}
        self._depth = 0  # windows open now: the file and timeline are touched only between them
        self._outermost: set[str] = set()  # open windows that opened with no other open
        self._meter_failure: Optional[str] = None
        self._last_save = 0.0
        self._dirty = False

    # -- the session's life -----------------------------------------------------------------
    def open(self) -> "MeasureSession":
        """Create the run file, start the meters (and codecarbon), measure the idle baseline."""
        if self.run_file is not None:
            raise RuntimeError(f"session {self.name!r} is already open")
        s = self.settings
        env = environment.collect(s.device)
        scenario = self.describe()
        fp = fingerprint(scenario, f"{s.device.type}:{env['device_name']}", False)
        device = DeviceRecord(s.device.type, env["device_name"], 1, None)

        def new() -> RunRecord:
            record = new_run(scenario, None, env, device, fp, False)
            record.engine = dict(ENGINE)
            return record

        self.run_file = RunFile.open(self.out_dir, new, fp, resume=False)
        timeline = TimelineFile(self.run_file.timeline_path)
        session = Session(
            meter_set(s), Single(s.device), self.run_file, make_sidecar(s, self.out_dir, Single(s.device)), timeline
        )
        try:
            self._session = session.__enter__()
        except MeterError as exc:  # no meters at all: every window says so; the code still runs
            self._meter_failure = meter_failure("starting the meters", exc)
            self.run_file.warn(self._meter_failure)
        try:
            if self._session is not None and s.measurement.idle_baseline_s > 0:
                self.run_file.record.idle = session.idle(s.measurement.idle_baseline_s)
                session.spool()
            self.run_file.record.status = "running"
            self.run_file.save()
        except BaseException:  # Ctrl-C in the idle baseline, a full disk: the file still ends well
            self.close("failed")
            raise
        self._last_save = time.monotonic()
        atexit.register(self._close_at_exit)
        return self

    def close(self, status: str = "complete") -> None:
        """Stop the meters and write the file with ``status`` (complete, interrupted, failed).
        Safe to call twice; windows still open are left unrecorded."""
        run_file, session = self.run_file, self._session
        if run_file is None or run_file.record.finished_utc is not None:
            return
        atexit.unregister(self._close_at_exit)
        try:
            for point in self._points.values():
                point.finish(peak_memory_bytes=None)
            if session is not None:
                session.__exit__(None, None, None)  # codecarbon's total, meters closed, last samples
        finally:
            self._session = None
            run_file.close(status)

    def _close_at_exit(self) -> None:
        # Opened without `with` (the Trainer callback) and never closed: training stopped
        # without on_train_end, so the file says so rather than "running" for ever.
        if self.run_file is not None:
            self.run_file.warn("the process exited with the session still open")
        self.close("failed")

    def __enter__(self) -> "MeasureSession":
        return self.open()

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is None:
            status = "complete"
        elif isinstance(exc, (KeyboardInterrupt, Interrupted)):
            status = "interrupted"
        else:
            status = "failed"
            if self.run_file is not None:
                self.run_file.warn(f"the session ended with {type(exc).__name__}: {exc}")
        self.close(status)
        return False

    @property
    def path(self) -> Path:
        """The run file (``<out>/<run-id>.json``); its timeline is beside it."""
        if self.run_file is None:
            raise RuntimeError(f"session {self.name!r} is not open")
        return self.run_file.path

    def describe(self) -> dict[str, Any]:
        """The run file's ``scenario`` section: what readers price and group the windows by."""
        s = self.settings
        m = s.measurement
        return {
            "kind": "session",
            "name": self.name,
            "description": self.description,
            "device": str(s.device),
            "carbon": {
                "country": s.carbon.country,
                "region": s.carbon.region,
                "grid_g_per_kwh": s.carbon.grid_g_per_kwh,
                "pue": s.carbon.pue,
            },
            "cost": {"usd_per_kwh": s.cost.usd_per_kwh, "usd_per_device_hour": s.cost.usd_per_device_hour},
            "measurement": {
                "idle_baseline_s": m.idle_baseline_s,
                "sample_interval_s": m.sample_interval_s,
                "cpu_tdp_w": m.cpu_tdp_w,
                "codecarbon": m.codecarbon,
            },
        }

    # -- windows ----------------------------------------------------------------------------
    def measure(
        self, name: str, *, tokens: Optional[int] = None, steps: int = 1, batch_size: int = 0, seq_len: int = 0
    ) -> Measure:
        """A window of this session (``with`` it, or decorate a function with it)."""
        return Measure(name, self, tokens=tokens, steps=steps, batch_size=batch_size, seq_len=seq_len)

    def begin(self, window: Measure) -> Optional[str]:
        if self.run_file is None or self.run_file.record.finished_utc is not None:
            raise RuntimeError(f"session {self.name!r} is not open: open it (`with`) before measuring in it")
        label = unique_label(window.name)
        if self._session is None:
            return None
        outermost = self._depth == 0
        if outermost:
            # codecarbon's tasks do not nest: only outermost windows get one, opened just outside.
            self._session.begin_task(label)
        try:
            self._session.meters.begin_window(label)
        except MeterError as exc:
            self._meter_failure = meter_failure("opening the window", exc)
            if outermost:
                self._session.end_task()
            return None
        self._depth += 1
        if outermost:
            self._outermost.add(label)
        return label

    def end(self, window: Measure, label: Optional[str], status: str, error: Optional[str]) -> WindowResult:
        meas: Optional[Measurement] = None
        codecarbon = None
        failed = self._meter_failure if label is None else None
        outermost = label in self._outermost
        if label is not None and self._session is not None:
            self._depth -= 1
            self._outermost.discard(label)
            try:
                meas = self._session.meters.end_window(label)
            except MeterError as exc:
                failed = meter_failure("reading the meters", exc)
            if outermost:
                codecarbon = self._session.end_task()
        if failed is not None and status == "ok":
            status, error = "meter-error", failed
        idle = self.run_file.record.idle if self.run_file is not None else None
        active = idle.active_energy_j(meas) if idle is not None and meas is not None else None
        result = result_of(window, self.settings, meas, status, error, active_energy_j=active)
        self._record(window, meas, result, codecarbon, outermost)
        return result

    def _record(
        self,
        window: Measure,
        meas: Optional[Measurement],
        result: WindowResult,
        codecarbon: Optional[dict],
        outermost: bool,
    ) -> None:
        key = point_key(window.name, window.batch_size, window.seq_len)
        point = self._points.get(key)
        new = point is None
        if point is None:
            point = self._points[key] = PointRecord(
                key=key,
                model=window.name,
                workload=WORKLOAD,
                batch_size=window.batch_size,
                seq_len=window.seq_len,
                started_unix_s=result.start_unix_s,
            )
        repeat = len(point.repeats)
        fields = dict(
            steps=window.steps,
            tokens=window.tokens or 0,
            active_energy_j=result.active_energy_j,
            codecarbon=codecarbon,
            status=result.status,
        )
        if meas is not None:
            rep = RepeatRecord.from_measurement(repeat, meas, **fields)
        else:  # unmeasured: its time, and energy None with method none (never a zero)
            rep = RepeatRecord(
                repeat=repeat,
                start_unix_s=result.start_unix_s,
                duration_s=result.duration_s,
                method="none",
                energy_method="none",
                **fields,
            )
        point.repeats.append(rep)
        if not result.ok and point.status == "ok":
            point.status, point.error = result.status, result.error
        if outermost and meas is not None and self._session.timeline is not None:
            # A sample is labelled with the outermost window it falls in (the timeline file
            # gives each sample one window, and nested ones would leave gaps in the outer).
            self._session.timeline.spans.add(
                meas.start_unix_s, meas.start_unix_s + meas.duration_s, window_label(key, repeat)
            )
        self._dirty = True
        if new:
            point.summary = point_summary(point.repeats)
            self.run_file.add_point(point)  # a new point is saved at once
            self._last_save = time.monotonic()
        self._maybe_save()

    def _maybe_save(self) -> None:
        if self._depth or not self._dirty or time.monotonic() - self._last_save < self.save_every_s:
            return
        self.save()

    def save(self) -> None:
        """Write the file and the power timeline now (only between windows: the meters then
        forget their older power samples)."""
        if self.run_file is None or self._depth:
            return
        for point in self._points.values():
            point.summary = point_summary(point.repeats)
        if self._session is not None:
            self._session.spool()
        # Points gain a repeat per window after they were journalled: the file is written whole.
        self.run_file.save_all()
        self._last_save, self._dirty = time.monotonic(), False


def measure_session(
    name: str,
    *,
    out: "str | Path" = "results",
    device: Any = "auto",
    description: str = "",
    idle_baseline_s: float = 0.0,
    codecarbon: bool = False,
    country: Optional[str] = None,
    region: Optional[str] = None,
    grid_g_per_kwh: Optional[float] = None,
    pue: float = 1.0,
    usd_per_kwh: float = 0.15,
    usd_per_device_hour: float = 0.0,
    sample_interval_s: float = 0.1,
    cpu_tdp_w: Optional[float] = None,
    save_every_s: float = 5.0,
) -> MeasureSession:
    """A session of windows written to ``out/<name>-<host>-<time>.json`` (+ ``.timeline.csv``).

    ``with`` it, or ``open()`` / ``close(status)`` it. ``idle_baseline_s`` > 0 sleeps that
    long at the start to measure idle power, so every window also gets its energy above
    idle. ``codecarbon`` runs codecarbon's offline tracker alongside (its first start
    takes about a second). The other settings are ``carbonbench.measure``'s.
    """
    return MeasureSession(
        name,
        out=out,
        description=description,
        idle_baseline_s=idle_baseline_s,
        codecarbon=codecarbon,
        save_every_s=save_every_s,
        device=device,
        country=country,
        region=region,
        grid_g_per_kwh=grid_g_per_kwh,
        pue=pue,
        usd_per_kwh=usd_per_kwh,
        usd_per_device_hour=usd_per_device_hour,
        sample_interval_s=sample_interval_s,
        cpu_tdp_w=cpu_tdp_w,
    )
