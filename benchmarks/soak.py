"""Soak: one long run through the real Runner and meters, watching memory and the samplers.

Not a CI test. A single ``Runner.run()`` measures one point (default: opt-tiny decode on
CPU) over and over (``repeats`` windows of ``--window`` seconds, sized to last
``--seconds``), exactly as ``carbonbench run`` would, with the background samplers on.
A monitor thread records, every ``--every`` seconds: the process RSS (psutil), the
sampler threads alive (``threading.enumerate()``, names ``carbonbench-sampler-*``),
and the Python thread count. At the end it writes a JSON summary:

- RSS at start, end and max, and its least-squares slope in MB/hour, over the whole run
  and after a warm-up (``--settle`` seconds), so allocator warm-up is not read as a leak;
- whether every sampler thread seen at the start of the measured windows stayed alive
  until the last one ended;
- windows measured, points and repeats not "ok", run warnings and sampler errors;
- how many power-timeline rows went to the timeline file, and how many the meters still
  held at the end (the runner moves them to disk after every window, so this stays small
  however long the run).

    python benchmarks/soak.py                       # one hour (default)
    python benchmarks/soak.py --seconds 300 --out /tmp/soak
    python benchmarks/soak.py --model opt-125m --workload prefill --device cuda
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("CARBONBENCH_MODEL_DIR", str(Path(__file__).resolve().parents[1] / "model"))

import psutil  # noqa: E402
import torch  # noqa: E402

from carbonbench import scenario as sc  # noqa: E402
from carbonbench.meters.select import build_meter_set  # noqa: E402
from carbonbench.runner import Hooks, Runner  # noqa: E402

SAMPLER_PREFIX = "carbonbench-sampler-"
MB = 1024 * 1024


def scenario_text(args: argparse.Namespace, repeats: int) -> str:
    workload = {
        "decode": f"decode: {{prompt_tokens: [{args.prompt}], new_tokens: [{args.new}]}}",
        "prefill": f"prefill: {{prompt_tokens: [{args.prompt}]}}",
        "train": f"train: {{seq_len: [{args.prompt}]}}",
    }[args.workload]
    return (
        "name: soak\n"
        f"models: [{args.model}]\n"
        f"batch_sizes: [{args.batch}]\n"
        f"device: {args.device}\n"
        f"workloads: {{{workload}}}\n"
        f"measurement: {{warmup_steps: 2, warmup_s: 1, min_seconds: {args.window}, repeats: {repeats},"
        f" sample_interval_s: {args.sample_interval}, idle_baseline_s: 2, codecarbon: {str(args.codecarbon).lower()}}}\n"
    )


def slope_mb_per_hour(samples: list[dict], since_s: float = 0.0) -> float | None:
    pts = [(s["t_s"], s["rss_mb"]) for s in samples if s["t_s"] >= since_s]
    if len(pts) < 3:
        return None
    n = len(pts)
    mt = sum(t for t, _ in pts) / n
    mr = sum(r for _, r in pts) / n
    var = sum((t - mt) ** 2 for t, _ in pts)
    if var == 0:
        return None
    return sum((t - mt) * (r - mr) for t, r in pts) / var * 3600.0


class Monitor(threading.Thread):
    def __init__(self, every_s: float):
        super().__init__(name="soak-monitor", daemon=True)
        self.every_s = every_s
        self.samples: list[dict] = []
        self.stop_event = threading.Event()
        self.t0 = time.perf_counter()
        self.proc = psutil.Process()

    def sample(self) -> dict:
        threads = threading.enumerate()
        samplers = sorted(t.name for t in threads if t.name.startswith(SAMPLER_PREFIX) and t.is_alive())
        row = {
            "t_s": round(time.perf_counter() - self.t0, 3),
            "rss_mb": self.proc.memory_info().rss / MB,
            "threads": len(threads),
            "samplers": samplers,
        }
        self.samples.append(row)
        return row

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.sample()
            self.stop_event.wait(self.every_s)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3600.0, help="how long to run (default: one hour)")
    ap.add_argument("--out", type=Path, default=Path("results/soak"), help="run file, timeline and summary go here")
    ap.add_argument("--every", type=float, default=5.0, help="seconds between RSS/thread samples")
    ap.add_argument("--window", type=float, default=5.0, help="seconds per measured window")
    ap.add_argument(
        "--settle",
        type=float,
        default=None,
        help="warm-up excluded from the settled slope (default: 10%% of --seconds, at least 30 s)",
    )
    ap.add_argument("--model", default="opt-tiny")
    ap.add_argument("--workload", choices=["decode", "prefill", "train"], default="decode")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--prompt", type=int, default=32)
    ap.add_argument("--new", type=int, default=16)
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    ap.add_argument("--sample-interval", type=float, default=0.1, help="meter sampler interval (s)")
    ap.add_argument("--codecarbon", action="store_true", help="run the codecarbon sidecar too")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: be kind to neighbours)")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    settle = args.settle if args.settle is not None else max(30.0, 0.1 * args.seconds)
    repeats = max(1, math.ceil(args.seconds / args.window))
    path = args.out / "soak.yaml"
    path.write_text(scenario_text(args, repeats))
    scenario = sc.load(path)

    logs: list[str] = []
    runner = Runner(
        scenario, args.out, device=args.device, hooks=Hooks(log=lambda m: (logs.append(m), print(m, flush=True)))
    )
    meters = build_meter_set(runner.device, scenario.measurement)
    runner._meters = meters  # keep a handle: the samples still held in memory are counted at the end

    monitor = Monitor(args.every)
    monitor.start()
    started = time.perf_counter()
    error = None
    try:
        outcome = runner.run()
        run = outcome.run
    except BaseException as exc:  # keep the figures of a soak that died, and say why
        error = f"{type(exc).__name__}: {exc}"
        run = None
    finally:
        monitor.stop_event.set()
        monitor.join()
    final = monitor.sample()
    monitor.samples.pop()  # after the run: reported on its own, not part of the slope
    elapsed = time.perf_counter() - started

    samples = monitor.samples
    seen = [s for s in samples if s["samplers"]]
    expected = max((set(s["samplers"]) for s in seen), key=len, default=set())
    # The samplers start with the meters (before the idle baseline) and stop when the run
    # closes them: between the first and the last tick that saw any, all must be alive.
    first = samples.index(seen[0]) if seen else 0
    last = samples.index(seen[-1]) if seen else -1
    gaps = [s["t_s"] for s in samples[first : last + 1] if set(s["samplers"]) != expected]
    rss = [s["rss_mb"] for s in samples]
    points = run["points"] if run else []
    repeats_done = [r for p in points for r in p.get("repeats", [])]
    in_memory = meters.timeline()
    on_disk = _count_rows(args.out / run["timeline_file"]) if run else None
    settled = slope_mb_per_hour(samples, settle)
    summary = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "device": str(runner.device),
        "torch_threads": args.threads,
        "cpu_count": os.cpu_count(),
        "load_average_at_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "point": points[0]["key"] if points else None,
        "seconds_requested": args.seconds,
        "seconds_elapsed": round(elapsed, 1),
        "windows_planned": repeats,
        "windows_measured": len(repeats_done),
        "window_s": args.window,
        "tokens": sum(r.get("tokens") or 0 for r in repeats_done),
        "energy_j": sum(r.get("energy_j") or 0 for r in repeats_done),
        "energy_methods": sorted({r.get("energy_method") for r in repeats_done} - {None}),
        "rss_mb": {
            "start": round(rss[0], 1),
            "end": round(rss[-1], 1),
            "max": round(max(rss), 1),
            "min": round(min(rss), 1),
            "slope_mb_per_hour": _round(slope_mb_per_hour(samples)),
            "settled_after_s": settle,
            "settled_slope_mb_per_hour": _round(settled),
            "settled_start": _round(next((s["rss_mb"] for s in samples if s["t_s"] >= settle), None)),
            "after_run": round(final["rss_mb"], 1),
        },
        "samplers": {
            "names": sorted(expected),
            "alive_throughout": bool(expected) and not gaps,
            "ticks_checked": max(0, last - first + 1),
            "ticks_with_a_sampler_missing": gaps,
            "alive_after_run": final["samplers"],  # should be [] (stopped by meters.close)
        },
        "threads": {"max": max(s["threads"] for s in samples), "end": final["threads"]},
        "timeline_rows_on_disk": on_disk,
        "timeline_rows_per_hour": round(on_disk / elapsed * 3600) if on_disk and elapsed else None,
        "timeline_rows_in_memory_at_end": len(in_memory),
        "timeline_bytes_in_memory_at_end": _deep_size(in_memory),
        "errors": {
            "run": error,
            "status": run["status"] if run else None,
            "points_not_ok": [(p["key"], p["status"], p.get("error")) for p in points if p["status"] != "ok"],
            "repeats_not_ok": sum(1 for r in repeats_done if r.get("status", "ok") != "ok"),
            "warnings": run.get("warnings", []) if run else [],
            "meter_errors": [m for m in (run.get("meters") or []) if m.get("errors")] if run else [],
        },
        "run_file": str(outcome.path) if run else None,
        "samples": samples,
    }
    out = args.out / "soak-summary.json"
    out.write_text(json.dumps(summary, indent=1) + "\n")
    brief = {k: v for k, v in summary.items() if k != "samples"}
    print(json.dumps(brief, indent=1))
    print(f"summary: {out}")
    ok = error is None and summary["samplers"]["alive_throughout"] and not summary["errors"]["points_not_ok"]
    return 0 if ok else 1


def _deep_size(obj, seen=None) -> int:
    """sys.getsizeof over containers (each object counted once): a row's real footprint."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    size = sys.getsizeof(obj)
    if isinstance(obj, dict):
        size += sum(_deep_size(k, seen) + _deep_size(v, seen) for k, v in obj.items())
    elif isinstance(obj, (list, tuple, set)):
        size += sum(_deep_size(v, seen) for v in obj)
    return size


def _count_rows(path: Path) -> int:
    with path.open("rb") as f:
        return max(0, sum(1 for _ in f) - 1)  # less the header


def _round(value, digits=2):
    return None if value is None else round(value, digits)


if __name__ == "__main__":
    sys.exit(main())
