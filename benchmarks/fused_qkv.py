"""What the native engine's fused_qkv does to a decode step: fused / unfused step time.

Two models with the same weights, one loaded with ``engine: {fused_qkv: true}`` (q, k
and v from one [3D, D] matmul) and one with ``fused_qkv: false`` (three [D, D] matmuls),
run the same greedy decode through NativeEngine (eager: no compile, no CUDA graphs, so
the matmuls are what differs). Each round, for each batch size, each variant prefills a
fresh cache (not timed) and then times ``--steps`` decode steps; the order of the two
variants flips every round (AB, BA, ...) to cancel drift. A round's ratio is the
fused variant's mean step time over the unfused one's; the summary is the mean of the
per-round ratios with a Student-t 95% CI (below 1: fused is faster). Both variants must
produce the same tokens, which is checked.

    python benchmarks/fused_qkv.py --threads 1                      # CPU: opt-125m, batch 1 and 8
    python benchmarks/fused_qkv.py --device cuda --dtype bfloat16   # a GPU: what the option is for
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Optional

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from carbonbench.engines import make_engine  # noqa: E402
from carbonbench.opt.tokenizer import synthetic_prompts  # noqa: E402
from carbonbench.scenario import EngineConfig, ModelEntry  # noqa: E402
from carbonbench.stats import ci95  # noqa: E402

VARIANTS = ("fused", "unfused")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def decode_steps(engine, model, ids: torch.Tensor, steps: int, sync) -> tuple[float, torch.Tensor]:
    """Prefill (untimed), then ``steps`` greedy decode steps: (mean seconds per step, tokens)."""
    B, S = ids.shape
    cache = engine.new_cache(model, B, S + steps + 1)
    token = engine.prefill(model, ids, cache).argmax(-1, keepdim=True)
    out = [token]
    sync()
    t0 = time.perf_counter()
    for i in range(steps):
        token = engine.decode_step(model, token, cache, S + i).argmax(-1, keepdim=True)
        out.append(token)
    sync()
    return (time.perf_counter() - t0) / steps, torch.cat(out, 1)


def main(argv: Optional[list[str]] = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", default="opt-125m", help="model card name, card file or checkpoint dir (default %(default)s)"
    )
    parser.add_argument("--batch-sizes", default="1,8", help="comma-separated decode batch sizes (default %(default)s)")
    parser.add_argument(
        "--prompt", type=int, default=64, help="prompt tokens before the timed steps (default %(default)s)"
    )
    parser.add_argument(
        "--steps", type=int, default=16, help="decode steps timed per variant, batch and round (default %(default)s)"
    )
    parser.add_argument(
        "--rounds", type=int, default=10, help="timed rounds, variant order flipping each round (default %(default)s)"
    )
    parser.add_argument("--warmup-rounds", type=int, default=1, help="untimed rounds first (default %(default)s)")
    parser.add_argument("--device", default="cpu", help="torch device (default %(default)s)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="model dtype (default %(default)s)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: on a shared machine more threads measure the neighbours)",
    )
    parser.add_argument("--seed", type=int, default=0, help="weights and prompts seed (default %(default)s)")
    parser.add_argument("--out", type=Path, help="also write the summary as JSON here")
    args = parser.parse_args(argv)
    if args.rounds < 2:
        parser.error("--rounds must be at least 2 (a 95%% CI needs two ratios)")

    torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    engines, models = {}, {}
    for name in VARIANTS:
        engines[name] = make_engine(EngineConfig(fused_qkv=name == "fused"), device)
        models[name] = engines[name].load(ModelEntry.of(args.model), device, dtype, seed=args.seed).eval()
    assert models["fused"].layers[0].self_attn.fused and not models["unfused"].layers[0].self_attn.fused
    batches = [int(b) for b in args.batch_sizes.split(",")]
    vocab = models["fused"].arch.vocab_size
    prompts = {b: synthetic_prompts(b, args.prompt, vocab, seed=args.seed).to(device) for b in batches}

    times = {(b, v): [] for b in batches for v in VARIANTS}
    t_start = time.perf_counter()
    for r in range(args.warmup_rounds + args.rounds):
        order = VARIANTS if r % 2 == 0 else VARIANTS[::-1]
        for b in batches:
            tokens = {}
            for v in order:
                step_s, tokens[v] = decode_steps(engines[v], models[v], prompts[b], args.steps, sync)
                if r >= args.warmup_rounds:
                    times[(b, v)].append(step_s)
            if not torch.equal(tokens["fused"], tokens["unfused"]):
                print(f"warning: batch {b}: fused and unfused tokens differ (round {r})", file=sys.stderr)

    rows = []
    for b in batches:
        ratios = [f / u for f, u in zip(times[(b, "fused")], times[(b, "unfused")])]
        mean, std, half = ci95(ratios)
        rows.append(
            {
                "batch_size": b,
                "fused_step_ms_median": 1e3 * statistics.median(times[(b, "fused")]),
                "unfused_step_ms_median": 1e3 * statistics.median(times[(b, "unfused")]),
                "ratio_mean": mean,
                "ratio_std": std,
                "ratio_ci95": half,
                "ratio_min": min(ratios),
                "ratio_max": max(ratios),
                "n": len(ratios),
            }
        )
    result = {
        "command": "python benchmarks/fused_qkv.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "model": args.model,
        "device": str(device),
        "dtype": args.dtype,
        "prompt": args.prompt,
        "steps": args.steps,
        "rounds": args.rounds,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "elapsed_s": time.perf_counter() - t_start,
        "rows": rows,
    }
    print(
        f"{args.model} decode on {device} ({args.dtype}, {result['threads']} thread(s)), prompt {args.prompt}, "
        f"{args.steps} steps x {args.rounds} rounds, order AB/BA; {result['elapsed_s']:.0f} s"
    )
    print("| batch | fused ms/step | unfused ms/step | fused/unfused step time (mean ± 95% CI [min, max]) |")
    print("|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['batch_size']} | {row['fused_step_ms_median']:.1f} | {row['unfused_step_ms_median']:.1f} | "
            f"{row['ratio_mean']:.3f} ± {row['ratio_ci95']:.3f} [{row['ratio_min']:.3f}, {row['ratio_max']:.3f}] |"
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
