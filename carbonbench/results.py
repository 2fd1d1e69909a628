"""Result files from any machines, read into one tidy pandas DataFrame.

One row per point and repeat (a failed point without repeats gives one row), with the
run's settings beside the measurement and the carbon, cost and efficiency columns
derived (carbonbench.carbon). The files are read and validated by carbonbench.runfile;
their schema is carbonbench.records, documented in docs/results.md.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Iterable, Optional

import pandas as pd

from carbonbench.carbon import derive as derive_columns
from carbonbench.decode_phase import DECODE_ONLY_COLUMNS, decode_only
from carbonbench.errors import ResultsError
from carbonbench.meters.base import weakest_method
from carbonbench.meters.host import BUSY_FLAG
from carbonbench.reading import UnreadableFile, printable, walk_files
from carbonbench.records import POINT_FIELDS, POINT_KEYS, PointRecord, RepeatRecord
from carbonbench.run_record import RunRecord
from carbonbench.runfile import read_run
from carbonbench.serve_records import COLUMNS as SERVE_COLUMNS
from carbonbench.serve_records import serve_columns
from carbonbench.stats import ci95

COLUMNS = [
    "run_id",
    "run_status",
    "scenario",
    "hostname",
    "device_type",
    "device_name",
    "n_devices",
    "model",
    "params",
    "engine",
    "engine_options",
    "dtype",
    "workload",
    "batch_size",
    "prompt_tokens",
    "new_tokens",
    "seq_len",
    "rate_rps",
    "concurrency",
    "repeat",
    "status",
    "error",
    "tokens",
    "steps",
    "duration_s",
    "tokens_per_s",
    "flops",
    "model_flops",
    "energy_j",
    "energy_method",
    "energy_missing",
    "energy_gpu_j",
    "energy_cpu_j",
    "energy_dram_j",
    "energy_gpu_method",
    "energy_cpu_method",
    "energy_dram_method",
    "active_energy_j",
    "idle_power_w",
    "joules_per_token",
    "ttft_s",
    "tpot_s",
    "latency_p50_s",
    "latency_p90_s",
    "latency_p99_s",
    *SERVE_COLUMNS,
    "peak_memory_bytes",
    "tokens_per_word",
    "weights",
    "flags",
    "start_unix_s",
    "codecarbon_energy_j",
    "codecarbon_cpu_energy_j",
    "codecarbon_gpu_energy_j",
    "codecarbon_ram_energy_j",
    "codecarbon_energy_diff_j",
    "codecarbon_cpu_energy_diff_j",
    "codecarbon_gpu_energy_diff_j",
    "codecarbon_ram_energy_diff_j",
    "grid_country",
    "grid_region",
    "grid_g_per_kwh",
    "pue",
    "usd_per_kwh",
    "usd_per_device_hour",
    "quick",
    "source_file",
    *DECODE_ONLY_COLUMNS,  # decode without its prefill, as peers report it (carbonbench.decode_phase)
]


def result_files(paths: Iterable[str | Path]) -> list[Path]:
    """Expand directories into their result files (not timelines), keeping order.

    Directories are walked without recursion and without following directory links
    (carbonbench.reading.walk_files). Whatever a directory holds under a .json name is
    listed, pipes and devices included: reading refuses those, as damaged files.
    """
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            try:
                files.extend(walk_files(p, ".json"))
            except UnreadableFile as exc:
                raise ResultsError(str(exc)) from None
        elif os.path.lexists(p):
            files.append(p)
        else:
            raise ResultsError(f"{p}: no such result file or directory")
    return files


def read_runs(paths: Iterable[str | Path] | str | Path, *, on_error: str = "raise") -> list[tuple[Path, RunRecord]]:
    """Every run in the files and directories given. With ``on_error="skip"``, damaged
    files are skipped with a warning naming each one."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    runs = []
    for f in result_files(paths):
        try:
            runs.append((f, read_run(f)))
        except ResultsError as exc:
            if on_error != "skip":
                raise
            warnings.warn(f"skipped {printable(exc)}", stacklevel=3)  # the file's name and keys, shown safely
    return runs


def load(paths: Iterable[str | Path] | str | Path, *, on_error: str = "raise", derive: bool = True) -> pd.DataFrame:
    """Read result files/directories from any machine into one tidy DataFrame.

    One row per point and repeat (a failed point without repeats gives one row). With
    ``on_error="skip"``, damaged files are skipped with a warning naming each one.
    """
    rows = [row for f, run in read_runs(paths, on_error=on_error) for row in run_rows(run, source=f)]
    df = pd.DataFrame(rows, columns=COLUMNS)
    return derive_columns(df) if derive else df


def run_rows(run: RunRecord, source: Optional[Path] = None) -> list[dict[str, Any]]:
    carbon, cost = run.carbon, run.cost
    options = run.engine_options()
    base = {
        "run_id": run.run_id,
        "run_status": run.status,
        "scenario": run.scenario_name,
        "hostname": run.hostname,
        "device_type": run.device.type,
        "device_name": run.device.name,
        "n_devices": run.device.count,
        "engine": run.engine_name,
        "engine_options": _options_text(options),
        "dtype": run.device.dtype,
        "grid_country": carbon.get("country"),
        "grid_region": carbon.get("region"),
        "grid_g_per_kwh": carbon.get("grid_g_per_kwh"),
        "pue": carbon.get("pue", 1.0),
        "usd_per_kwh": cost.get("usd_per_kwh"),
        "usd_per_device_hour": cost.get("usd_per_device_hour"),
        "quick": run.quick,
        "source_file": str(source) if source else None,
        "idle_power_w": run.idle.total_power_w if run.idle is not None else None,
    }
    baseline_busy = run.idle is not None and BUSY_FLAG in run.idle.flags
    rows = []
    for point in run.points:
        prow = {**base, **point_columns(point)}
        if not point.repeats:
            rows.append({**prow, "repeat": 0})
            continue
        for rep in point.repeats:
            # A point that failed after some repeats keeps them, marked with its status.
            rows.append(
                {
                    **prow,
                    **repeat_columns(rep, baseline_busy),
                    **decode_only(point, rep),
                    "status": rep.status or point.status,
                }
            )
    return rows


