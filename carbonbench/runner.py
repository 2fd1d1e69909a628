"""Run a scenario: expand it, build each model once, and measure every point.

For each point: build inputs, warm up (never measured), then ``repeats`` windows that
each last at least ``min_seconds`` (time-bounded, not a step count), with the device
synchronised at every edge. The run file is rewritten atomically after every point, so a
crash or Ctrl-C loses at most the point in progress.
"""

from __future__ import annotations

import bisect
import dataclasses
import gc
import hashlib
import json
import signal
import statistics
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from carbonbench import __version__, environment
from carbonbench.errors import MeterError, ModelTooLargeError, UserError
from carbonbench.meters.base import Measurement, MeterSet
from carbonbench.results import read_run, safe_name, write_run, write_timeline
from carbonbench.scenario import MeasurementConfig, Point, Scenario, expand, model_card, model_label
from carbonbench.workloads import WORKLOADS, Inputs, NonFiniteLoss, Workload

QUICK = dict(warmup_steps=1, warmup_s=0.0, min_seconds=0.3, repeats=2, idle_baseline_s=0.5, cooldown_s=0.0)
LONG_SWEEP_S = 3600.0


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
class PlannedPoint:
    point: Point
    step_s: float  # estimated seconds per step
    total_s: float  # estimated seconds for warm-up plus all repeats


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


def probe_flops(device: torch.device, dtype: torch.dtype, seconds: float = 0.2) -> float:
    """A short matmul loop: the device's dense rate, used only to predict durations."""
    n = 1024 if device.type == "cuda" else 256
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    _sync(device)
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        steps += 1
        if device.type == "cuda" and steps % 16 == 0:
            torch.cuda.synchronize(device)
    _sync(device)
    return 2 * n**3 * steps / (time.perf_counter() - t0)


