"""The device's own ceilings, measured, and the rooflines they put over each workload.

Two probes, run on the device at the start of a benchmark:

- peak matmul rate: a large square matmul in a loop (bf16 8192^3 on a GPU; fp32 on the
  CPU, 1024^3 so that it runs in seconds), FLOPs = 2 n^3 per matmul;
- memory bandwidth: a large device-to-device copy (1 GiB on a GPU, 256 MiB on the CPU),
  counting the bytes read plus the bytes written.

Each probe runs a few trials and keeps the best: a ceiling is what the device can do,
and a slower trial measured something else (a neighbour, a clock ramp). The datasheet
figures in carbonbench/hardware.py (each row names its vendor datasheet) are leads, not ceilings.

Rooflines (all figures per second):

- decode: a step reads every weight once and the KV cache of every row, so
  max tokens/s = batch x bandwidth / (weight bytes + KV bytes read per step);
- prefill and training: FLOPs (analytic, carbonbench.workloads) / peak matmul rate,
  i.e. MFU. Training counts 3 forwards whatever the recompute (model FLOPs, not
  hardware FLOPs).

    python benchmarks/roofline.py                # probe this machine's device, print JSON
    python benchmarks/roofline.py --device cpu
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from carbonbench.opt.card import POSITION_OFFSET, Architecture  # noqa: E402
from carbonbench.workloads import forward_flops  # noqa: E402

MiB = 1 << 20


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _best_rate(fn, work: float, device: torch.device, seconds: float, trials: int) -> tuple[float, list[float]]:
    """Best of trials of work-per-second, each trial running fn for about seconds/trials."""
    fn()
    _sync(device)  # first call: kernel selection, allocation
    rates = []
    for _ in range(trials):
        n, t0 = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            if device.type == "cuda" and n % 8:
                continue
            _sync(device)
            elapsed = time.perf_counter() - t0
            if elapsed >= seconds / trials:
                break
        rates.append(work * n / elapsed)
    return max(rates), rates


def peak_matmul_flops(
    device, dtype: Optional[torch.dtype] = None, n: Optional[int] = None, seconds: float = 3.0, trials: int = 5
) -> dict:
    device = torch.device(device)
    cuda = device.type == "cuda"
    dtype = dtype or (torch.bfloat16 if cuda else torch.float32)
    n = n or (8192 if cuda else 1024)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    best, rates = _best_rate(lambda: torch.matmul(a, b, out=out), 2.0 * n**3, device, seconds, trials)
    return {"flops_per_s": best, "trials_flops_per_s": rates, "n": n, "dtype": str(dtype).removeprefix("torch.")}


def memory_bandwidth(device, nbytes: Optional[int] = None, seconds: float = 3.0, trials: int = 5) -> dict:
    device = torch.device(device)
    nbytes = nbytes or ((1024 if device.type == "cuda" else 256) * MiB)
    src = torch.empty(nbytes, dtype=torch.uint8, device=device).fill_(1)
    dst = torch.empty_like(src)
    best, rates = _best_rate(lambda: dst.copy_(src), 2.0 * nbytes, device, seconds, trials)
    return {"bytes_per_s": best, "trials_bytes_per_s": rates, "copy_bytes": nbytes, "counts": "read + write"}


def measure(device, dtype: Optional[torch.dtype] = None, seconds: float = 3.0) -> dict:
    """Both ceilings of device, with what was run to get them."""
    device = torch.device(device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        from carbonbench.meters.cpu import cpu_model_name

        name = cpu_model_name()
    return {
        "device_type": device.type,
        "device_name": name,
        "torch_threads": torch.get_num_threads(),
        "matmul": peak_matmul_flops(device, dtype, seconds=seconds),
        "memory": memory_bandwidth(device, seconds=seconds),
    }


# -- rooflines ----------------------------------------------------------------------
def weight_bytes(arch: Architecture, itemsize: int) -> int:
    """Bytes of weights one decode step reads: all of them but the position table, of
    which it reads only a row per sequence. The token embedding is read whole, as the
    tied LM head."""
    return (arch.param_count() - (arch.max_positions + POSITION_OFFSET) * arch.d_model) * itemsize


def kv_bytes_per_step(arch: Architecture, batch: int, context: float, itemsize: int) -> float:
    """Keys and values read by one decode step over context positions, every row."""
    return 2.0 * arch.n_layers * batch * context * arch.d_model * itemsize


def decode_roofline_tokens_per_s(
    arch: Architecture, batch: int, prompt: int, new: int, itemsize: int, bytes_per_s: float
) -> float:
    """Max decode tokens/s: batch tokens per step, a step no faster than its bytes allow.

    The context averages over the decode steps (prompt + 1 ... prompt + new - 1 keys).
    """
    context = prompt + new / 2.0
    step_bytes = weight_bytes(arch, itemsize) + kv_bytes_per_step(arch, batch, context, itemsize)
    return batch * bytes_per_s / step_bytes


def train_model_flops(arch: Architecture, batch: int, seq: int) -> float:
    """Model FLOPs of a training step: forward plus backward, no recompute."""
    return 3.0 * forward_flops(arch, batch, seq)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seconds", type=float, default=3.0, help="time per probe")
    args = parser.parse_args()
    print(json.dumps(measure(args.device, seconds=args.seconds), indent=1))


if __name__ == "__main__":
    main()
