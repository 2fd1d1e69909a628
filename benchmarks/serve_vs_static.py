"""J per output token under a served load against a static decode batch of the same mean size.

One carbonbench run holds both, side by side, measured by the same meters:

- serve: closed loop with ``--clients`` clients and ``max_batch`` = clients, so the batch
  stays near full; prompt and answer lengths uniform in [16, 64] and [8, 24] (seeded);
- static: a decode batch of the serve point's measured mean batch size (rounded), with
  the stream's mean prompt and answer lengths (40 and 16), prefill included in its
  window as the served requests' prefills are in theirs.

Both windows count output tokens only, so J/token is J per output token in both.
The machine is shared: the load average is printed before and after, and the figures
are ratios within one run. Energy on a machine without RAPL is the CPU estimate (its
method is printed).

    python benchmarks/serve_vs_static.py               # opt-125m on the CPU, ~2-3 min
    python benchmarks/serve_vs_static.py --clients 2 --requests 16
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def scenario(model: str, clients: int, batch: int, requests: int, repeats: int) -> dict:
    return {
        "name": "serve-vs-static",
        "models": [model],
        "device": "cpu",
        "workloads": {
            "decode": {"prompt_tokens": [40], "new_tokens": [16], "batch_sizes": [batch]},
            "serve": {
                "arrival": "closed",
                "concurrency": [clients],
                "requests": requests,
                "prompt_tokens": {"dist": "uniform", "min": 16, "max": 64},
                "output_tokens": {"dist": "uniform", "min": 8, "max": 24},
                "max_batch": [clients],
            },
        },
        "measurement": {
            "warmup_steps": 1,
            "warmup_s": 0.5,
            "min_seconds": 3.0,
            "repeats": repeats,
            "idle_baseline_s": 2.0,
            "codecarbon": False,
        },
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="opt-125m")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--requests", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)

    from carbonbench import results
    from carbonbench import scenario as sc
    from carbonbench.runner import Runner

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="serve-vs-static-") as tmp:
        path = Path(tmp) / "scenario.yaml"
        # The static batch is the serve point's mean batch; a closed loop of N clients keeps
        # it near N, less the prefill gaps, so the batch is fixed at N first and checked below.
        path.write_text(yaml.safe_dump(scenario(args.model, args.clients, args.clients, args.requests, args.repeats)))
        outcome = Runner(sc.load(path), Path(tmp) / "out").run()
        df = results.load([outcome.path])
    load_after = os.getloadavg()
    ok = df[df["status"] == "ok"]
    serve, static = ok[ok["workload"] == "serve"], ok[ok["workload"] == "decode"]
    s_jpt, d_jpt = serve["joules_per_token"].mean(), static["joules_per_token"].mean()
    s_tps, d_tps = serve["tokens_per_s"].mean(), static["tokens_per_s"].mean()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in load_before)}")
    print(
        f"{args.model} on the CPU, {args.repeats} repeats each, energy method: {', '.join(sorted(set(ok['energy_method'])))}"
    )
    print()
    print("| point | mean batch | J/output token | output tokens/s | TPOT p50 ms |")
    print("|---|---:|---:|---:|---:|")
    print(
        f"| serve, closed loop {args.clients} clients, max_batch {args.clients} | {serve['mean_batch'].mean():.2f} | "
        f"{s_jpt:.4g} | {s_tps:.4g} | {serve['tpot_p50_s'].mean() * 1000:.4g} |"
    )
    print(
        f"| static decode b{args.clients} p40 n16 | {args.clients} | {d_jpt:.4g} | {d_tps:.4g} | "
        f"{static['tpot_s'].mean() * 1000:.4g} |"
    )
    print()
    print(f"served / static J per output token: {s_jpt / d_jpt:.3f}")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in load_after)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
