"""What the background samplers cost: the same workload with sampling on and off.

Runs an OPT decode (default opt-tiny on CPU, opt-125m on CUDA) or a matmul loop in
timed trials, alternating sampler on and off within one process. Rounds go ABBA
(on-off, off-on, ...) so a slow drift (thermal, a neighbour's job) hits both modes
alike. Each round gives one paired ratio, throughput on / throughput off; the report is
the mean ratio with its 95% CI over rounds. Overhead = 1 - ratio; the target is < 1%.

    python benchmarks/sampler_overhead.py                      # CPU, < 1 min
    python benchmarks/sampler_overhead.py --device cuda --out overhead.json

"On" is exactly what a run uses: ``build_meter_set`` with the scenario's sampler
interval (NVML on a GPU; the CPU estimator's utilisation/memory sampler, or RAPL, on
the host). "Off" is the same meters with no sampler thread.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from carbonbench import opt  # noqa: E402
from carbonbench.meters.cpu import cpu_model_name  # noqa: E402
from carbonbench.meters.select import build_meter_set  # noqa: E402
from carbonbench.opt.tokenizer import synthetic_prompts  # noqa: E402
from carbonbench.scenario import MeasurementConfig  # noqa: E402
from carbonbench.stats import ci95  # noqa: E402


def decode_workload(model_name: str, device: torch.device, batch: int, prompt: int, new: int):
    """One step = one decode step (batch tokens): fine-grained, so trials end on time.
    A prefill starts each sequence of ``new`` tokens, as in a real decode point."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = opt.load(model_name, device=device, dtype=dtype)
    model.eval()
    ids = synthetic_prompts(batch, prompt, model.arch.vocab_size).to(device)
    state = {"cache": None, "pos": prompt + new, "token": None}

    def step() -> int:
        if state["pos"] >= prompt + new:
            state["cache"] = model.new_cache(batch, prompt + new)
            state["token"] = opt.prefill(model, ids, state["cache"]).argmax(-1, keepdim=True)
            state["pos"] = prompt
        logits = opt.decode_step(model, state["token"], state["cache"], state["pos"])
        state["token"] = logits.argmax(-1, keepdim=True)
        state["pos"] += 1
        return batch

    return step, f"{model_name} decode, batch {batch}, prompt {prompt}, {new} new tokens per sequence"


def matmul_workload(device: torch.device, n: int):
    a = torch.randn(n, n, device=device)

    def step() -> int:
        a @ a
        return 1

    return step, f"{n}x{n} float32 matmul (throughput in matmuls/s)"


def trial(step, device: torch.device, interval_s: float, sampling: bool, seconds: float) -> dict:
    meters = build_meter_set(device, MeasurementConfig(sample_interval_s=interval_s), sample=sampling)
    meters.start()
    try:
        units = 0
        with meters.window("trial") as w:
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                units += step()
        samples = sum(len(m.timeline()) for m in meters.meters)
    finally:
        meters.close()
    d = w.measurement.duration_s
    sampler_cpu_s = sum(m.sampler.thread_cpu_s for m in meters.meters if hasattr(m, "sampler"))
    return {
        "sampling": sampling,
        "units": units,
        "duration_s": d,
        "throughput": units / d,
        "samples": samples,
        "sampler_cpu_s": sampler_cpu_s,
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--workload", default="decode", choices=["decode", "matmul"])
    p.add_argument("--model", default=None, help="model card (default: opt-tiny on CPU, opt-125m on CUDA)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--prompt-tokens", type=int, default=16)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--matmul-n", type=int, default=256)
    p.add_argument("--rounds", type=int, default=20, help="on/off pairs")
    p.add_argument("--seconds", type=float, default=0.75, help="length of each trial")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: on a shared machine, OpenMP threads that "
        "spin-wait for a busy core make the throughput swing by 2-4x; 0 = torch's default)",
    )
    p.add_argument("--interval", type=float, default=0.1, help="sampler interval (s)")
    p.add_argument("--out", type=Path, default=None, help="write the result as JSON here")
    args = p.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(
        "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device.replace("auto", "cpu")
    )
    if args.workload == "decode":
        model = args.model or ("opt-125m" if device.type == "cuda" else "opt-tiny")
        step, what = decode_workload(model, device, args.batch, args.prompt_tokens, args.new_tokens)
    else:
        step, what = matmul_workload(device, args.matmul_n)
    for _ in range(3):  # warm-up: allocator, kernels, caches
        step()
    trial(step, device, args.interval, False, min(args.seconds, 0.5))

    trials, ratios = [], []
    for r in range(args.rounds):
        order = (True, False) if r % 2 == 0 else (False, True)
        pair = {s: trial(step, device, args.interval, s, args.seconds) for s in order}
        trials += [pair[order[0]], pair[order[1]]]
        ratios.append(pair[True]["throughput"] / pair[False]["throughput"])
        print(
            f"round {r + 1}/{args.rounds}: on {pair[True]['throughput']:.1f}/s, off {pair[False]['throughput']:.1f}/s, "
            f"ratio {ratios[-1]:.4f}, samples {pair[True]['samples']}",
            flush=True,
        )

    mean, std, half = ci95(ratios)
    median = statistics.median(ratios)
    on = [t for t in trials if t["sampling"]]
    on_s = sum(t["duration_s"] for t in on)
    # The sampler threads' own CPU time per second: a bound on what they can take from
    # the workload (GIL included), and immune to a neighbour's load, unlike the ratio.
    cpu_share = sum(t["sampler_cpu_s"] for t in on) / on_s
    result = {
        "workload": what,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"{cpu_model_name()}, {os.cpu_count()} CPUs",
        "torch_threads": torch.get_num_threads(),
        "meters": [m["name"] for m in build_meter_set(device, MeasurementConfig(), sample=False).describe()],
        "rounds": args.rounds,
        "trial_s": args.seconds,
        "sampler_interval_s": args.interval,
        "samples_per_s_on": sum(t["samples"] for t in on) / on_s,
        "sampler_cpu_share_pct": 100 * cpu_share,
        "ratio_median": median,
        "ratio_mean": mean,
        "ratio_std": std,
        "ratio_ci95": half,
        "overhead_pct": 100 * (1 - mean),
        "overhead_ci95_pct": 100 * half,
        "ratios": ratios,
        "trials": trials,
    }
    print(
        f"\n{what} on {result['device_name']} ({device}), {args.rounds} ABBA rounds of {args.seconds:g} s, "
        f"sampler every {args.interval:g} s ({result['samples_per_s_on']:.1f} rows/s)"
    )
    print(
        f"throughput ratio on/off = {mean:.4f} ± {half:.4f} (mean, 95% CI; std {std:.4f}; median {median:.4f}) "
        f"-> overhead {result['overhead_pct']:+.2f}% ± {result['overhead_ci95_pct']:.2f}%"
    )
    print(f"sampler threads' own CPU time: {result['sampler_cpu_share_pct']:.3f}% of one core")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
