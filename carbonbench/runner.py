"""Run a scenario: for each model, for each point, warm up, measure the windows, record.

What each step needs lives beside it: the run file (carbonbench.runfile), the meters,
sidecar and timeline (carbonbench.session), warm-up and windows (carbonbench.windows),
the model (carbonbench.model_slot) and the prompts (carbonbench.inputs), Ctrl-C and
SIGTERM at every ``phase()`` (carbonbench.interrupts). A crash loses at most one point.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from carbonbench import environment
from carbonbench.distributed.context import DistributedFailure, Job, Single
from carbonbench.distributed.parallel import plan_layouts
from carbonbench.engines import make_engine
from carbonbench.errors import ModelTooLargeError
from carbonbench.forecast import sweep_forecast
from carbonbench.inputs import check_inputs, point_inputs, tokenizer_for
from carbonbench.interrupts import Interrupted, deferred, interrupts, pending, phase
from carbonbench.meters.base import MeterSet
from carbonbench.model_slot import ModelSlot
from carbonbench.records import PointRecord
from carbonbench.run_record import RunRecord
from carbonbench.runfile import RunFile
from carbonbench.scenario import ModelEntry, Point, Scenario, expand
from carbonbench.serve_workload import make_workload, measure_window  # static and serve workloads
from carbonbench.session import Session, open_run_file, open_session
from carbonbench.threads import apply as apply_threads
from carbonbench.windows import PeakMemory, failure, free_memory, sync_fn, warm_up

__all__ = ["Hooks", "Interrupted", "RunOutcome", "Runner"]


@dataclass
class RunOutcome:
    path: Path
    run: RunRecord
    skipped: int = 0
    unsaved: Optional[str] = None  # the closing write failed: where the points are instead

    @property
    def failed(self) -> int:
        return sum(1 for p in self.run.points if not p.ok)


@dataclass
class Hooks:
    """How the runner talks to its caller (the CLI prints; tests collect)."""

    log: Callable[[str], None] = lambda msg: None
    point_done: Callable[[Point, PointRecord], None] = lambda point, record: None


class Runner:
    def __init__(
        self,
        scenario: Scenario,
        out_dir: Path,
        *,
        device: Optional[str] = None,
        quick_run: bool = False,
        resume: bool = False,
        source: Optional[str] = None,
        hooks: Optional[Hooks] = None,
        meters: Optional[MeterSet] = None,
        dist: Optional[Job] = None,
    ):
        self.scenario = scenario.quick() if quick_run else scenario
        self.out_dir, self.quick_run, self.resume, self.source = Path(out_dir), quick_run, resume, source
        self.hooks = hooks or Hooks()
        # Under torchrun: this rank's view of the job; on one process, a Job without collectives.
        self.job: Job = dist or Single(environment.resolve_device(device or scenario.device))
        self.device = self.job.device
        self.dtype = environment.resolve_dtype(scenario.dtype, self.device)
        # Before any torch work of the run: the forecast probes at this count, the environment records it.
        self.threads = apply_threads(self.scenario.measurement.threads)
        self.meters, self.run_file = meters, None  # None: built for the device at run()
        self.points = expand(self.scenario)
        check_inputs(self.scenario)  # before anything is written to out_dir
        # How each point spreads over the ranks (all "single" on one process).
        cards = {e.label: e.card for e in self.scenario.entries}
        self.layouts = plan_layouts(self.points, self.scenario.parallel, self.job, self.dtype, cards)

    def run(self) -> RunOutcome:
        m = self.scenario.measurement
        with interrupts():
            run_file, status, todo = None, "failed", self.points
            try:
                with deferred():  # the run file opened and known here, or neither
                    run_file = self.run_file = open_run_file(self, self.hooks.log)
                todo = self._todo(run_file)
                with open_session(self, run_file) as session:
                    if self.job.broadcast(run_file.record.idle is None and m.idle_baseline_s > 0):
                        self.hooks.log(f"measuring idle power for {m.idle_baseline_s:g} s")
                        run_file.record.idle = session.idle(m.idle_baseline_s)
                        session.spool()
                    run_file.save(status="running")
                    for entry, points in self.scenario.by_model(todo):
                        self._run_model(entry, points, run_file, session)
                    session.spool()  # the last samples, every rank's (a collective)
                status = "complete"
            except (Interrupted, KeyboardInterrupt):
                status = "interrupted"
                raise
            except DistributedFailure as exc:  # a rank died or hung: the process group is gone
                run_file.warn(str(exc))
                raise
            finally:
                if run_file is not None:
                    run_file.close(status)  # "interrupted" if a signal came; one during it waits for it
        return RunOutcome(run_file.path, run_file.record, len(self.points) - len(todo), run_file.unsaved)

    def _todo(self, run_file: RunFile) -> list[Point]:
        done = self.job.broadcast(run_file.record.done_keys)  # rank 0's file decides
        run_file.record.points = [p for p in run_file.record.points if p.key in done]
        todo = [p for p in self.points if p.key not in done]
        if self.resume:
            self.hooks.log(
                f"resume: {len(self.points) - len(todo)} of {len(self.points)} points already "
                f"measured in {run_file.path.name}, skipped"
            )
        if todo:
            self.hooks.log(sweep_forecast(self.scenario, todo, self.device, self.dtype).message)
        return todo

    def _run_model(self, entry: ModelEntry, points: list[Point], run_file: RunFile, session: Session) -> None:
        # The engine (native, transformers) runs every workload; the run records its options here.
        engine = make_engine(self.scenario.engine, self.device)
        run_file.record.engine = engine.describe()
        for note in engine.notes:  # said once each in the run file
            run_file.warn(note)
        slot, tokenizer = ModelSlot(engine, entry, self.job, self.dtype, self.scenario.seed), tokenizer_for(entry)
        for point in ModelSlot.order(points, self.layouts):
            layout = self.layouts[point.key]
            phase("model-build")
            try:
                model = slot.model_for(point, layout)
            except ModelTooLargeError as exc:
                self._record(point, PointRecord.start(point, status="oom", error=str(exc)), run_file, session)
                continue
            record = self._measure_point(point, model, engine, tokenizer, session, run_file)
            record.params, record.weights = slot.params(), entry.weights(self.scenario.seed)
            record.parallel = self.job.describe_layout(layout, point.batch_size)
            self._record(point, record, run_file, session)
            time.sleep(self.scenario.measurement.cooldown_s)
        slot.free()

    def _measure_point(
        self, point: Point, model, engine, tokenizer, session: Session, run_file: RunFile
    ) -> PointRecord:
        m, sync, layout = self.scenario.measurement, sync_fn(self.device), self.layouts[point.key]
        record = PointRecord.start(point, started_unix_s=time.time())
        memory, workload = PeakMemory(self.device), None
        memory.reset()
        try:
            inputs = point_inputs(point, layout, self.scenario, tokenizer, model.arch.vocab_size, self.device)
            record.tokens_per_word = inputs.tokens_per_word
            workload = make_workload(
                point, model, inputs, sync, engine, self.scenario.workloads.train, self.dtype, replicas=layout.dp
            )
            record.tokens_per_step, record.flops_per_step = workload.tokens_per_step, workload.flops_per_step
            record.model_flops_per_step = workload.model_flops_per_step
            phase("warm-up")
            record.warmup = warm_up(workload, m, sync, self.job)
            for i in range(m.repeats):
                record.repeats.append(
                    measure_window(workload, point.key, i, session, m, sync, self.job, run_file.record.idle)
                )
                if self.job.spools_per_window:
                    session.spool()
        except BaseException as exc:
            failed = None if pending() else failure(exc)  # a signal that torch wrapped is still a signal
            if failed is None:
                raise
            record.status, record.error = failed
            session.end_task()
        finally:
            if workload is not None:
                workload.close()
            record.finish(peak_memory_bytes=memory.peak_bytes())
            if record.status == "oom":
                workload = None
                free_memory(self.device)
        return self.job.agree(record)  # failed on any rank = failed

    def _record(self, point: Point, record: PointRecord, run_file: RunFile, session: Session) -> None:
        run_file.add_point(record)
        session.spool()
        self.hooks.point_done(point, record)
        phase("between-points")
