"""Torch CPU threads against speed: the measurement behind ``measurement.threads: auto``.

    python benchmarks/threads.py                       # opt-125m, 1..N threads, 5 rounds
    python benchmarks/threads.py --threads 1 2 4 --rounds 7 --seconds 1.5

For each thread count it runs the default scenario's points on opt-125m (prefill b1 p128,
decode b1 p64+16, train b1 s128, the native engine, float32) and the forecast's old probe
(a 256² float32 matmul), each for about ``--seconds``. Thread counts are interleaved
round by round, in an order that alternates (1,2,..,N then N,..,2,1), so that the
neighbours' load drifting during the run hits every count alike. It prints, per
(workload, threads), the median tokens/s (matmul: GFLOP/s) over rounds with min and max,
and the median of the per-round ratio to the 1-thread figure, with the host's physical and
logical cores and the load average before and after. ``--json PATH`` saves the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import psutil
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from carbonbench import opt  # noqa: E402
from carbonbench.config import build  # noqa: E402
from carbonbench.scenario import Point, TrainConfig  # noqa: E402
from carbonbench.workloads import Inputs, make_workload  # noqa: E402

POINTS = [
    Point("opt-125m", "prefill", 1, prompt_tokens=128),
    Point("opt-125m", "decode", 1, prompt_tokens=64, new_tokens=16),
    Point("opt-125m", "train", 1, seq_len=128),
]


def timed(step, seconds: float) -> tuple[int, float]:
    step()  # one untimed step: a thread count's first step pays for its pool
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step()
        steps += 1
    return steps, time.perf_counter() - t0


def workloads(model) -> dict[str, tuple]:
    train = build(TrainConfig, {"seq_len": [128]}, source="threads.py", path="train")
    out = {}
    for p in POINTS:
        length = p.seq_len or p.prompt_tokens
        ids = torch.randint(0, model.arch.vocab_size, (p.batch_size, length))
        w = make_workload(p, model, Inputs(ids), lambda: None, None, train, torch.float32)
        out[p.workload] = (w.step, w.tokens_per_step)
    n = 256
    a, b = torch.randn(n, n), torch.randn(n, n)
    out["matmul256"] = (lambda: a @ b, 2 * n**3 / 1e9)  # "tokens" per step: GFLOP
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    cores = psutil.cpu_count(logical=True) or 1
    parser.add_argument("--threads", type=int, nargs="+", default=list(range(1, cores + 1)))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0, help="timed seconds per (workload, threads, round)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    load_before = os.getloadavg()
    torch.manual_seed(0)
    model = opt.load("opt-125m")
    runs = workloads(model)
    rates: dict[tuple[str, int], list[float]] = {}
    for r in range(args.rounds):
        order = args.threads if r % 2 == 0 else list(reversed(args.threads))
        for t in order:
            torch.set_num_threads(t)
            for name, (step, per_step) in runs.items():
                steps, elapsed = timed(step, args.seconds)
                rates.setdefault((name, t), []).append(steps * per_step / elapsed)
        print(f"round {r + 1}/{args.rounds} done, load {os.getloadavg()[0]:.2f}", file=sys.stderr)
    load_after = os.getloadavg()
    host = {
        "cpu_physical_cores": psutil.cpu_count(logical=False),
        "cpu_logical_cores": cores,
        "load_avg_before": [round(x, 2) for x in load_before],
        "load_avg_after": [round(x, 2) for x in load_after],
        "rounds": args.rounds,
        "seconds": args.seconds,
        "torch": torch.__version__,
    }
    print(
        f"host: {host['cpu_physical_cores']} physical / {cores} logical cores; load average before "
        f"{host['load_avg_before']}, after {host['load_avg_after']}; {args.rounds} interleaved rounds of "
        f"{args.seconds:g} s per cell\n"
    )
    print("| workload | threads | median rate | min | max | median ratio to 1 thread (min-max) |")
    print("|---|---:|---:|---:|---:|---|")
    rows = []
    for name in runs:
        base = rates.get((name, 1))
        for t in args.threads:
            xs = rates[(name, t)]
            unit = "GFLOP/s" if name.startswith("matmul") else "tok/s"
            ratio = ""
            if base:
                per_round = [x / b for x, b in zip(xs, base)]
                ratio = f"{statistics.median(per_round):.2f}x ({min(per_round):.2f}-{max(per_round):.2f})"
            med = statistics.median(xs)
            print(f"| {name} | {t} | {med:,.1f} {unit} | {min(xs):,.1f} | {max(xs):,.1f} | {ratio} |")
            rows.append({"workload": name, "threads": t, "unit": unit, "rates": xs, "median": med})
    if args.json:
        args.json.write_text(json.dumps({"host": host, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