def plan(scenario: Scenario, points: list[Point], flops_per_s: float) -> list[PlannedPoint]:
    from carbonbench.workloads import decode_flops, prefill_flops, train_flops

    m = scenario.measurement
    cards = {model_label(entry): model_card(entry) for entry in scenario.models}
    recompute = bool(scenario.workloads.train and scenario.workloads.train.activation_checkpointing)
    planned = []
    for p in points:
        arch = cards[p.model].architecture
        flops = {
            "prefill": lambda: prefill_flops(arch, p.batch_size, p.prompt_tokens),
            "decode": lambda: decode_flops(arch, p.batch_size, p.prompt_tokens, p.new_tokens),
            "train": lambda: train_flops(arch, p.batch_size, p.seq_len, recompute),
        }[p.workload]()
        step_s = flops / flops_per_s
        warmup = max(m.warmup_steps * step_s, m.warmup_s)
        planned.append(PlannedPoint(p, step_s, warmup + m.repeats * max(m.min_seconds, step_s) + m.cooldown_s))
    return planned


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
    ):
        self.scenario = quick(scenario) if quick_run else scenario
        self.out_dir = Path(out_dir)
        self.device = environment.resolve_device(device or scenario.device)
        self.dtype = environment.resolve_dtype(scenario.dtype, self.device)
        self.quick_run = quick_run
        self.resume = resume
        self.source = source
        self.hooks = hooks or Hooks()
        self._meters = meters
        self.points = expand(self.scenario)
        self.entries = {model_label(e): e for e in self.scenario.models}

    # -- the whole run ---------------------------------------------------------------
    def run(self) -> RunOutcome:
        m: MeasurementConfig = self.scenario.measurement
        env = environment.collect(self.device)
        fp = fingerprint(self.scenario, f"{self.device.type}:{env['device_name']}", self.quick_run)
        path, run, timeline_before = self._open_run(env, fp)
        done = {p["key"] for p in run["points"] if p.get("status") == "ok"}
        todo = [p for p in self.points if p.key not in done]
        skipped = len(self.points) - len(todo)
        if self.resume:
            self.hooks.log(f"resume: {skipped} of {len(self.points)} points already measured in {path.name}, skipped")
        run["points"] = [p for p in run["points"] if p["key"] in done]
        self._warn_if_long(todo)

        meters = self._meters or _build_meters(self.device, m)
        sidecar = _sidecar(self.scenario, self.out_dir)
        previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, _raise_interrupt)}
        interrupted: Optional[Interrupted] = None
        try:
            meters.start()
            run["meters"] = meters.describe()
            sidecar.start()
            if run.get("idle") is None and m.idle_baseline_s > 0:
                self.hooks.log(f"measuring idle power for {m.idle_baseline_s:g} s")
                run["idle"] = _measure_idle(meters, m.idle_baseline_s)
            run["status"] = "running"
            write_run(path, run)
            for model_entry, points in _by_model(todo):
                self._run_model(model_entry, points, run, path, meters, sidecar)
            run["status"] = "complete"
        except KeyboardInterrupt:
            interrupted = Interrupted(signal.SIGINT)
        except Interrupted as exc:
            interrupted = exc
        except UserError:
            run["status"] = "failed"
            raise
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            if interrupted is not None:
                run["status"] = "interrupted"
            run["finished_utc"] = _now()
            run["codecarbon"] = _safe_call(sidecar.stop, run.setdefault("warnings", []))
            run["codecarbon_meter"] = sidecar.describe()
            timeline = timeline_before + _label_timeline(meters.timeline(), run["points"])
            try:
                meters.close()
            except MeterError as exc:
                run.setdefault("warnings", []).append(str(exc))
            write_timeline(self.out_dir / run["timeline_file"], timeline)
            write_run(path, run)
        if interrupted is not None:
            raise interrupted
        return RunOutcome(path, run, skipped)

    def _open_run(self, env: dict, fp: str) -> tuple[Path, dict, list[dict]]:
        if self.resume:
            found = _latest_run(self.out_dir, fp)
            if found is not None:
                path, run = found
                return path, run, _read_timeline(self.out_dir / run["timeline_file"])
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
                "count": 1,
                "dtype": str(self.dtype).removeprefix("torch."),
            },
            "environment": env,
            "meters": [],
            "idle": None,
            "timeline_file": f"{run_id}.timeline.csv",
            "points": [],
            "warnings": [],
        }
        return self.out_dir / f"{run_id}.json", run, []

    def _warn_if_long(self, points: list[Point]) -> None:
        if not points:
            return
        rate = probe_flops(self.device, self.dtype)
        planned = plan(self.scenario, points, rate)
        total = sum(p.total_s for p in planned)
        slowest = max(planned, key=lambda p: p.step_s)
        msg = (
            f"{len(points)} points, estimated {_human(total)} from FLOPs at a probed "
            f"{rate / 1e9:.1f} GFLOP/s (slowest step: {slowest.point.key}, ~{_human(slowest.step_s)})"
        )
        if total > LONG_SWEEP_S:
            self.hooks.log("WARNING: this sweep would take hours: " + msg)
        else:
            self.hooks.log(msg)

    # -- one model ------------------------------------------------------------------
    def _run_model(self, entry: str, points: list[Point], run: dict, path: Path, meters: MeterSet, sidecar) -> None:
        from carbonbench.opt import load as load_model

        training = self.scenario.workloads.train
        tokenizer = _tokenizer_for(entry)
        # Inference runs in the scenario dtype; training keeps fp32 master weights and
        # autocasts to the scenario dtype (mixed precision). Inference goes first, so when
        # both dtypes are fp32 the training steps may change the weights it already used.
        model, model_dtype = None, None
        for p in sorted(points, key=lambda p: p.workload == "train"):
            want = torch.float32 if p.workload == "train" else self.dtype
            if model is None or model_dtype != want:
                model = None
                _free(self.device)
                try:
                    model = load_model(entry, device=self.device, dtype=want, seed=self.scenario.seed)
                except ModelTooLargeError as exc:
                    self._record(run, path, self._failed(p, "oom", str(exc)))
                    continue
                model_dtype = want
                model.eval()
            record = self._run_point(model, p, run, meters, sidecar, training, tokenizer)
            record["params"] = sum(t.numel() for t in model.parameters())
            self._record(run, path, record)
            if self.scenario.measurement.cooldown_s:
                time.sleep(self.scenario.measurement.cooldown_s)
        model = None
        _free(self.device)

    def _record(self, run: dict, path: Path, record: dict) -> None:
        run["points"].append(record)
        write_run(path, run)
        self.hooks.point_done(_point_of(record), record)

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
            record["warmup"] = self._warm_up(workload, m)
            sidecar.begin_point(point.key)
            for i in range(m.repeats):
                record["repeats"].append(self._window(workload, point, i, meters, run.get("idle")))
            record["codecarbon"] = sidecar.end_point()
        except torch.OutOfMemoryError as exc:
            record.update(status="oom", error=_first_line(exc))
        except NonFiniteLoss as exc:
            record.update(status="nan", error=str(exc))
        except MeterError as exc:
            record.update(status="meter-error", error=str(exc))
        except (KeyboardInterrupt, Interrupted, UserError):
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
            if record["status"] == "oom":
                workload = None
                _free(self.device)
        return record

    def _inputs(self, point: Point, tokenizer, vocab: int) -> Inputs:
        from carbonbench.opt.tokenizer import encode_prompts, read_prompts, synthetic_prompts

        length = point.seq_len if point.workload == "train" else point.prompt_tokens
        prompts = self.scenario.workloads.prompts
        if point.workload != "train" and tokenizer is not None and prompts:
            texts = read_prompts(prompts)
            ids, mask, words, tokens = encode_prompts(tokenizer, texts, point.batch_size, length)
            return Inputs(ids.to(self.device), mask.to(self.device), words, tokens)
        ids = synthetic_prompts(point.batch_size, length, vocab, seed=self.scenario.seed)
        return Inputs(ids.to(self.device))

    def _workload(self, model, point: Point, inputs: Inputs, training) -> Workload:
        sync = _sync_fn(self.device)
        if point.workload == "train":
            autocast = None if self.dtype == torch.float32 else self.dtype
            return WORKLOADS["train"](
                model, point, inputs, sync,
                lr=training.lr, autocast_dtype=autocast, recompute=training.activation_checkpointing,
            )
        return WORKLOADS[point.workload](model, point, inputs, sync)

    def _warm_up(self, workload: Workload, m: MeasurementConfig) -> dict:
        sync = _sync_fn(self.device)
        steps, t0 = 0, time.perf_counter()
        while steps < m.warmup_steps or time.perf_counter() - t0 < m.warmup_s:
            workload.step()
            steps += 1
        sync()
        workload.check()
        return {"steps": steps, "duration_s": time.perf_counter() - t0}

    def _window(self, workload: Workload, point: Point, repeat: int, meters: MeterSet, idle: Optional[dict]) -> dict:
        m = self.scenario.measurement
        sync = _sync_fn(self.device)
        # A window shorter than ~10 meter updates measures the update grid, not the work.
        min_s = max(m.min_seconds, 10 * meters.resolution_s)
        flags = ["extended-window"] if min_s > m.min_seconds else []
        latencies: list[float] = []
        extras: dict[str, list[float]] = {}
        with meters.window(f"{point.key}#r{repeat}") as w:
            t0 = time.perf_counter()
            while True:
                s0 = time.perf_counter()
                for k, v in workload.step().items():
                    extras.setdefault(k, []).append(v)
                sync()
                latencies.append(time.perf_counter() - s0)
                if time.perf_counter() - t0 >= min_s:
                    break
        workload.check()
        meas: Measurement = w.measurement
        steps = len(latencies)
        rep = {
            "repeat": repeat,
            "steps": steps,
            "tokens": steps * workload.tokens_per_step,
            "flops": steps * workload.flops_per_step,
            **meas.as_dict(),
            "energy_method": meas.method,
            "latency_s": _percentiles(latencies),
        }
        rep["flags"] = flags + list(meas.flags)
        rep.pop("label", None)
        rep["active_energy_j"] = _active_energy(meas, idle)
        for k, values in extras.items():
            rep[k] = statistics.fmean(values)
        return rep


