"""Writes h100-fixture.json and its timeline: a SYNTHETIC second machine for tests.

Nothing here was measured. The numbers are invented, shaped like an H100 run of the
default scenario (opt-125m) and of the tests' tiny scenario (opt-tiny), so that reports
and `carbonbench compare` have a second machine to match points against. The file says
so in its scenario description and its note, and the report shows both.

Run from the repository root to regenerate: python tests/data/results/make_h100_fixture.py
"""

from __future__ import annotations

import csv
import json
import math
import random
from pathlib import Path

from carbonbench.opt.card import find_card
from carbonbench.workloads import decode_flops, prefill_flops, train_flops

HERE = Path(__file__).parent
RUN_ID = "opt-125m-h100-fixture-20260901T120000000000Z"
START = 1788264000.0  # 2026-09-01T12:00:00Z
NOTE = "SYNTHETIC TEST FIXTURE: invented numbers shaped like an H100 run; not a measurement"
IDLE_W = {"gpu0": 72.0, "cpu-package0": 48.0, "dram0": 9.0}
KIND = {"gpu0": "gpu", "cpu-package0": "cpu", "dram0": "dram"}
METER = {"gpu0": "nvml", "cpu-package0": "rapl", "dram0": "rapl"}

# (model, workload, batch, prompt, new, seq, tokens/s, GPU W, CPU W, status, error)
POINTS = [
    ("opt-tiny", "prefill", 1, 16, 0, 0, 3100.0, 96.0, 62.0, "ok", None),
    ("opt-tiny", "prefill", 2, 16, 0, 0, 6000.0, 98.0, 62.0, "ok", None),
    ("opt-tiny", "prefill", 8, 16, 0, 0, 23000.0, 104.0, 63.0, "ok", None),
    ("opt-tiny", "decode", 1, 8, 4, 0, 310.0, 88.0, 61.0, "ok", None),
    ("opt-tiny", "decode", 2, 8, 4, 0, 600.0, 89.0, 61.0, "ok", None),
    ("opt-tiny", "train", 2, 0, 0, 16, 2300.0, 110.0, 63.0, "ok", None),
    ("opt-125m", "prefill", 1, 128, 0, 0, 9200.0, 128.0, 64.0, "ok", None),
    ("opt-125m", "prefill", 4, 128, 0, 0, 33500.0, 185.0, 64.0, "ok", None),
    ("opt-125m", "prefill", 16, 128, 0, 0, 112000.0, 310.0, 65.0, "ok", None),
    ("opt-125m", "decode", 4, 64, 16, 0, 530.0, 112.0, 62.0, "ok", None),
    ("opt-125m", "train", 1, 0, 0, 128, 4200.0, 255.0, 66.0, "ok", None),
    ("opt-125m", "train", 4, 0, 0, 128, 0.0, 0.0, 0.0, "meter-error",
     "NVMLError_Unknown: nvmlDeviceGetTotalEnergyConsumption failed (synthetic failure for tests)"),
]
REPEATS, WINDOW_S, SAMPLE_S = 3, 1.0, 0.5


def key(model, workload, batch, prompt, new, seq):
    tail = {"prefill": f"p{prompt}", "decode": f"p{prompt}-n{new}", "train": f"s{seq}"}[workload]
    return f"{model}/{workload}/b{batch}/{tail}"


def build():
    rng = random.Random(20260901)
    t = START + 3.0  # after the idle baseline
    points, windows = [], []
    for model, workload, batch, prompt, new, seq, tps, gpu_w, cpu_w, status, error in POINTS:
        k = key(model, workload, batch, prompt, new, seq)
        card = find_card(model)
        tokens_per_step = batch * {"prefill": prompt, "decode": new, "train": seq}[workload]
        flops_per_step = {"prefill": lambda: prefill_flops(card.arch, batch, prompt),
                          "decode": lambda: decode_flops(card.arch, batch, prompt, new),
                          "train": lambda: train_flops(card.arch, batch, seq)}[workload]()
        point = {"key": k, "model": model, "workload": workload, "batch_size": batch, "prompt_tokens": prompt,
                 "new_tokens": new, "seq_len": seq, "status": status, "error": error, "repeats": [],
                 "started_unix_s": t, "tokens_per_word": None, "tokens_per_step": tokens_per_step,
                 "flops_per_step": float(flops_per_step), "warmup": {"steps": 2, "duration_s": 0.5},
                 "peak_memory_bytes": int(card.param_count() * (16 if workload == "train" else 2) * 1.4 + 3e8),
                 "params": card.param_count()}
        t += 0.5
        if status != "ok":
            point["finished_unix_s"] = t
            points.append(point)
            continue
        step_s = tokens_per_step / tps
        steps = max(1, math.ceil(WINDOW_S / step_s))
        watts = {"gpu0": gpu_w, "cpu-package0": cpu_w, "dram0": 11.0}
        for r in range(REPEATS):
            jitter = 1 + rng.uniform(-0.03, 0.03)
            duration = steps * step_s * jitter
            comps = {}
            for comp, w in watts.items():
                e = w * duration * (1 + rng.uniform(-0.02, 0.02))
                comps[comp] = {"kind": KIND[comp], "energy_j": e, "method": "counter", "meter": METER[comp]}
            energy = sum(c["energy_j"] for c in comps.values())
            idle = sum(IDLE_W.values()) * duration
            rep = {"repeat": r, "steps": steps, "tokens": steps * tokens_per_step, "flops": float(steps * flops_per_step),
                   "start_unix_s": t, "duration_s": duration, "energy_j": energy, "method": "counter", "flags": [],
                   "components": comps, "energy_method": "counter",
                   "latency_s": {q: step_s * jitter * f for q, f in
                                 (("p50", 1.0), ("p90", 1.04), ("p99", 1.09), ("mean", 1.01), ("min", 0.97), ("max", 1.12))},
                   "active_energy_j": max(0.0, energy - idle),
                   # codecarbon over the same window: GPU via NVML like ours, CPU from a TDP share.
                   "codecarbon": {"label": f"{k}#r{r}", "duration_s": duration,
                                  "energy_j": (comps["gpu0"]["energy_j"] * 0.98 + (60.0 + 11.5) * duration),
                                  "cpu_energy_j": 60.0 * duration, "gpu_energy_j": comps["gpu0"]["energy_j"] * 0.98,
                                  "ram_energy_j": 11.5 * duration, "emissions_g": None,
                                  "country_iso_code": "USA", "region": None}}
            if workload == "decode":
                rep["ttft_s"] = 0.0021 * (1 + prompt / 256) * jitter
                rep["tpot_s"] = (step_s * jitter - rep["ttft_s"]) / new
            point["repeats"].append(rep)
            windows.append((f"{k}#r{r}", t, t + duration, watts))
            t += duration
        point["finished_unix_s"] = t
        t += 0.3
        points.append(point)
    return points, windows, t


