"""What `report` and `compare` cost at N points: before (a base tree) and after (this tree), side by side.

Synthetic sweeps, nothing measured: for each N, two run files of N points each, on two made-up
machines ("A", a CPU box, and "B", an H100), in the shape a real sweep writes: 3 repeats a point,
gpu0/cpu/dram components with counter methods, latencies, codecarbon figures, TTFT/TPOT on decode,
and a power timeline sampled every 0.25 s with rare one-sample spikes (to show what thinning keeps).

For each N and each tree, interleaved (before, after, before, after...), in a fresh Python whose
PYTHONPATH puts that tree first:

- report: ``build_report([A], out)``: build time, HTML bytes, traces (every figure's), the
  tallest figure's height, the timeline's shapes;
- compare: ``carbonbench compare A B --format json``: time (the CLI, in process);
- the report in headless Chromium (file://, network off): wall time from the browser's start to
  the dump of a page whose charts plotly has all drawn (a probe records when, and how many),
  cut off at ``--browser-timeout`` s.

    python benchmarks/report_scale.py --base /tmp/base-sweeps                  # 10, 1,000 and 5,000 points
    python benchmarks/report_scale.py --base /tmp/base-sweeps --points 10 200 --no-browser

where /tmp/base-sweeps is ``git worktree add --detach /tmp/base-sweeps <base commit>``. Prints a
markdown table with the load average; ``--json`` also writes the figures.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
ROOT = HERE.parents[1]
START = 1788264000.0
SAMPLE_S = 0.25
MODELS = (
    ("opt-tiny", 3_448_704),
    ("opt-125m", 125_239_296),
    ("opt-350m", 331_196_416),
    ("opt-1.3b", 1_315_758_080),
    ("opt-2.7b", 2_651_596_800),
    ("opt-6.7b", 6_658_473_984),
    ("opt-13b", 12_853_473_280),
    ("opt-30b", 29_974_607_872),
    ("opt-66b", 65_708_400_640),
    ("opt-175b", 174_563_733_504),
)
BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
LENGTHS = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
NEW = (2, 16, 64, 128, 256)
MACHINES = {
    "A": dict(name="Intel Xeon (synthetic)", type="cpu", host="cpu-box", dtype="float32", speed=1.0, gpu_w=None),
    "B": dict(name="NVIDIA H100 80GB HBM3", type="cuda", host="h100-box", dtype="bfloat16", speed=40.0, gpu_w=300.0),
}


# ---- synthetic run files -----------------------------------------------------------------
def grid(n: int) -> list[tuple]:
    """N points in sweep order: model, then workload, then batch and lengths."""
    every = []
    for model, params in MODELS:
        for b in BATCHES:
            for p in LENGTHS:
                every.append((model, params, "prefill", b, p, 0, 0))
                every.append((model, params, "train", b, 0, 0, p))
                for new in NEW:
                    every.append((model, params, "decode", b, p, new, 0))
    if n > len(every):
        raise SystemExit(f"at most {len(every)} points")
    keep = sorted(random.Random(n).sample(range(len(every)), n))
    return [every[i] for i in keep]


def key(model, workload, b, p, new, s):
    tail = {"prefill": f"p{p}", "decode": f"p{p}-n{new}", "train": f"s{s}"}[workload]
    return f"{model}/{workload}/b{b}/{tail}"


def write_run(folder: Path, side: str, n: int) -> Path:
    m = MACHINES[side]
    rng = random.Random(hash((side, n)) & 0xFFFF)
    run_id = f"scale-{side}-{n}-20260901T120000000000Z"
    idle_w = {"cpu-package0": 40.0, "dram0": 8.0} | ({"gpu0": 70.0} if m["gpu_w"] else {})
    kinds = {"gpu0": "gpu", "cpu-package0": "cpu", "dram0": "dram"}
    t, points, windows = START + 3.0, [], []
    for model, params, workload, b, p, new, s in grid(n):
        k = key(model, workload, b, p, new, s)
        tokens_per_step = b * {"prefill": p, "decode": new, "train": s}[workload]
        # A step's time grows with the work; a decode step is the whole generation.
        step_s = params * tokens_per_step * (6 if workload == "train" else 2) / (m["speed"] * 4e10)
        step_s = min(step_s + 0.002 * (new if workload == "decode" else 1), 8.0)  # a long step, as real sweeps have
        steps = max(1, int(1.0 / step_s) + 1)
        watts = {"cpu-package0": 60.0 + 10 * rng.random(), "dram0": 11.0} | (
            {"gpu0": m["gpu_w"] * (0.5 + rng.random())} if m["gpu_w"] else {}
        )
        point = dict(
            key=k,
            model=model,
            workload=workload,
            batch_size=b,
            prompt_tokens=p,
            new_tokens=new,
            seq_len=s,
            status="ok",
            error=None,
            repeats=[],
            started_unix_s=t,
            tokens_per_step=tokens_per_step,
            flops_per_step=2.0 * params * tokens_per_step,
            warmup={"steps": 2, "duration_s": 0.5},
            peak_memory_bytes=int(params * 4 + 3e8),
            params=params,
        )
        t += 0.5
        for r in range(3):
            jitter = 1 + rng.uniform(-0.03, 0.03)
            duration = steps * step_s * jitter
            comps = {
                c: {
                    "kind": kinds[c],
                    "energy_j": w * duration * (1 + rng.uniform(-0.02, 0.02)),
                    "method": "counter",
                    "meter": "nvml" if c == "gpu0" else "rapl",
                }
                for c, w in watts.items()
            }
            energy = sum(c["energy_j"] for c in comps.values())
            rep = {
                "repeat": r,
                "steps": steps,
                "tokens": steps * tokens_per_step,
                "flops": steps * 2.0 * params * tokens_per_step,
                "start_unix_s": t,
                "duration_s": duration,
                "energy_j": energy,
                "method": "counter",
                "flags": [],
                "components": comps,
                "energy_method": "counter",
                "latency_s": {
                    q: step_s * jitter * f
                    for q, f in (
                        ("p50", 1.0),
                        ("p90", 1.04),
                        ("p99", 1.09),
                        ("mean", 1.01),
                        ("min", 0.97),
                        ("max", 1.12),
                    )
                },
                "active_energy_j": max(0.0, energy - sum(idle_w.values()) * duration),
                "codecarbon": {
                    "label": f"{k}#r{r}",
                    "duration_s": duration,
                    "energy_j": energy * 0.97,
                    "cpu_energy_j": 60.0 * duration,
                    "gpu_energy_j": comps.get("gpu0", {}).get("energy_j", 0.0) * 0.98,
                    "ram_energy_j": 11.0 * duration,
                    "emissions_g": None,
                },
            }
            if workload == "decode":
                rep["ttft_s"] = step_s * jitter * 2 / (new + 1)
                rep["tpot_s"] = (step_s * jitter - rep["ttft_s"]) / (new - 1)
            point["repeats"].append(rep)
            windows.append((f"{k}#r{r}", t, t + duration, watts))
            t += duration
        point["finished_unix_s"] = t
        t += 0.3
        points.append(point)
    run = {
        "schema": "carbonbench.run",
        "schema_version": 1,
        "run_id": run_id,
        "status": "complete",
        "started_utc": "2026-09-01T12:00:00+00:00",
        "finished_utc": "2026-09-02T12:00:00+00:00",
        "carbonbench_version": "0.1.0",
        "fingerprint": "scale0000000000",
        "quick": False,
        "note": "SYNTHETIC: benchmarks/report_scale.py; not a measurement",
        "scenario": {
            "name": f"scale-{n}",
            "models": [m_ for m_, _ in MODELS],
            "device": m["type"],
            "dtype": m["dtype"],
            "engine": "native",
            "seed": 0,
            "measurement": {"min_seconds": 1.0, "repeats": 3, "sample_interval_s": SAMPLE_S},
            "carbon": {"country": "USA", "grid_g_per_kwh": 380.0, "pue": 1.2},
            "cost": {"usd_per_kwh": 0.12, "usd_per_device_hour": 2.5},
        },
        "device": {"type": m["type"], "name": m["name"], "count": 1, "dtype": m["dtype"]},
        "environment": {"hostname": m["host"], "os": "Linux (synthetic)", "python": "3.11", "carbonbench": "0.1.0"},
        "meters": [{"name": "rapl", "kind": "cpu+dram", "method": "counter", "resolution_s": 0.001}],
        "idle": {"duration_s": 2.0, "power_w": idle_w, "method": dict.fromkeys(idle_w, "counter")},
        "timeline_file": run_id + ".timeline.csv",
        "warnings": [],
        "codecarbon": None,
        "codecarbon_meter": {"enabled": True, "version": "3.3.2"},
        "points": points,
    }
    path = folder / f"{run_id}.json"
    path.write_text(json.dumps(run))
    with open(folder / run["timeline_file"], "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["unix_s", "component", "power_w", "window"])
        i, s = 0, START
        while s <= t:
            while i < len(windows) and windows[i][2] <= s:
                i += 1
            inside = windows[i] if i < len(windows) and windows[i][1] <= s else None
            for comp, idle in idle_w.items():
                w = inside[3][comp] if inside else idle
                w *= 3.0 if rng.random() < 0.002 else 1 + rng.uniform(-0.04, 0.04)  # a rare one-sample spike
                out.writerow([f"{s:.3f}", comp, f"{w:.2f}", inside[0] if inside else ""])
            s += SAMPLE_S
    return path


# ---- one measurement, in a child whose PYTHONPATH is the tree under test --------------------
def child(what: str, args: list[str]) -> None:
    import io
    from contextlib import redirect_stdout

    import carbonbench

    out: dict = {"carbonbench": carbonbench.__file__}
    if what == "report":
        from carbonbench.report import build_report

        t0 = time.perf_counter()
        path = build_report([args[0]], args[1])
        out["build_s"] = time.perf_counter() - t0
        text = path.read_text(encoding="utf-8")
        out["html_bytes"] = len(text.encode())
        traces = heights = shapes = 0
        for spec in re.findall(r'<script type="application/json" id="cb-fig-\d+-data">(.*?)</script>', text, re.S):
            fig = json.loads(spec)
            traces += len(fig.get("data") or [])
            heights = max(heights, int((fig.get("layout") or {}).get("height") or 0))
            shapes += len((fig.get("layout") or {}).get("shapes") or [])
        out.update(traces=traces, max_height_px=heights, shapes=shapes)
    else:
        from carbonbench.cli import cli

        t0 = time.perf_counter()
        with redirect_stdout(io.StringIO()):
            try:
                cli(["compare", args[0], args[1], "--format", "json"], standalone_mode=False)
            except SystemExit:
                pass
        out["compare_s"] = time.perf_counter() - t0
    print("RESULT " + json.dumps(out))


def measure(tree: Path, what: str, *args: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    proc = subprocess.run([sys.executable, str(HERE), "--child", what, *args], capture_output=True, text=True, env=env)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        raise SystemExit(f"{tree} {what} failed:\n{proc.stderr[-3000:]}")
    got = json.loads(line[7:])
    if not got["carbonbench"].startswith(str(tree)):
        raise SystemExit(f"{tree}: imported carbonbench from {got['carbonbench']}")
    return got


PROBE = """<script>addEventListener('load',function(){
  var charts=document.querySelectorAll('.cb-chart');
  var drawn=[].filter.call(charts,function(d){return d.classList.contains('js-plotly-plot');}).length;
  var p=document.createElement('pre');p.id='cb-probe';
  p.textContent=JSON.stringify({charts:charts.length,drawn:drawn,ms:performance.now()});
  document.body.appendChild(p);});</script>"""


def browser_load(html: Path, timeout_s: float) -> dict:
    """Wall time of a headless Chromium that loads the page, draws it and dumps the DOM."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        return {"load_s": None, "load_note": "no chromium"}
    probed = html.with_name(html.stem + ".probed.html")
    probed.write_text(html.read_text(encoding="utf-8").replace("<title>", PROBE + "<title>", 1), encoding="utf-8")
    profile = Path(tempfile.mkdtemp(prefix="cb-chrome-"))
    cmd = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--proxy-server=http://127.0.0.1:9",
        f"--user-data-dir={profile}",
        "--window-size=1280,900",
        "--dump-dom",
        probed.as_uri(),
    ]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"load_s": None, "load_note": f"not loaded after {timeout_s:.0f} s"}
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    wall = time.perf_counter() - t0
    found = re.search(r'<pre id="cb-probe">(.*?)</pre>', proc.stdout, re.S)
    if not found:
        return {"load_s": None, "load_note": f"no probe after {wall:.0f} s"}
    probe = json.loads(found.group(1).replace("&quot;", '"'))
    return {"load_s": wall, "drawn": f"{probe['drawn']}/{probe['charts']}", "page_ms": probe["ms"]}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    ap.add_argument("--base", type=Path, help="the base tree (before); default: this tree only")
    ap.add_argument("--points", type=int, nargs="+", default=[10, 1000, 5000])
    ap.add_argument("--dir", type=Path, default=None, help="where the synthetic runs go (default: a temp dir)")
    ap.add_argument("--no-browser", action="store_true")
    ap.add_argument("--browser-timeout", type=float, default=400.0)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.child:
        return child(args.child[0], args.child[1:])
    work = args.dir or Path(tempfile.mkdtemp(prefix="report-scale-"))
    trees = ([("before", args.base.resolve())] if args.base else []) + [("after", ROOT)]
    rows = []
    for n in args.points:
        folder = work / f"n{n}"
        for side in ("A", "B"):
            (folder / side).mkdir(parents=True, exist_ok=True)
            if not list((folder / side).glob("*.json")):
                write_run(folder / side, side, n)
        for label, tree in trees:
            html = folder / f"{label}.html"
            got = {"points": n, "tree": label, "load_avg": os.getloadavg()[0]}
            got.update(measure(tree, "report", str(folder / "A"), str(html)))
            got.update(measure(tree, "compare", str(folder / "A"), str(folder / "B")))
            if not args.no_browser:
                got.update(browser_load(html, args.browser_timeout))
            got["load_avg_after"] = os.getloadavg()[0]
            rows.append(got)
            print(json.dumps(got), file=sys.stderr, flush=True)
    print(
        "| points | code | report build s | HTML MB | traces | tallest figure px | timeline shapes "
        "| Chromium load s | compare s | load avg |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        load = f"{r['load_s']:.1f}" if r.get("load_s") else r.get("load_note", "")
        print(
            f"| {r['points']:,} | {r['tree']} | {r['build_s']:.1f} | {r['html_bytes'] / 1e6:.1f} | {r['traces']:,} "
            f"| {r['max_height_px']:,} | {r['shapes']:,} | {load} | {r['compare_s']:.1f} "
            f"| {r['load_avg']:.1f}-{r['load_avg_after']:.1f} |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