def run_scenario(scenario: Scenario, out_dir: Path, **kwargs) -> RunOutcome:
    return Runner(scenario, out_dir, **kwargs).run()


# -- helpers ------------------------------------------------------------------------
def _build_meters(device: torch.device, m: MeasurementConfig) -> MeterSet:
    from carbonbench.meters.select import build_meter_set

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


def _measure_idle(meters: MeterSet, seconds: float) -> dict:
    with meters.window("idle") as w:
        time.sleep(seconds)
    meas = w.measurement
    power = {c.component: (c.energy_j / meas.duration_s if c.energy_j is not None and meas.duration_s > 0 else None) for c in meas.components}
    method = {c.component: c.method for c in meas.components}
    return {"duration_s": meas.duration_s, "power_w": power, "method": method}


def _active_energy(meas: Measurement, idle: Optional[dict]) -> Optional[float]:
    """Energy above idle: per component, never below zero; None if idle is unknown."""
    if not idle:
        return None
    total, known = 0.0, False
    for c in meas.components:
        idle_w = idle["power_w"].get(c.component)
        if c.energy_j is None or idle_w is None:
            continue
        total += max(c.energy_j - idle_w * meas.duration_s, 0.0)
        known = True
    return total if known else None


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


def _sync(device: torch.device) -> None:
    _sync_fn(device)()


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


def _latest_run(out_dir: Path, fp: str) -> Optional[tuple[Path, dict]]:
    best = None
    for f in sorted(out_dir.glob("*.json")):
        try:
            run = read_run(f)
        except UserError:
            continue
        if run.get("fingerprint") == fp and (best is None or run["started_utc"] > best[1]["started_utc"]):
            best = (f, run)
    return best


def _read_timeline(path: Path) -> list[dict]:
    import csv

    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _label_timeline(rows: list[dict], points: list[dict]) -> list[dict]:
    """Tag each sample with the point window it fell in, so reports can draw boundaries."""
    spans = []
    for p in points:
        for rep in p.get("repeats", []):
            start = rep.get("start_unix_s")
            if start is not None:
                spans.append((start, start + rep["duration_s"], f"{p['key']}#r{rep['repeat']}"))
    spans.sort()
    starts = [s[0] for s in spans]
    out = []
    for row in rows:
        i = bisect.bisect_right(starts, row["unix_s"]) - 1
        inside = i >= 0 and row["unix_s"] <= spans[i][1]
        out.append({**row, "window": spans[i][2] if inside else ""})
    return out


def _point_of(record: dict) -> Point:
    return Point(**{k: record[k] for k in ("model", "workload", "batch_size", "prompt_tokens", "new_tokens", "seq_len")})


def _raise_interrupt(signum, frame):
    raise Interrupted(signum)


def _safe_call(fn, warnings: list) -> Any:
    try:
        return fn()
    except Exception as exc:  # codecarbon must never cost us the measurements
        warnings.append(f"codecarbon: {exc}")
        return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _human(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.1f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
