"""The run's forecast against its actual wall time, for the shipped scenarios that run on a CPU.

    python benchmarks/forecast_accuracy.py --out /tmp/fc            # all cases below
    python benchmarks/forecast_accuracy.py --out /tmp/fc --only opt-125m-quick
    python benchmarks/forecast_accuracy.py --out /tmp/fc --base /tmp/base-tree   # + main's forecast

Each case is one ``carbonbench run --device cpu`` in a subprocess (threads: the scenario's
default, auto). Its forecast is the line the run itself logs ("N points, estimated ...");
the actual is the run's span in its run file (started_utc to finished_utc: from just
before the forecast is printed to the end, so model builds and the idle baseline in),
and, beside it, the subprocess's whole wall time (with the start-up the forecast comes
after). The ratio is forecast / actual: the target is between 0.5 and 2.

The shipped scenarios sized for GPUs take hours on a CPU, so they are cut to subsets
(``SUBSETS``: a few models, batch 1, fewer new tokens) and run with ``--quick``; the
table says which. ``--base DIR`` (a tree of main's code, e.g. ``git archive <base> | tar
-x -C DIR``) adds main's forecast of the same subset for comparison: its probe (a 256²
matmul at torch's default threads) run under PYTHONPATH=DIR, and, with
``--base-actual``, main's own run of the default scenario (torch's default threads).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from carbonbench import scenario as sc  # noqa: E402

# name -> (shipped scenario, changes to its plain form or None, --quick)
SUBSETS = {
    "opt-125m": ("opt-125m", None, False),
    "opt-125m-quick": ("opt-125m", None, True),
    "bench-engines-cpu-quick": ("bench-engines-cpu", None, True),
    "opt-1.3b-subset-quick": (
        "opt-1.3b",
        {
            "batch_sizes": [1],
            "workloads": {"prefill": {"prompt_tokens": [128]}, "decode": {"prompt_tokens": [128], "new_tokens": [4]}},
        },
        True,
    ),
    "opt-sizes-subset-quick": (
        "opt-sizes",
        {
            "models": ["opt-125m", "opt-350m"],
            "batch_sizes": [1],
            "workloads": {"prefill": {"prompt_tokens": [512]}, "decode": {"prompt_tokens": [512], "new_tokens": [16]}},
        },
        True,
    ),
    "opt-train-subset-quick": (
        "opt-train",
        {"models": ["opt-125m"], "batch_sizes": [1], "workloads": {"train": {"seq_len": [512]}}},
        True,
    ),
}
FORECAST = re.compile(r"(\d+) points, estimated ([\d.]+) (s|min|h) from FLOPs at a probed ([^ ]+) GFLOP/s")
UNIT_S = {"s": 1, "min": 60, "h": 3600}


def scenario_file(name: str, out: Path) -> Path:
    shipped, changes, _ = SUBSETS[name]
    path = ROOT / "scenarios" / f"{shipped}.yaml"
    if changes is None:
        return path
    data = sc.load(path).to_dict()
    for key, value in changes.items():
        if key == "workloads":
            data["workloads"] = {k: {**(data["workloads"].get(k) or {}), **v} for k, v in value.items()}
        else:
            data[key] = value
    data["name"] = name
    if data["measurement"].get("threads") == "auto":  # the default: left out, so that main's code reads the file
        del data["measurement"]["threads"]
    target = out / f"{name}.yaml"
    target.write_text(yaml.safe_dump(data, sort_keys=False))
    return target


def run_case(path: Path, quick: bool, out: Path, python: str, env: dict | None = None) -> dict:
    cmd = [python, "-m", "carbonbench", "run", str(path), "--device", "cpu", "--out", str(out)]
    cmd += ["--quick"] if quick else []
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    found = FORECAST.search(done.stderr)
    forecast_s = float(found.group(2)) * UNIT_S[found.group(3)] if found else None
    runs = sorted(out.glob("*.json"), key=lambda p: p.stat().st_mtime)
    points_s, threads, span_s = None, None, None
    if runs:
        record = json.loads(runs[-1].read_text())
        points_s = sum((p.get("finished_unix_s") or 0) - (p.get("started_unix_s") or 0) for p in record["points"])
        span_s = (
            datetime.fromisoformat(record["finished_utc"]) - datetime.fromisoformat(record["started_utc"])
        ).total_seconds()
        threads = record["environment"].get("torch_threads")
    return {
        "rc": done.returncode,
        "wall_s": wall,
        "points_s": points_s,
        "span_s": span_s,
        "forecast_s": forecast_s,
        "probed": found.group(4) if found else None,
        "threads": threads,
        "load_1m": load,
        "stderr_tail": done.stderr[-400:] if done.returncode else "",
    }


def base_forecast(path: Path, quick: bool, base: Path) -> float:
    """main's forecast of the same sweep: its code, its probe, torch's default threads."""
    code = (
        "import sys, torch; from carbonbench import scenario as sc; from carbonbench.forecast import sweep_forecast;"
        f"s = sc.load({str(path)!r}); s = s.quick() if {quick} else s;"
        "print(sweep_forecast(s, sc.expand(s), torch.device('cpu'), torch.float32).total_s)"
    )
    env = {**os.environ, "PYTHONPATH": str(base)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=base)
    return float(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--only", nargs="+", choices=sorted(SUBSETS), default=list(SUBSETS))
    parser.add_argument("--base", type=Path, default=None, help="a tree of main's code, for its forecast")
    parser.add_argument("--base-actual", action="store_true", help="also run main's code on opt-125m-quick")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = {}
    for name in args.only:
        path = scenario_file(name, args.out)
        quick = SUBSETS[name][2]
        row = run_case(path, quick, args.out / name, sys.executable)
        if args.base:
            row["base_forecast_s"] = base_forecast(path, quick, args.base)
        rows[name] = row
        print(name, json.dumps(row), file=sys.stderr, flush=True)
    if args.base and args.base_actual:
        env = {**os.environ, "PYTHONPATH": str(args.base)}
        path = scenario_file("opt-125m-quick", args.out)
        rows["main: opt-125m-quick"] = run_case(path, True, args.out / "main-opt-125m-quick", sys.executable, env)
        rows["main: opt-125m-quick"]["base_forecast_s"] = rows["main: opt-125m-quick"]["forecast_s"]
    (args.out / "forecast_accuracy.json").write_text(json.dumps(rows, indent=1))
    print(f"load average at the end {[round(x, 2) for x in os.getloadavg()]}\n")
    print(
        "| case | threads | forecast | run span | forecast / span | wall (with start-up) | forecast / wall | main's forecast | main's / span |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    nan = float("nan")
    for name, r in rows.items():
        f, span, base = r["forecast_s"] or nan, r["span_s"] or nan, r.get("base_forecast_s") or nan
        print(
            f"| {name} | {r['threads']} | {f:.0f} s | {span:.0f} s | {f / span:.2f} | {r['wall_s']:.0f} s "
            f"(load {r['load_1m']:.1f}) | {f / r['wall_s']:.2f} | {base:.0f} s | {base / span:.2f} |"
        )


if __name__ == "__main__":
    main()