def timeline(windows, end):
    rng = random.Random(7)
    rows, s = [], START
    while s <= end:
        inside = next((w for w in windows if w[1] <= s < w[2]), None)
        for comp, idle in IDLE_W.items():
            w = inside[3][comp] if inside else idle
            rows.append({"unix_s": round(s, 3), "component": comp, "power_w": round(w * (1 + rng.uniform(-0.04, 0.04)), 2),
                         "window": inside[0] if inside else ""})
        s += SAMPLE_S
    return rows


def run_record(points, end):
    return {
        "schema": "carbonbench.run", "schema_version": 1, "run_id": RUN_ID, "status": "complete",
        "started_utc": "2026-09-01T12:00:00+00:00", "finished_utc": "2026-09-01T12:01:00+00:00",
        "carbonbench_version": "0.1.0", "fingerprint": "fixture000000000", "quick": False,
        "note": NOTE,
        "scenario": {
            "name": "opt-125m",
            "description": NOTE + ". Points mirror scenarios/opt-125m.yaml and the tests' opt-tiny scenario.",
            "models": ["opt-tiny", "opt-125m"],
            "workloads": {"prefill": {"prompt_tokens": [16, 128], "batch_sizes": None},
                          "decode": {"prompt_tokens": [8, 64], "new_tokens": [4, 16], "batch_sizes": None},
                          "train": {"seq_len": [16, 128], "batch_sizes": None, "activation_checkpointing": False,
                                    "lr": 0.0001}, "prompts": None},
            "batch_sizes": [1, 2, 4, 8, 16], "device": "cuda", "dtype": "bfloat16", "engine": "native", "seed": 0,
            "measurement": {"warmup_steps": 2, "warmup_s": 0.5, "min_seconds": WINDOW_S, "repeats": REPEATS,
                            "sample_interval_s": SAMPLE_S, "idle_baseline_s": 2.0, "cooldown_s": 0.0,
                            "cpu_tdp_w": None, "codecarbon": True},
            "carbon": {"country": "USA", "region": None, "grid_g_per_kwh": None, "pue": 1.2,
                       "embodied": {"enabled": False, "kgco2e_per_device": None, "source": "",
                                    "lifetime_years": 6.0, "utilisation": 0.85}},
            "cost": {"usd_per_kwh": 0.12, "usd_per_device_hour": 2.5},
        },
        "scenario_source": "tests/data/results/make_h100_fixture.py",
        "device": {"type": "cuda", "name": "NVIDIA H100 80GB HBM3", "count": 1, "dtype": "bfloat16"},
        "environment": {
            "hostname": "h100-fixture", "os": "Linux 6.8.0 (synthetic)", "python": "3.11.7",
            "torch": "2.13.0+cu128", "carbonbench": "0.1.0", "cpu_model": "Intel(R) Xeon(R) Platinum 8480+",
            "cpu_physical_cores": 56, "cpu_logical_cores": 112, "torch_threads": 56, "ram_bytes": 2 * 1024**4,
            "gpus": [{"index": 0, "name": "NVIDIA H100 80GB HBM3", "memory_bytes": 85520809984}],
            "cuda": "12.8", "nvidia_driver": "570.124.06", "cuda_visible_devices": "0",
            "device_type": "cuda", "device_name": "NVIDIA H100 80GB HBM3",
        },
        "meters": [
            {"name": "nvml", "kind": "gpu", "method": "counter", "resolution_s": 0.1,
             "driver_version": "570.124.06", "devices": [{"component": "gpu0", "name": "NVIDIA H100 80GB HBM3",
                                                          "method": "counter", "power_limit_w": 700.0}]},
            {"name": "rapl", "kind": "cpu+dram", "method": "counter", "resolution_s": 0.001,
             "domains": [{"component": "cpu-package0", "name": "package-0"}, {"component": "dram0", "name": "dram"}]},
        ],
        "idle": {"duration_s": 2.0, "power_w": dict(IDLE_W), "method": {c: "counter" for c in IDLE_W}},
        "timeline_file": RUN_ID + ".timeline.csv",
        "warnings": [],
        "codecarbon": None,
        "codecarbon_meter": {"enabled": True, "version": "3.3.2", "note": "synthetic"},
        "points": points,
    }


def main():
    points, windows, end = build()
    run = run_record(points, end)
    (HERE / f"{RUN_ID}.json").write_text(json.dumps(run, indent=1) + "\n")
    rows = timeline(windows, end)
    with open(HERE / f"{RUN_ID}.timeline.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["unix_s", "component", "power_w", "window"])
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    main()