def point_columns(point: PointRecord) -> dict[str, Any]:
    return {
        **{k: getattr(point.point, k) for k in POINT_FIELDS},
        "params": point.params,
        "status": point.status,
        "error": point.error,
        "peak_memory_bytes": point.peak_memory_bytes,
        "tokens_per_word": point.tokens_per_word,
        "weights": point.weights,
    }


def repeat_columns(rep: RepeatRecord, baseline_busy: bool = False) -> dict[str, Any]:
    """A repeat's columns. A total missing a component carries ``energy_missing``; active
    energy is left out (None) where another process kept the host busy during the window
    or the idle baseline, since idle and active power then read alike."""
    latency = rep.latency_s
    flags = list(rep.flags) + (["busy-baseline"] if baseline_busy else [])
    unreliable_active = baseline_busy or BUSY_FLAG in rep.flags
    out = {
        "repeat": rep.repeat,
        "tokens": rep.tokens,
        "steps": rep.steps,
        "duration_s": rep.duration_s,
        "flops": rep.flops,
        "model_flops": rep.model_flops,
        "tokens_per_s": rep.tokens_per_s,
        "energy_j": rep.energy_j,
        "energy_method": rep.energy_method,
        "energy_missing": ",".join(c for c, comp in rep.components.items() if comp.energy_j is None) or None,
        "active_energy_j": None if unreliable_active else rep.active_energy_j,
        "joules_per_token": rep.joules_per_token,
        "ttft_s": rep.ttft_s,
        "tpot_s": rep.tpot_s,
        "latency_p50_s": latency.get("p50"),
        "latency_p90_s": latency.get("p90"),
        "latency_p99_s": latency.get("p99"),
        "flags": ",".join(flags),
        "start_unix_s": rep.start_unix_s,
        **serve_columns(rep.serve),
    }
    for kind in ("gpu", "cpu", "dram"):
        parts = rep.components_of(kind)
        out[f"energy_{kind}_j"] = _sum_known(c.energy_j for c in parts)
        methods = sorted({c.method for c in parts if c.energy_j is not None})
        out[f"energy_{kind}_method"] = "+".join(methods) if methods else ("none" if parts else None)
    # codecarbon measured the same window alongside: its figures, and ours minus its.
    cc = rep.codecarbon or {}
    for ours, name in (
        ("energy_j", "energy_j"),
        ("energy_cpu_j", "cpu_energy_j"),
        ("energy_gpu_j", "gpu_energy_j"),
        ("energy_dram_j", "ram_energy_j"),
    ):
        theirs = cc.get(name)
        out[f"codecarbon_{name}"] = theirs
        mine = out[ours]
        out[f"codecarbon_{name.removesuffix('_j')}_diff_j"] = (
            mine - theirs if mine is not None and theirs is not None else None
        )
    return out


def summarise(df: pd.DataFrame) -> pd.DataFrame:
    """One row per point of a results frame, over its ``ok`` repeats: spread and 95% CIs.

    For frames built or filtered by hand; a run's own points carry the same figures in
    their stored ``summary``. Points are keyed by whichever of records.POINT_KEYS the
    frame has. Columns out: the keys, n_repeats, joules_per_token_mean/_std/_ci95,
    tokens_per_s_mean/_std/_ci95, and energy_method (the weakest among the repeats, when
    the frame has one).
    """
    keys = [k for k in POINT_KEYS if k in df.columns]
    if not keys:
        raise ValueError(f"results frame has none of the point columns {POINT_KEYS}")
    ok = df[df["status"] == "ok"] if "status" in df.columns else df
    rows = []
    for key, group in ok.groupby(keys, dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(keys, key))
        row["n_repeats"] = len(group)
        for col in ("joules_per_token", "tokens_per_s"):
            values = group[col].tolist() if col in group.columns else []
            mean, std, half = ci95(values)
            row[f"{col}_mean"], row[f"{col}_std"], row[f"{col}_ci95"] = mean, std, half
        if "energy_method" in group.columns:
            row["energy_method"] = weakest_method(group["energy_method"].dropna())
        rows.append(row)
    columns = (
        keys
        + ["n_repeats"]
        + [f"{c}_{s}" for c in ("joules_per_token", "tokens_per_s") for s in ("mean", "std", "ci95")]
        + (["energy_method"] if "energy_method" in df.columns else [])
    )
    return pd.DataFrame(rows, columns=columns)


def _options_text(options: Optional[dict[str, Any]]) -> Optional[str]:
    """engine_options as "compile=false,cuda_graphs=false,...", the options in effect as the
    run recorded them; None for old runs, which give a plain name only."""
    if options is None:
        return None
    text = ",".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in sorted(options.items()))
    return text or None


def _sum_known(values: Iterable[Any]) -> Optional[float]:
    known = [v for v in values if isinstance(v, (int, float))]
    return float(sum(known)) if known else None
