"""Run a scenario: expand it, build each model once, and measure every point.

For each point: build inputs, warm up (never measured), then ``repeats`` windows that
each last at least ``min_seconds`` (time-bounded, not a step count), with the device
synchronised at every edge. The run file is rewritten atomically after every point, so a
crash or Ctrl-C loses at most the point in progress.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import signal
import statistics
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from carbonbench import __version__, environment
from carbonbench.distributed.context import SINGLE, DistributedFailure
from carbonbench.errors import MeterError, ModelTooLargeError, UserError
from carbonbench.meters.base import Measurement, MeterSet
from carbonbench.meters.idle import IdleBaseline
from carbonbench.results import read_run, safe_name, write_run
from carbonbench.timeline import TimelineFile, label as label_timeline
from carbonbench.scenario import MeasurementConfig, Point, Scenario, expand, model_card, model_label
from carbonbench.forecast import sweep_forecast
from carbonbench.stats import ci95
from carbonbench.workloads import WORKLOADS, Inputs, NonFiniteLoss, Workload

QUICK = dict(warmup_steps=1, warmup_s=0.0, min_seconds=0.3, repeats=2, idle_baseline_s=0.5, cooldown_s=0.0)


class Interrupted(Exception):
    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.exit_code = 128 + signum


@dataclass
class RunOutcome:
    path: Path
    run: dict[str, Any]
    skipped: int = 0

    @property
    def failed(self) -> int:
        return sum(1 for p in self.run["points"] if p["status"] != "ok")


@dataclass
class Hooks:
    """How the runner talks to its caller (the CLI prints; tests collect)."""

    log: Callable[[str], None] = lambda msg: None
    point_done: Callable[[Point, dict], None] = lambda point, record: None


def quick(scenario: Scenario) -> Scenario:
    """The same sweep with short windows: a smoke run, not a measurement to publish."""
    return scenario.replace(measurement=dataclasses.replace(scenario.measurement, **QUICK))


def fingerprint(scenario: Scenario, device: str, quick_run: bool) -> str:
    text = json.dumps({"scenario": scenario.to_dict(), "device": device, "quick": quick_run}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


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
        dist=None,
    ):
        self.scenario = quick(scenario) if quick_run else scenario
        self.out_dir = Path(out_dir)
        # Under torchrun: this rank's view of the job (carbonbench.distributed.context);
        # SINGLE, whose collectives do nothing, on one process.
        self.dist = dist or SINGLE
        self.device = self.dist.device if self.dist.distributed else environment.resolve_device(device or scenario.device)
        self.dtype = environment.resolve_dtype(scenario.dtype, self.device)
        self.quick_run = quick_run
        self.resume = resume
        self.source = source
        self.hooks = hooks or Hooks()
        self._meters = meters
        self._live_meters: Optional[MeterSet] = None  # while run() runs
        self._timeline: Optional[TimelineFile] = None
        self.points = expand(self.scenario)
        self.entries = {model_label(e): e for e in self.scenario.models}
        self._check_inputs()
        from carbonbench.distributed.parallel import plan_layouts

        # How each point spreads over the ranks (all "single" on one process).
        self.layouts = plan_layouts(self.points, self.scenario.parallel, self.dist, self.dtype, self.entries)

    def _check_inputs(self) -> None:
        """A broken checkpoint or prompts file is a UserError now, before anything is written to out_dir."""
        from carbonbench.opt.checkpoint import check_checkpoint
        from carbonbench.opt.tokenizer import load_tokenizer, read_prompts

        if self.scenario.workloads.prompts:
            read_prompts(self.scenario.workloads.prompts)

        for entry in self.scenario.models:
            card = model_card(entry)
            if card.checkpoint:  # a card file names its checkpoint: name the card by its path
                check_checkpoint(card.checkpoint, card.architecture, card.name if Path(entry).is_dir() else card.path)
                load_tokenizer(card.checkpoint)

    # -- the whole run ---------------------------------------------------------------
    def run(self) -> RunOutcome:
        m: MeasurementConfig = self.scenario.measurement
        env = environment.collect(self.device)
        world = f" x{self.dist.world_size}" if self.dist.distributed else ""
        fp = fingerprint(self.scenario, f"{self.device.type}:{env['device_name']}{world}", self.quick_run)
        path, run = self._open_run(env, fp)
        done = self.dist.broadcast({p["key"] for p in run["points"] if p.get("status") == "ok"})  # rank 0's file
        todo = [p for p in self.points if p.key not in done]
        skipped = len(self.points) - len(todo)
        if self.resume:
            self.hooks.log(f"resume: {skipped} of {len(self.points)} points already measured in {path.name}, skipped")
        run["points"] = [p for p in run["points"] if p["key"] in done]
        self._warn_if_long(todo)

        # Under torchrun each rank meters its own GPU, and only one rank per node the CPU and DRAM.
        meters = self.dist.filter_meters(self._meters or _build_meters(self.device, m, self.dist.distributed))
        sidecar = _sidecar(self.scenario, self.out_dir) if self.dist.is_writer else _NoSidecar()
        previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, _raise_interrupt)}
        interrupted: Optional[Interrupted] = None
        # Samples go to disk after every window, so memory stays flat however long the run.
        self._timeline = TimelineFile(self.out_dir / run["timeline_file"], resume=self.resume) if self.dist.is_writer else None
        self._live_meters = meters
        try:
            meters.start()
            run["meters"] = meters.describe()
            if self.dist.distributed:
                run.setdefault("distributed", self.dist.describe())["meters_by_rank"] = self.dist.all_gather(run["meters"])
            sidecar.start()
            if self.dist.broadcast(run.get("idle") is None and m.idle_baseline_s > 0):
                self.hooks.log(f"measuring idle power for {m.idle_baseline_s:g} s")
                run["idle"] = _measure_idle(meters, m.idle_baseline_s, self.dist)
                _safe_spool(lambda: self._spool_timeline(run), run)
            run["status"] = "running"
            self._write(path, run)
            for label, points in _by_model(todo):
                # Points carry the model's label; a card file or checkpoint dir is loaded by its path.
                self._run_model(self.entries[label], points, run, path, meters, sidecar)
            _safe_spool(lambda: self._spool_timeline(run), run)  # the last samples, every rank's (a collective)
            run["status"] = "complete"
        except KeyboardInterrupt:
            interrupted = Interrupted(signal.SIGINT)
        except Interrupted as exc:
            interrupted = exc
        except UserError:
            run["status"] = "failed"
            raise
        except DistributedFailure as exc:  # a rank died or hung: the process group is gone
            run["status"] = "failed"
            run.setdefault("warnings", []).append(str(exc))
            raise
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            if interrupted is not None:
                run["status"] = "interrupted"
            run["finished_utc"] = _now()
            run["codecarbon"] = _safe_call(sidecar.stop, run.setdefault("warnings", []))
            run["codecarbon_meter"] = sidecar.describe()
            try:
                meters.close()
            except MeterError as exc:
                run.setdefault("warnings", []).append(str(exc))
            # After a failure the ranks may not meet again: keep this rank's own samples.
            _safe_spool(lambda: self._spool_timeline(run, gather=False), run)
            self._live_meters = self._timeline = None
            self._write(path, run)
        if interrupted is not None:
            raise interrupted
        return RunOutcome(path, run, skipped)

    def _open_run(self, env: dict, fp: str) -> tuple[Path, dict]:
        if self.resume:
            found = _latest_run(self.out_dir, fp, self.hooks.log)
            if found is not None:
                path, run = found
                name = run.get("timeline_file")
                if not isinstance(name, str) or safe_name(name) != name:  # the file says where we write: distrust it
                    run["timeline_file"] = f"{safe_name(path.stem)}.timeline.csv"
                return path, run
        run_id = f"{safe_name(self.scenario.name)}-{safe_name(env['hostname'], 30)}-{datetime.now(timezone.utc):%Y%m%dT%H%M%S%fZ}"
        run = {
            "schema": "carbonbench.run",
            "schema_version": 1,
            "run_id": run_id,
            "status": "starting",
            "started_utc": _now(),
            "finished_utc": None,
            "carbonbench_version": __version__,
            "fingerprint": fp,
            "quick": self.quick_run,
            "scenario": self.scenario.to_dict(),
            "scenario_source": self.source,
            "device": {
                "type": self.device.type,
                "name": env["device_name"],
                "count": self.dist.world_size,  # one device per rank
                "dtype": str(self.dtype).removeprefix("torch."),
            },
            "environment": env,
            "meters": [],
            "idle": None,
            "timeline_file": f"{run_id}.timeline.csv",
            "points": [],
            "warnings": [],
        }
        if self.dist.distributed:
            run["world_size"] = self.dist.world_size
            run["nodes"] = self.dist.nodes()
            run["distributed"] = self.dist.describe()
            if self.dist.nnodes > 1 and self.scenario.measurement.codecarbon:
                run["warnings"].append("codecarbon runs on rank 0 only: its figures cover node 0, not the whole job")
        return self.out_dir / f"{run_id}.json", run

    def _write(self, path: Path, run: dict) -> None:
        if self.dist.is_writer:  # rank 0 writes the one run file of a distributed job
            write_run(path, run)

    def _warn_if_long(self, points: list[Point]) -> None:
        if not points:
            return
        forecast = sweep_forecast(self.scenario, points, self.device, self.dtype)
        self.hooks.log(("WARNING: this sweep would take hours: " if forecast.long else "") + forecast.summary)

    # -- one model ------------------------------------------------------------------
    def _run_model(self, entry: str, points: list[Point], run: dict, path: Path, meters: MeterSet, sidecar) -> None:
        from carbonbench.engines import make_engine

        # The engine (native or transformers) loads the model and runs every workload's
        # operations; the run records its name and the options in effect on this device.
        self.engine = make_engine(self.scenario.engine, self.device)
        run["engine"] = self.engine.describe()
        warnings = run.setdefault("warnings", [])
        warnings.extend(n for n in self.engine.notes if n not in warnings)
        training = self.scenario.workloads.train
        tokenizer = _tokenizer_for(entry)
        # Inference runs in the scenario dtype; training keeps fp32 master weights and
        # autocasts to the scenario dtype (mixed precision). Inference goes first, so when
        # both dtypes are fp32 the training steps may change the weights it already used.
        model, model_dtype = None, None
        for p in sorted(points, key=lambda p: (p.workload == "train", self.layouts[p.key].mode)):
            layout = self.layouts[p.key]
            want = (torch.float32 if p.workload == "train" else self.dtype, layout.mode)
            if model is None or model_dtype != want:
                model = None
                _free(self.device)
                try:
                    if layout.mode == "single":
                        model = self.engine.load(entry, device=self.device, dtype=want[0], seed=self.scenario.seed)
                    elif self.engine.name != "native":
                        raise UserError(f"engine '{self.engine.name}' runs on one process; use engine: native with torchrun")
                    else:
                        model = self._load_parallel(entry, p, want[0])
                except ModelTooLargeError as exc:
                    self._record(run, path, self._failed(p, "oom", str(exc)))
                    continue
                model_dtype = want
                model.eval()
            record = self._run_point(model, p, run, meters, sidecar, training, tokenizer)
            record["params"] = sum(t.numel() for t in model.parameters())  # whole model, also when sharded
            if self.dist.distributed:
                record["parallel"] = {**layout.as_dict(), "global_batch_size": p.batch_size * layout.dp}
            self._record(run, path, record)
            if self.scenario.measurement.cooldown_s:
                time.sleep(self.scenario.measurement.cooldown_s)
        model = None
        _free(self.device)

    def _load_parallel(self, entry: str, point: Point, dtype: torch.dtype):
        from carbonbench.distributed.parallel import build_model

        # FSDP mixed precision: fp32 master weights, all-gathered in the scenario dtype.
        param_dtype = self.dtype if point.workload == "train" and self.dtype != torch.float32 else None
        return build_model(entry, self.layouts[point.key], self.dist, dtype, self.scenario.seed, param_dtype)

    def _record(self, run: dict, path: Path, record: dict) -> None:
        run["points"].append(record)
        self._write(path, run)
        _safe_spool(lambda: self._spool_timeline(run), run)
        self.hooks.point_done(_point_of(record), record)

    def _spool_timeline(self, run: dict, gather: bool = True, current: Optional[dict] = None) -> None:
        """Move the samples taken so far from the meters to the timeline file, labelled
        with the windows of the recorded points and of ``current``, the point under way.

        Called after every window (after every point under torchrun), so memory holds at
        most one window's (one point's) samples. Only between windows: the meters forget
        power samples older than now. With ``gather`` every rank must call it at the same
        moment (it is a collective).
        """
        meters = self._live_meters
        if meters is None:
            return
        rows = self.dist.drain_timeline(meters) if gather else meters.drain_timeline()
        if self._timeline is not None:
            points = run["points"] + ([current] if current is not None else [])
            self._timeline.append(label_timeline(rows, points))

    def _failed(self, point: Point, status: str, message: str) -> dict:
        return {"key": point.key, **point.as_dict(), "status": status, "error": message, "repeats": []}

    # -- one point ------------------------------------------------------------------
    def _run_point(self, model, point: Point, run: dict, meters: MeterSet, sidecar, training, tokenizer) -> dict:
        m = self.scenario.measurement
        record = {"key": point.key, **point.as_dict(), "status": "ok", "error": None, "repeats": []}
        record["started_unix_s"] = time.time()
        workload: Optional[Workload] = None
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        try:
            inputs = self._inputs(point, tokenizer, model.arch.vocab_size)
            record["tokens_per_word"] = inputs.tokens_per_word
            workload = self._workload(model, point, inputs, training)
            record["tokens_per_step"] = workload.tokens_per_step
            record["flops_per_step"] = workload.flops_per_step
            record["model_flops_per_step"] = workload.model_flops_per_step  # flops: MFU's convention
            record["warmup"] = self._warm_up(workload, m)
            for i in range(m.repeats):
                # One codecarbon task per window, opened and closed outside it, so both
                # tools measure the same work and the figures compare repeat by repeat.
                sidecar.begin_point(f"{point.key}#r{i}")
                rep = self._window(workload, point, i, meters, run.get("idle"))
                rep["codecarbon"] = sidecar.end_point()
                record["repeats"].append(rep)
                if not self.dist.distributed:
                    # Under torchrun a drain is a collective: once per point, at _record,
                    # keeps the ranks' sequence of collectives short and the same.
                    _safe_spool(lambda: self._spool_timeline(run, current=record), run)
        except torch.OutOfMemoryError as exc:
            record.update(status="oom", error=_first_line(exc))
        except NonFiniteLoss as exc:
            record.update(status="nan", error=str(exc))
        except MeterError as exc:
            record.update(status="meter-error", error=str(exc))
        except (KeyboardInterrupt, Interrupted, UserError, DistributedFailure):
            raise
        except Exception as exc:  # a broken point must not end the sweep
            record.update(status="error", error=f"{type(exc).__name__}: {_first_line(exc)}")
        finally:
            if record["status"] != "ok":
                sidecar.end_point()
                for rep in record["repeats"]:
                    rep.setdefault("status", "ok")
            if workload is not None:
                workload.close()
            record["peak_memory_bytes"] = _peak_memory(self.device)
            record["finished_unix_s"] = time.time()
            record["summary"] = _summary(record["repeats"])
            if record["status"] == "oom":
                workload = None
                _free(self.device)
        return self.dist.agree(record)  # failed on any rank = failed

    def _inputs(self, point: Point, tokenizer, vocab: int) -> Inputs:
        from carbonbench.opt.tokenizer import encode_prompts, read_prompts, synthetic_prompts

        length = point.seq_len if point.workload == "train" else point.prompt_tokens
        prompts = self.scenario.workloads.prompts
        # Data parallel: one global batch of batch_size rows per replica; each rank keeps its own.
        layout = self.layouts[point.key]
        rows = point.batch_size * layout.dp
        if point.workload != "train" and tokenizer is not None and prompts:
            texts = read_prompts(prompts)
            ids, mask, words, tokens = encode_prompts(tokenizer, texts, rows, length)
            return Inputs(layout.local_rows(ids).to(self.device), layout.local_rows(mask).to(self.device), words, tokens)
        ids = synthetic_prompts(rows, length, vocab, seed=self.scenario.seed)
        return Inputs(layout.local_rows(ids).to(self.device))

    def _workload(self, model, point: Point, inputs: Inputs, training) -> Workload:
        sync = _sync_fn(self.device)
        if point.workload == "train":
            autocast = None if self.dtype == torch.float32 else self.dtype
            workload = WORKLOADS["train"](
                model, point, inputs, sync,
                lr=training.lr, autocast_dtype=autocast, recompute=training.activation_checkpointing, engine=self.engine,
            )
        else:
            workload = WORKLOADS[point.workload](model, point, inputs, sync, engine=self.engine)
        # A step's tokens and FLOPs are the whole job's: every data-parallel replica's.
        workload.tokens_per_step *= self.layouts[point.key].dp
        workload.flops_per_step *= self.layouts[point.key].dp
        workload.model_flops_per_step *= self.layouts[point.key].dp  # flops: as the hardware figure
        return workload

    def _warm_up(self, workload: Workload, m: MeasurementConfig) -> dict:
        """Steps until warmup_steps and warmup_s are both reached, each timed.

        The first step pays for torch.compile, CUDA-graph capture and allocator growth;
        it happens here, never in a window. A compiling engine gets at least three steps
        (a second shape or state may compile again), and compile_s is the warm-up's time
        beyond its fastest step's pace. Then the workload is sealed: a recompile or graph
        capture in a window is an error, not a slow window.
        """
        sync = _sync_fn(self.device)
        min_steps = max(m.warmup_steps, 3 if workload.compiles else 1)
        times: list[float] = []
        t0 = time.perf_counter()
        # all_done: under torchrun every rank stops at the same step (steps hold collectives).
        while not self.dist.all_done(len(times) >= min_steps and time.perf_counter() - t0 >= m.warmup_s):
            s0 = time.perf_counter()
            workload.step()
            sync()
            times.append(time.perf_counter() - s0)
        workload.check()
        out = {"steps": len(times), "duration_s": time.perf_counter() - t0, "first_step_s": times[0]}
        if len(times) > 1:
            out["steady_step_s"] = min(times[1:])
        if workload.compiles:
            out["compile_s"] = sum(max(t - out["steady_step_s"], 0.0) for t in times)
        workload.seal()
        return out

    def _window(self, workload: Workload, point: Point, repeat: int, meters: MeterSet, idle: Optional[dict]) -> dict:
        m = self.scenario.measurement
        sync = _sync_fn(self.device)
        # A window shorter than ~10 meter updates measures the update grid, not the work.
        min_s = max(m.min_seconds, 10 * meters.resolution_s)
        flags = ["extended-window"] if min_s > m.min_seconds else []
        latencies: list[float] = []
        extras: dict[str, list[float]] = {}
        label = f"{point.key}#r{repeat}"
        self.dist.mark(label)
        self.dist.barrier()  # every rank opens its window at the same moment
        with meters.window(label) as w:
            t0 = time.perf_counter()
            while True:
                s0 = time.perf_counter()
                for k, v in workload.step().items():
                    extras.setdefault(k, []).append(v)
                sync()
                latencies.append(time.perf_counter() - s0)
                if self.dist.all_done(time.perf_counter() - t0 >= min_s):
                    break
        workload.check()
        steps = len(latencies)
        # Every rank's energy summed (CPU and DRAM once per node), with per-rank/node detail.
        meas, detail = self.dist.combine(w.measurement, {"steps": steps})
        rep = {
            "repeat": repeat,
            "steps": steps,
            "tokens": steps * workload.tokens_per_step,
            "flops": steps * workload.flops_per_step,
            "model_flops": steps * workload.model_flops_per_step,  # flops: MFU's convention
            **meas.as_dict(),
            "energy_method": meas.method,
            "latency_s": _percentiles(latencies),
        }
        rep["flags"] = flags + list(meas.flags)
        rep.pop("label", None)
        rep.update(detail or {})
        rep["active_energy_j"] = _active_energy(meas, idle)
        for k, values in extras.items():
            rep[k] = statistics.fmean(values)
        return rep


def run_scenario(scenario: Scenario, out_dir: Path, **kwargs) -> RunOutcome:
    return Runner(scenario, out_dir, **kwargs).run()


# -- helpers ------------------------------------------------------------------------
def _build_meters(device: torch.device, m: MeasurementConfig, own_gpu_only: bool = False) -> MeterSet:
    from carbonbench.meters.select import build_meter_set

    if own_gpu_only and device.type == "cuda":  # a torchrun rank meters the GPU it drives, no other
        return build_meter_set(device, m, gpu_indices=[device.index])
    return build_meter_set(device, m)


class _NoSidecar:
    def start(self): ...
    def begin_point(self, label): ...
    def end_point(self): return None
    def stop(self): return None
    def describe(self): return {"enabled": False}


def _sidecar(scenario: Scenario, out_dir: Path):
    if not scenario.measurement.codecarbon:
        return _NoSidecar()
    try:
        from carbonbench.meters.codecarbon_sidecar import CodecarbonSidecar
    except ImportError:
        return _NoSidecar()
    return CodecarbonSidecar(scenario.carbon, enabled=True, output_dir=out_dir)


def _measure_idle(meters: MeterSet, seconds: float, dist=SINGLE) -> dict:
    dist.mark("idle")
    dist.barrier()
    with meters.window("idle") as w:
        time.sleep(seconds)
    meas, _ = dist.combine(w.measurement)
    return IdleBaseline.from_measurement(meas).as_dict()


def _active_energy(meas: Measurement, idle: Optional[dict]) -> Optional[float]:
    return IdleBaseline.from_dict(idle).active_energy_j(meas) if idle else None


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    s = sorted(values)

    def pct(q: float) -> float:
        pos = q * (len(s) - 1)
        lo, hi = int(pos), min(int(pos) + 1, len(s) - 1)
        return s[lo] + (s[hi] - s[lo]) * (pos - lo)

    return {"p50": pct(0.5), "p90": pct(0.9), "p99": pct(0.99), "mean": statistics.fmean(s), "min": s[0], "max": s[-1]}


def _by_model(points: list[Point]):
    order: dict[str, list[Point]] = {}
    for p in points:
        order.setdefault(p.model, []).append(p)
    return order.items()


def _sync_fn(device: torch.device) -> Callable[[], None]:
    return (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _peak_memory(device: torch.device) -> Optional[int]:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    import psutil

    return int(psutil.Process().memory_info().rss)


def _tokenizer_for(entry: str):
    from carbonbench.opt.tokenizer import load_tokenizer

    card = model_card(entry)
    return load_tokenizer(card.checkpoint) if card.checkpoint else None


def _latest_run(out_dir: Path, fp: str, log: Callable[[str], None] = lambda msg: None) -> Optional[tuple[Path, dict]]:
    best = None
    for f in sorted(out_dir.glob("*.json")):
        try:
            run = read_run(f)
        except UserError as exc:
            log(f"resume: skipped {exc}")
            continue
        started = str(run.get("started_utc") or "")
        if run.get("fingerprint") == fp and (best is None or started > best[0]):
            best = (started, f, run)
    return best[1:] if best else None


def _point_of(record: dict) -> Point:
    return Point(**{k: record[k] for k in ("model", "workload", "batch_size", "prompt_tokens", "new_tokens", "seq_len")})


def _raise_interrupt(signum, frame):
    raise Interrupted(signum)


def _safe_spool(fn, run: dict) -> None:
    try:
        fn()
    except (OSError, MeterError) as exc:  # a full disk costs the timeline, never the measurements
        warnings, message = run.setdefault("warnings", []), f"power timeline: {exc}"
        if message not in warnings:
            warnings.append(message)


def _safe_call(fn, warnings: list) -> Any:
    try:
        return fn()
    except Exception as exc:  # codecarbon must never cost us the measurements
        warnings.append(f"codecarbon: {exc}")
        return None


def _summary(repeats: list[dict]) -> dict:
    """Mean, standard deviation and 95% CI half-width over the repeats, per figure."""
    out = {}
    for name, value in (
        ("joules_per_token", lambda r: r["energy_j"] / r["tokens"] if r.get("energy_j") is not None and r["tokens"] else None),
        ("tokens_per_s", lambda r: r["tokens"] / r["duration_s"] if r["duration_s"] else None),
    ):
        mean, std, half = ci95(value(r) for r in repeats if r.get("status", "ok") == "ok")
        out[name] = {"mean": mean, "std": std, "ci95": half, "n": len(repeats)}
    return out


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
