"""Native engine against transformers, point by point in one run, both against the roofline.

    python benchmarks/engines.py --cpu --threads 1          # CPU: the default scenario's points
    python benchmarks/engines.py                            # GPU if there is one: scenarios/bench-engines.yaml
    python benchmarks/engines.py --models opt-1.3b          # one model (each GPU model fits a 10-minute slot)
    python benchmarks/engines.py --summarise-only --out DIR # tables again from the result files

What it does, in one process:

1. Measures the device's ceilings (benchmarks/roofline.py): peak matmul rate and memory
   bandwidth. They are saved with the results.
2. Runs every point of the scenario with the scenario's engine ("A", the native engine
   with its speed options) and with the baseline ("B", transformers with its defaults,
   or what ``--baseline`` sets), alternating which goes first from point to point and
   round to round (ABBA), so that a slow drift of the machine hits both alike. Each
   (engine, point) goes through the normal Runner: same warm-up, meters and windows as
   ``carbonbench run``. The result files (one per engine and round, in OUT/runs) are
   ordinary run files that the report reads.
3. Writes OUT/summary.json and OUT/summary.md: per point, each engine's tokens/s and
   J/token with their spread, the ratios A/B (paired by round and repeat: mean, min, max,
   95% CI), the fraction of the roofline reached (decode: memory bandwidth; prefill and
   training: MFU), compile time, and the issue's targets, met or not.

Each (engine, point) is a one-point run resumed into its engine's run file, so the model
is loaded again for every point: loading is never measured, and compiled graphs are
reused across loads of the same architecture (torch.compile keys them by code, not by
model object). Training points run only for the models in ``--train-models``. Running
the same command again skips the points already measured (a call cut short by a time
limit loses only the point in progress); ``--workloads`` splits a model's points over
several calls.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Optional

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import roofline  # noqa: E402

from carbonbench import scenario as sc  # noqa: E402
from carbonbench.config import build  # noqa: E402
from carbonbench.environment import resolve_device, resolve_dtype  # noqa: E402
from carbonbench.results import result_files  # noqa: E402
from carbonbench.runfile import read_run  # noqa: E402
from carbonbench.runner import Hooks, Runner  # noqa: E402
from carbonbench.stats import ci95  # noqa: E402

GPU_SCENARIO = ROOT / "scenarios" / "bench-engines.yaml"
CPU_SCENARIO = ROOT / "scenarios" / "bench-engines-cpu.yaml"
TRAIN_MODELS = ("opt-125m", "opt-1.3b")
# The targets on an H100 (checked whatever the device, reported as met or not).
TARGET_DECODE_ROOFLINE = 0.70  # opt-1.3b decode, batch 1: fraction of the bandwidth roofline
TARGET_DECODE_SPEEDUP = 3.0  # opt-1.3b decode, batch 1: native / transformers tokens/s
TARGET_TRAIN_MFU = 0.45  # opt-1.3b training at seq 2048


# -- running ------------------------------------------------------------------------
def engine_scenarios(base: sc.Scenario, baseline: dict[str, Any], rounds: int) -> dict[tuple[str, int], sc.Scenario]:
    """One scenario per (engine label, round): the same points, its own run file."""
    a = base.engine
    b = build(sc.EngineConfig, {"name": "transformers", **baseline}, source="--baseline", path="engine")
    out = {}
    for r in range(1, rounds + 1):
        for label, engine in (("A", a), ("B", b)):
            out[(label, r)] = base.replace(name=f"{base.name}-{engine.name}-{label}-r{r}", engine=engine)
    return out


def selected_points(
    scenario: sc.Scenario, train_models: Optional[list[str]], workloads: Optional[list[str]] = None
) -> list[sc.Point]:
    """The scenario's points, less training for models not in train_models and, when
    given, workloads not listed. Filtering points (not the scenario) keeps each engine's
    run file the same, so a later call with other filters resumes into it."""
    points = sc.expand(scenario)
    if workloads is not None:
        points = [p for p in points if p.workload in workloads]
    if train_models is None:
        return points
    return [p for p in points if p.workload != "train" or p.model in train_models]


def run_interleaved(
    scenarios: dict, points: list[sc.Point], runs_dir: Path, device: str, quick: bool, log=print
) -> None:
    rounds = sorted({r for _, r in scenarios})
    total, done, t0 = len(points) * len(scenarios), 0, time.perf_counter()
    for r in rounds:
        for i, point in enumerate(points):
            order = ("A", "B") if (i + r) % 2 else ("B", "A")  # ABBA from point to point and round to round
            for label in order:
                scenario = scenarios[(label, r)]
                done += 1
                log(
                    f"[{done}/{total} {time.perf_counter() - t0:.0f}s] round {r} {scenario.engine.name:12s} {point.key}"
                )
                runner = Runner(
                    scenario,
                    runs_dir,
                    device=device,
                    quick_run=quick,
                    resume=True,
                    hooks=Hooks(log=lambda msg: None if msg.startswith(("resume:", "1 points")) else log("  " + msg)),
                )
                runner.points = [point]  # this point only, appended to the engine's run file
                outcome = runner.run()
                for rec in outcome.run.points:
                    if rec.key == point.key and not rec.ok:
                        log(f"  {rec.status}: {rec.error}")


# -- summarising --------------------------------------------------------------------
def _mean(xs):
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return statistics.fmean(xs) if xs else None


def _spread(values: list[float]) -> dict[str, Any]:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return {"mean": None, "min": None, "max": None, "ci95": None, "n": 0}
    mean, _, half = ci95(vals)
    return {
        "mean": mean,
        "min": min(vals),
        "max": max(vals),
        "ci95": None if math.isnan(half) else half,
        "n": len(vals),
    }


def _geomean(xs: list[float]) -> Optional[float]:
    xs = [x for x in xs if x and x > 0 and math.isfinite(x)]
    return math.exp(statistics.fmean(math.log(x) for x in xs)) if xs else None


def load_runs(runs_dir: Path) -> list[dict]:
    runs = []
    for f in result_files([runs_dir]):
        if f.name.endswith(".json"):
            try:
                runs.append(read_run(f).to_dict())  # summarised from the plain form
            except Exception:  # a damaged or foreign file: not ours to summarise
                continue
    return runs


def _label_round(run: dict) -> tuple[str, int]:
    name = run["scenario"]["name"]  # <base>-<engine>-<A|B>-r<round>
    parts = name.rsplit("-", 2)
    return parts[-2], int(parts[-1].removeprefix("r"))


def collect(runs: list[dict]) -> dict[str, dict]:
    """point key -> {"point": ..., "A"/"B": {round: record}, engines: names, dtype}."""
    points: dict[str, dict] = {}
    for run in runs:
        try:
            label, rnd = _label_round(run)
        except (ValueError, IndexError):
            continue
        engine = run.get("engine") or {"name": run["scenario"].get("engine")}
        for rec in run["points"]:
            entry = points.setdefault(rec["key"], {"point": rec, "A": {}, "B": {}, "engines": {}})
            entry[label][rnd] = rec
            entry["engines"][label] = engine
            entry["dtype"] = run["device"]["dtype"]
    return points


def _repeat_values(rec: Optional[dict], fn) -> list[float]:
    if not rec or rec.get("status") != "ok":
        return []
    out = []
    for rep in rec.get("repeats", []):
        try:
            v = fn(rep, rec)
        except (TypeError, ZeroDivisionError, KeyError):
            v = None
        out.append(v)
    return out


def tokens_per_s(rep, rec):
    return rep["tokens"] / rep["duration_s"]


def joules_per_token(rep, rec):
    return rep["energy_j"] / rep["tokens"] if rep.get("energy_j") is not None else None


def decode_tokens_per_s(rep, rec):
    return rec["batch_size"] / rep["tpot_s"]


def summarise(runs_dir: Path, ceilings: dict) -> dict:
    from carbonbench.scenario import model_card

    bandwidth = ceilings["memory"]["bytes_per_s"]
    peak = ceilings["matmul"]["flops_per_s"]
    rows = []
    for key, entry in sorted(collect(load_runs(runs_dir)).items(), key=lambda kv: _order(kv[1]["point"])):
        p = entry["point"]
        arch = model_card(p["model"]).architecture
        itemsize = {"float32": 4, "bfloat16": 2, "float16": 2}.get(entry.get("dtype"), 4)
        row: dict[str, Any] = {
            "key": key,
            "model": p["model"],
            "workload": p["workload"],
            "batch_size": p["batch_size"],
            "engines": {k: v for k, v in entry["engines"].items()},
        }
        metric = {"decode": decode_tokens_per_s}.get(p["workload"], tokens_per_s)
        for label in ("A", "B"):
            recs = entry[label]
            tps = [v for r in sorted(recs) for v in _repeat_values(recs[r], metric)]
            window_tps = [v for r in sorted(recs) for v in _repeat_values(recs[r], tokens_per_s)]
            jpt = [v for r in sorted(recs) for v in _repeat_values(recs[r], joules_per_token)]
            statuses = sorted({rec.get("status") for rec in recs.values()})
            side = {
                "tokens_per_s": _spread(tps),
                "window_tokens_per_s": _spread(window_tps),
                "joules_per_token": _spread(jpt),
                "status": ",".join(s for s in statuses if s),
                "errors": sorted({rec.get("error") for rec in recs.values() if rec.get("error")}),
                "compile_s": _mean([(rec.get("warmup") or {}).get("compile_s") for rec in recs.values()]),
                "first_step_s": _mean([(rec.get("warmup") or {}).get("first_step_s") for rec in recs.values()]),
                "energy_method": sorted(
                    {rep.get("energy_method") for rec in recs.values() for rep in rec.get("repeats", [])} - {None}
                ),
            }
            mean_tps = side["tokens_per_s"]["mean"]
            if p["workload"] == "decode":
                ceiling = roofline.decode_roofline_tokens_per_s(
                    arch, p["batch_size"], p["prompt_tokens"], p["new_tokens"], itemsize, bandwidth
                )
                side["roofline_tokens_per_s"] = ceiling
                side["roofline_fraction"] = mean_tps / ceiling if mean_tps else None
            elif p["workload"] == "prefill":
                flops = [
                    rep["flops"] / rep["duration_s"]
                    for r in recs.values()
                    if r.get("status") == "ok"
                    for rep in r["repeats"]
                ]
                side["mfu"] = _mean([f / peak for f in flops])
            else:
                per_step = roofline.train_model_flops(arch, p["batch_size"], p["seq_len"])
                steps_per_s = [
                    rep["steps"] / rep["duration_s"]
                    for r in recs.values()
                    if r.get("status") == "ok"
                    for rep in r["repeats"]
                ]
                side["mfu"] = _mean([s * per_step / peak for s in steps_per_s])
            row[label] = side
        row["speedup"] = _spread(_paired(entry, metric))  # A / B
        row["energy_ratio"] = _spread(_paired(entry, joules_per_token))  # A / B, below 1 is better
        rows.append(row)
    return {"rows": rows, "headline": _headline(rows), "targets": _targets(rows)}


def _paired(entry: dict, fn) -> list[float]:
    """A/B for each (round, repeat) both engines measured."""
    out = []
    for rnd in sorted(set(entry["A"]) & set(entry["B"])):
        a, b = _repeat_values(entry["A"][rnd], fn), _repeat_values(entry["B"][rnd], fn)
        out.extend(x / y for x, y in zip(a, b) if x is not None and y)
    return out


def _order(p: dict):
    return (
        p["model"],
        ["prefill", "decode", "train"].index(p["workload"]),
        p["batch_size"],
        p.get("prompt_tokens", 0),
        p.get("new_tokens", 0),
        p.get("seq_len", 0),
    )


def _headline(rows: list[dict]) -> dict:
    speedups = [r["speedup"]["mean"] for r in rows if r["speedup"]["mean"]]
    energy = [r["energy_ratio"]["mean"] for r in rows if r["energy_ratio"]["mean"]]
    by_workload = {}
    for w in ("prefill", "decode", "train"):
        s = [r["speedup"]["mean"] for r in rows if r["workload"] == w and r["speedup"]["mean"]]
        if s:
            by_workload[w] = {"geomean": _geomean(s), "min": min(s), "max": max(s)}
    return {
        "points": len(rows),
        "speedup_geomean": _geomean(speedups),
        "speedup_min": min(speedups) if speedups else None,
        "speedup_max": max(speedups) if speedups else None,
        "energy_ratio_geomean": _geomean(energy),
        "energy_ratio_max": max(energy) if energy else None,
        "speedup_by_workload": by_workload,
    }


def _targets(rows: list[dict]) -> list[dict]:
    out = []
    dec = [r for r in rows if r["model"] == "opt-1.3b" and r["workload"] == "decode" and r["batch_size"] == 1]
    for r in dec:
        frac = r["A"].get("roofline_fraction")
        out.append(
            {
                "target": f"{r['key']}: >= {TARGET_DECODE_ROOFLINE:.0%} of the bandwidth roofline",
                "value": frac,
                "met": frac is not None and frac >= TARGET_DECODE_ROOFLINE,
            }
        )
        sp = r["speedup"]["mean"]
        out.append(
            {
                "target": f"{r['key']}: >= {TARGET_DECODE_SPEEDUP:g}x transformers tokens/s",
                "value": sp,
                "met": sp is not None and sp >= TARGET_DECODE_SPEEDUP,
            }
        )
    train = [r for r in rows if r["model"] == "opt-1.3b" and r["workload"] == "train" and "s2048" in r["key"]]
    if train:
        best = max(train, key=lambda r: r["A"].get("mfu") or 0)
        mfu = best["A"].get("mfu")
        out.append(
            {
                "target": f"opt-1.3b training at seq 2048: >= {TARGET_TRAIN_MFU:.0%} MFU ({best['key']})",
                "value": mfu,
                "met": mfu is not None and mfu >= TARGET_TRAIN_MFU,
            }
        )
    worse = [r["key"] for r in rows if (r["energy_ratio"]["mean"] or 0) > 1]
    measured = [r for r in rows if r["energy_ratio"]["mean"]]
    if measured:
        out.append(
            {
                "target": "native J/token <= transformers at every point (mean over paired repeats)",
                "value": f"{len(measured) - len(worse)}/{len(measured)} points"
                + (f"; above at {', '.join(worse)}" if worse else ""),
                "met": not worse,
                "worse_at": worse,
            }
        )
    return out


# -- writing ------------------------------------------------------------------------
def _f(x, digits=3, pct=False):
    if x is None:
        return "-"
    if pct:
        return f"{100 * x:.1f}%"
    return f"{x:.{digits}g}"


def markdown(summary: dict, meta: dict) -> str:
    c = meta["ceilings"]
    a_name, b_name = meta["engines"]["A"]["name"], meta["engines"]["B"]["name"]
    lines = [
        f"# Engines: {a_name} (A) against {b_name} (B)",
        "",
        f"- device: {c['device_name']} ({c['device_type']}), torch {meta['torch']}, transformers {meta['transformers']}",
        f"- ceilings measured here: matmul {c['matmul']['flops_per_s'] / 1e12:.3g} TFLOP/s ({c['matmul']['dtype']}, n={c['matmul']['n']}),"
        f" copy {c['memory']['bytes_per_s'] / 1e9:.3g} GB/s (read + write)",
        f"- A options: {_opts(meta['engines']['A'])}",
        f"- B options: {_opts(meta['engines']['B'])}",
        f"- scenario {meta['scenario']}, {meta['rounds']} round(s), points interleaved ABBA, {meta['threads']} torch thread(s);"
        f" command: `{meta['command']}`",
        "",
        "Decode tokens/s are B / time per output token (tpot); prefill and train tokens/s are the window's.",
        "Ratios are A / B, paired by round and repeat: mean [min, max]. J/token is the whole window's energy",
        f"({', '.join(meta['energy_methods']) or 'no meter'}) over its tokens.",
        "",
        "| point | A tok/s | B tok/s | A/B tok/s | A J/tok | B J/tok | A/B J/tok | A roofline | B roofline | A compile s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary["rows"]:
        a, b = r["A"], r["B"]
        roof = "roofline_fraction" if r["workload"] == "decode" else "mfu"
        unit = "" if r["workload"] == "decode" else " MFU"
        lines.append(
            f"| {r['key']} | {_f(a['tokens_per_s']['mean'])} | {_f(b['tokens_per_s']['mean'])} "
            f"| {_ratio(r['speedup'])} | {_f(a['joules_per_token']['mean'])} | {_f(b['joules_per_token']['mean'])} "
            f"| {_ratio(r['energy_ratio'])} | {_f(a.get(roof), pct=True)}{unit} | {_f(b.get(roof), pct=True)}{unit} "
            f"| {_f(a['compile_s'], 2)} |"
        )
    h = summary["headline"]
    lines += [
        "",
        f"Geometric mean A/B tokens/s over {h['points']} points: **{_f(h['speedup_geomean'])}**"
        f" (points from {_f(h['speedup_min'])} to {_f(h['speedup_max'])}); J/token A/B: {_f(h['energy_ratio_geomean'])}"
        f" (worst {_f(h['energy_ratio_max'])}).",
    ]
    for w, s in h["speedup_by_workload"].items():
        lines.append(f"- {w}: {_f(s['geomean'])} ({_f(s['min'])} to {_f(s['max'])})")
    failed = [
        (r["key"], lab, r[lab]["status"], r[lab]["errors"])
        for r in summary["rows"]
        for lab in ("A", "B")
        if r[lab]["status"] != "ok"
    ]
    if failed:
        lines += ["", "Points not measured:"] + [f"- {k} {lab}: {st} {'; '.join(e)}" for k, lab, st, e in failed]
    if summary["targets"]:
        lines += ["", "| target | value | met |", "|---|---|---|"]
        for t in summary["targets"]:
            v = t["value"]
            shown = v if isinstance(v, str) else _f(v) if "x transformers" in t["target"] else _f(v, pct=True)
            lines.append(f"| {t['target']} | {shown} | {'yes' if t['met'] else 'NO'} |")
    return "\n".join(lines) + "\n"


def _ratio(s: dict) -> str:
    if s["mean"] is None:
        return "-"
    return f"{s['mean']:.3g} [{s['min']:.3g}, {s['max']:.3g}]"


def _opts(engine: dict) -> str:
    opts = engine.get("options") or {}
    return ", ".join(f"{k}={v}" for k, v in opts.items()) or "defaults"


def main(argv: Optional[list[str]] = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu", action="store_true", help="run the CPU scenario on the CPU, even with a GPU here")
    parser.add_argument(
        "--scenario", type=Path, help="default: bench-engines.yaml on a GPU, bench-engines-cpu.yaml on a CPU"
    )
    parser.add_argument("--models", help="comma-separated subset of the scenario's models")
    parser.add_argument(
        "--train-models",
        default=",".join(TRAIN_MODELS),
        help="models whose training points run (default %(default)s; 'all' for every model)",
    )
    parser.add_argument("--workloads", help="comma-separated subset of prefill, decode, train (default: all)")
    parser.add_argument(
        "--baseline", default="", help="options of the transformers baseline, e.g. 'static_cache=true,compile=true'"
    )
    parser.add_argument("--rounds", type=int, default=1, help="passes over the points (ABBA order flips each round)")
    parser.add_argument("--out", type=Path, help="default: results/bench-engines/<cpu|cuda>")
    parser.add_argument("--quick", action="store_true", help="short windows: a smoke run, not a measurement")
    parser.add_argument("--ceiling-seconds", type=float, default=3.0, help="time per ceiling probe")
    parser.add_argument("--summarise-only", action="store_true", help="no runs: summarise OUT's result files again")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice, one per core)")
    args = parser.parse_args(argv)

    device = resolve_device("cpu" if args.cpu else "auto")
    path = args.scenario or (CPU_SCENARIO if device.type == "cpu" else GPU_SCENARIO)
    scenario = sc.load(path)
    if args.models:
        wanted = [m.strip() for m in args.models.split(",") if m.strip()]
        scenario = scenario.replace(models=[m for m in scenario.models if sc.model_label(m) in wanted])
        if not scenario.models:
            parser.error(f"--models {args.models}: none of them is in {path}")
    train_models = None if args.train_models == "all" else [m.strip() for m in args.train_models.split(",")]
    baseline = _parse_options(args.baseline)
    out = args.out or ROOT / "results" / "bench-engines" / device.type
    runs_dir = out / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    scenarios = engine_scenarios(scenario, baseline, args.rounds)
    ceilings_file = out / "ceilings.json"

    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.summarise_only:
        dtype = resolve_dtype(scenario.dtype, device)
        probe_dtype = torch.bfloat16 if dtype != torch.float32 else torch.float32
        # Probed before and after the runs, keeping the better of each: a ceiling is the
        # best the device did, and a busy moment at the start should not lower it.
        before = _probe(device, probe_dtype, args.ceiling_seconds, "before")
        workloads = [w.strip() for w in args.workloads.split(",")] if args.workloads else None
        points = selected_points(scenario, train_models, workloads)
        run_interleaved(scenarios, points, runs_dir, device.type, args.quick)
        ceilings = _best_ceilings(before, _probe(device, probe_dtype, args.ceiling_seconds, "after"))
        ceilings_file.write_text(json.dumps(ceilings, indent=1) + "\n")
    ceilings = json.loads(ceilings_file.read_text())
    summary = summarise(runs_dir, ceilings)
    runs = load_runs(runs_dir)
    meta = {
        "scenario": str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path),
        "rounds": args.rounds,
        "command": "python benchmarks/engines.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "ceilings": ceilings,
        "engines": {label: _engine_of(runs, label, scenarios) for label in ("A", "B")},
        "torch": torch.__version__,
        "transformers": _version("transformers"),
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "energy_methods": sorted({m for r in summary["rows"] for lab in ("A", "B") for m in r[lab]["energy_method"]}),
    }
    result = {"meta": meta, **summary}
    (out / "summary.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    text = markdown(summary, meta)
    (out / "summary.md").write_text(text)
    print(text)
    print(f"results: {runs_dir}  summary: {out / 'summary.md'}")
    return result


def _probe(device, dtype, seconds: float, when: str) -> dict:
    print(f"measuring the ceilings of {device.type} {when} the runs ({seconds:g} s per probe)")
    c = roofline.measure(device, dtype, seconds)
    print(f"  matmul {c['matmul']['flops_per_s'] / 1e12:.3g} TFLOP/s, copy {c['memory']['bytes_per_s'] / 1e9:.3g} GB/s")
    return c


def _best_ceilings(a: dict, b: dict) -> dict:
    out = dict(a)
    out["matmul"] = max(a["matmul"], b["matmul"], key=lambda m: m["flops_per_s"])
    out["memory"] = max(a["memory"], b["memory"], key=lambda m: m["bytes_per_s"])
    out["probes"] = {
        "before": {"matmul": a["matmul"]["flops_per_s"], "memory": a["memory"]["bytes_per_s"]},
        "after": {"matmul": b["matmul"]["flops_per_s"], "memory": b["memory"]["bytes_per_s"]},
    }
    return out


def _engine_of(runs: list[dict], label: str, scenarios: dict) -> dict:
    for run in runs:
        try:
            if _label_round(run)[0] == label and run.get("engine"):
                return run["engine"]
        except (ValueError, IndexError):
            continue
    cfg = next(s.engine for (lab, _), s in scenarios.items() if lab == label)
    return {"name": cfg.name, "options": cfg.options()}


def _parse_options(text: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, _, value = part.partition("=")
        low = value.strip().lower()
        out[key.strip()] = True if low == "true" else False if low == "false" else value.strip()
    return out


def _version(module: str) -> Optional[str]:
    try:
        return __import__(module).__version__
    except ImportError:
        return None


if __name__ == "__main__":
    main()
