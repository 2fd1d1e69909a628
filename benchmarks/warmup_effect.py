"""Measuring the measurer: what compile time and warm-up do to a short run.

For each engine variant, a fresh model runs N steps of one workload from cold (no
warm-up), then N more: each step is timed (device synchronised), and each block of N is
one meter window. The cold block is what a naive short benchmark would report; the warm
block is what carbonbench's windows see after its warm-up. The report gives, per variant:

- the first step's time, the second's, and the steady step (median of the warm block);
- tokens/s and J/token of the cold block against the warm block, and the error a cold
  short run would make;
- how many steps pass before a step is within 5% of the steady step.

The inductor cache starts empty (a temporary TORCHINDUCTOR_CACHE_DIR), as on a user's
first run; ``--warm-cache`` keeps the usual one, as on later runs.

    python benchmarks/warmup_effect.py                     # CPU: opt-125m decode b1 p64 n16
    python benchmarks/warmup_effect.py --workload prefill  # opt-125m prefill b1 p128
    python benchmarks/warmup_effect.py --device cuda --model opt-1.3b --steps 20
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _cold_cache(argv) -> None:
    if "--warm-cache" not in argv and "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="carbonbench-inductor-")


_cold_cache(sys.argv)  # before torch is imported: inductor reads it once

import torch  # noqa: E402

sys.path.insert(0, str(ROOT))

from carbonbench.engines import make_engine  # noqa: E402
from carbonbench.meters.select import build_meter_set  # noqa: E402
from carbonbench.opt.tokenizer import synthetic_prompts  # noqa: E402
from carbonbench.scenario import EngineConfig, MeasurementConfig, ModelEntry, Point  # noqa: E402
from carbonbench.workloads import WORKLOADS, Inputs  # noqa: E402

CPU_VARIANTS = {
    "native": {"name": "native"},
    "native+compile": {"name": "native", "compile": True},
    "transformers": {"name": "transformers"},
}
GPU_VARIANTS = {
    **CPU_VARIANTS,
    "native+compile+graphs": {"name": "native", "compile": True, "cuda_graphs": True},
}


def sync_fn(device):
    return (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)


def study(variant: str, options: dict, args, device: torch.device, meters) -> dict:
    torch._dynamo.reset()  # no compiled graph carried over from the previous variant
    engine = make_engine(EngineConfig(**options), device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = engine.load(ModelEntry.of(args.model), device, dtype, seed=0).eval()
    sync = sync_fn(device)
    if args.workload == "decode":
        point = Point(args.model, "decode", args.batch, prompt_tokens=args.prompt, new_tokens=args.new)
    else:
        point = Point(args.model, "prefill", args.batch, prompt_tokens=args.prompt)
    inputs = Inputs(synthetic_prompts(args.batch, args.prompt, model.arch.vocab_size, seed=0).to(device))
    workload = WORKLOADS[point.workload](model, point, inputs, sync, engine=engine)
    blocks = {}
    for block in ("cold", "warm"):
        times = []
        with meters.window(f"{variant}/{block}") as w:
            for _ in range(args.steps):
                s0 = time.perf_counter()
                workload.step()
                sync()
                times.append(time.perf_counter() - s0)
        meas = w.measurement
        tokens = args.steps * workload.tokens_per_step
        blocks[block] = {
            "step_s": times,
            "duration_s": meas.duration_s,
            "tokens_per_s": tokens / meas.duration_s,
            "energy_j": meas.energy_j,
            "joules_per_token": meas.energy_j / tokens if meas.energy_j is not None else None,
            "energy_method": meas.method,
        }
    workload.close()
    steady = statistics.median(blocks["warm"]["step_s"])
    cold = blocks["cold"]["step_s"]
    settle = next((i for i, t in enumerate(cold) if t <= 1.05 * steady), len(cold))
    out = {
        "variant": variant,
        "options": engine.config.options(),
        "first_step_s": cold[0],
        "second_step_s": cold[1] if len(cold) > 1 else None,
        "steady_step_s": steady,
        "steps_to_steady": settle,
        "cold": blocks["cold"],
        "warm": blocks["warm"],
        "cold_tokens_per_s_error": blocks["cold"]["tokens_per_s"] / blocks["warm"]["tokens_per_s"] - 1,
    }
    if blocks["cold"]["joules_per_token"] and blocks["warm"]["joules_per_token"]:
        out["cold_joules_per_token_error"] = blocks["cold"]["joules_per_token"] / blocks["warm"]["joules_per_token"] - 1
    return out


def markdown(rows: list[dict], args, device: torch.device) -> str:
    what = f"{args.model} {args.workload} b{args.batch} p{args.prompt}" + (
        f" n{args.new}" if args.workload == "decode" else ""
    )
    lines = [
        f"## Warm-up and compile: {what} on {device.type} ({torch.get_num_threads()} thread(s)),"
        f" {args.steps} cold steps then {args.steps} warm",
        "",
        "| variant | 1st step s | 2nd step s | steady step s | steps to steady | cold tok/s | warm tok/s | cold tok/s error | cold J/tok | warm J/tok | cold J/tok error |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        c, w = r["cold"], r["warm"]
        jc, jw = c["joules_per_token"], w["joules_per_token"]
        lines.append(
            f"| {r['variant']} | {r['first_step_s']:.3g} | {r['second_step_s']:.3g} | {r['steady_step_s']:.3g} "
            f"| {r['steps_to_steady']} | {c['tokens_per_s']:.4g} | {w['tokens_per_s']:.4g} "
            f"| {100 * r['cold_tokens_per_s_error']:+.1f}% | {jc:.4g} | {jw:.4g} "
            f"| {100 * r.get('cold_joules_per_token_error', float('nan')):+.1f}% |"
        )
    lines += ["", f"energy: {rows[0]['warm']['energy_method']} (carbonbench's meters for this device)"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default="opt-125m")
    parser.add_argument("--workload", choices=["decode", "prefill"], default="decode")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--prompt", type=int, default=None, help="default: 64 for decode, 128 for prefill")
    parser.add_argument("--new", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10, help="steps per block (cold, then warm)")
    parser.add_argument("--variants", help="comma-separated subset of " + ", ".join(GPU_VARIANTS))
    parser.add_argument("--warm-cache", action="store_true", help="keep the inductor cache of earlier runs")
    parser.add_argument("--out", type=Path, help="default: results/warmup-effect/<device>")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.prompt = args.prompt or (64 if args.workload == "decode" else 128)
    device = torch.device(args.device)
    variants = GPU_VARIANTS if device.type == "cuda" else CPU_VARIANTS
    if args.variants:
        variants = {k: variants[k] for k in args.variants.split(",")}
    meters = build_meter_set(device, MeasurementConfig(sample_interval_s=0.05))
    meters.start()
    rows = []
    try:
        for name, options in variants.items():
            print(f"{name} ...", flush=True)
            rows.append(study(name, options, args, device, meters))
            r = rows[-1]
            print(
                f"  first step {r['first_step_s']:.3g} s, steady {r['steady_step_s']:.3g} s, "
                f"cold run tokens/s {100 * r['cold_tokens_per_s_error']:+.1f}%",
                flush=True,
            )
    finally:
        meters.close()
    text = markdown(rows, args, device)
    out = args.out or ROOT / "results" / "warmup-effect" / device.type
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{args.model}-{args.workload}"
    (out / f"{stem}.json").write_text(
        json.dumps(
            {
                "args": {k: str(v) for k, v in vars(args).items()},
                "inductor_cache": os.environ.get("TORCHINDUCTOR_CACHE_DIR"),
                "torch": torch.__version__,
                "rows": rows,
            },
            indent=1,
        )
        + "\n"
    )
    (out / f"{stem}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
