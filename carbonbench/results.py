"""Result files: one JSON per run plus a CSV power timeline, and loading them to pandas.

Schema (``schema_version`` 1) is documented in docs/results.md. Every write of a run
file goes to a temporary file in the same directory and is renamed over the target, so a
reader never sees half a file, whatever happens to the process. The timeline is appended
instead (carbonbench.timeline).
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterable, Optional

import pandas as pd

from carbonbench.errors import ResultsError

SCHEMA = "carbonbench.run"
SCHEMA_VERSION = 1

POINT_COLUMNS = ["model", "workload", "batch_size", "prompt_tokens", "new_tokens", "seq_len"]
COLUMNS = [
    "run_id", "run_status", "scenario", "hostname", "device_type", "device_name", "n_devices",
    "model", "params", "engine", "engine_options", "dtype",
    "workload", "batch_size", "prompt_tokens", "new_tokens", "seq_len", "repeat", "status", "error",
    "tokens", "steps", "duration_s", "tokens_per_s", "flops", "model_flops",  # flops: model_flops
    "energy_j", "energy_method", "energy_gpu_j", "energy_cpu_j", "energy_dram_j",
    "energy_gpu_method", "energy_cpu_method", "energy_dram_method",
    "active_energy_j", "idle_power_w", "joules_per_token",
    "ttft_s", "tpot_s", "latency_p50_s", "latency_p90_s", "latency_p99_s",
    "peak_memory_bytes", "tokens_per_word", "flags", "start_unix_s",
    "codecarbon_energy_j", "codecarbon_cpu_energy_j", "codecarbon_gpu_energy_j", "codecarbon_ram_energy_j",
    "codecarbon_energy_diff_j", "codecarbon_cpu_energy_diff_j", "codecarbon_gpu_energy_diff_j",
    "codecarbon_ram_energy_diff_j",
    "grid_country", "grid_region", "grid_g_per_kwh", "pue", "usd_per_kwh", "usd_per_device_hour",
    "quick", "source_file",
]

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(text: str, max_len: int = 80) -> str:
    """A file-name fragment from user text: no separators, no '..', never empty."""
    name = _SAFE.sub("-", text).strip(".-")
    name = re.sub(r"\.{2,}", ".", name)
    return (name[:max_len].strip(".-")) or "run"[: max(max_len, 1)]  # idempotent even for max_len < 3


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with _suppress():
            os.unlink(tmp)
        raise


class _suppress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return True


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN; absent is honest
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def write_run(path: Path, run: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(_jsonable(run), indent=1, sort_keys=False) + "\n")


def read_run(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ResultsError(f"{path}: result file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ResultsError(f"{path}: cannot read result file ({exc})") from None
    try:
        run = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ResultsError(f"{path}: not valid JSON (truncated or corrupted?) at line {exc.lineno}: {exc.msg}") from None
    except RecursionError:
        raise ResultsError(f"{path}: not a carbonbench result file (JSON nested too deeply)") from None
    if not isinstance(run, dict) or run.get("schema") != SCHEMA:
        raise ResultsError(f"{path}: not a carbonbench result file (no '\"schema\": \"{SCHEMA}\"')")
    version = run.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ResultsError(f"{path}: schema_version {version!r} is not supported (this carbonbench reads {SCHEMA_VERSION})")
    for key, kind in (("run_id", str), ("points", list), ("scenario", dict)):
        if not isinstance(run.get(key), kind):
            raise ResultsError(f"{path}: key '{key}' is missing or has the wrong type")
    _check_types(path, run)
    _check_grid(path, run)
    return run


# What readers (run_rows, carbon.derive, reports) compute with, group by or iterate over,
# so that a hand-edited or corrupted file is refused here, by name, not with a TypeError later.
_NUMBERS, _STRINGS = "a number", "a string"
_RUN_FIELDS = {
    "": {_STRINGS: ("status",)},
    "scenario": {_STRINGS: ("name",)},  # engine: a name, or a mapping (checked below)
    "scenario.carbon": {_NUMBERS: ("grid_g_per_kwh", "pue"), _STRINGS: ("country", "region")},
    "scenario.cost": {_NUMBERS: ("usd_per_kwh", "usd_per_device_hour")},
    "device": {_NUMBERS: ("count",), _STRINGS: ("type", "name", "dtype")},
    "environment": {_STRINGS: ("hostname",)},
    "idle": {},
}
_POINT_FIELDS = {
    _NUMBERS: ("batch_size", "prompt_tokens", "new_tokens", "seq_len", "params", "peak_memory_bytes", "tokens_per_word"),
    _STRINGS: ("key", "model", "workload", "status", "error"),
}
_REPEAT_FIELDS = {
    _NUMBERS: ("repeat", "steps", "tokens", "flops", "duration_s", "energy_j", "active_energy_j", "ttft_s", "tpot_s",
               "start_unix_s", "model_flops"),  # flops: model_flops type-checked like flops
    _STRINGS: ("status", "energy_method"),
}


def _check_types(path: Path, run: dict[str, Any]) -> None:
    def damaged(where: str, want: str) -> ResultsError:
        return ResultsError(f"{path}: '{where}' is damaged (expected {want})")

    def section(parent: dict, key: str, where: str, optional: bool = True) -> dict:
        value = parent.get(key)
        if not isinstance(value, dict) and not (optional and value is None):
            raise damaged(where, "a mapping")
        return value or {}

    def fields(data: dict, spec: dict, where: str) -> None:
        for want, keys in spec.items():
            for key in keys:
                value = data.get(key)
                ok = value is None or (
                    isinstance(value, str) if want is _STRINGS
                    else isinstance(value, (int, float)) and not isinstance(value, bool)
                )
                if not ok:
                    raise damaged(f"{where}.{key}" if where else key, want)

    for where, spec in _RUN_FIELDS.items():
        data = run
        for i, part in enumerate(where.split(".") if where else []):
            data = section(data, part, ".".join(where.split(".")[: i + 1]))
        fields(data, spec, where)
    for where, engine in (("scenario.engine", run["scenario"].get("engine")), ("engine", run.get("engine"))):
        if engine is not None and not isinstance(engine, str):  # old runs: a name; now a mapping
            fields(section({"e": engine}, "e", where), {_STRINGS: ("name",)}, where)
            section(engine, "options", f"{where}.options")
    power = section(section(run, "idle", "idle"), "power_w", "idle.power_w")
    fields(power, {_NUMBERS: list(power)}, "idle.power_w")
    for i, point in enumerate(run["points"]):
        where = f"points[{i}]"
        if not isinstance(point, dict):
            raise damaged(where, "a mapping")
        fields(point, _POINT_FIELDS, where)
        codecarbon = section(point, "codecarbon", f"{where}.codecarbon")
        fields(codecarbon, {_NUMBERS: ("energy_j", "cpu_energy_j", "gpu_energy_j", "ram_energy_j")}, f"{where}.codecarbon")
        repeats = point.get("repeats")
        if repeats is not None and not isinstance(repeats, list):
            raise damaged(f"{where}.repeats", "a list")
        for j, rep in enumerate(repeats or []):
            rwhere = f"{where}.repeats[{j}]"
            if not isinstance(rep, dict):
                raise damaged(rwhere, "a mapping")
            fields(rep, _REPEAT_FIELDS, rwhere)
            latency = section(rep, "latency_s", f"{rwhere}.latency_s")
            fields(latency, {_NUMBERS: list(latency)}, f"{rwhere}.latency_s")
            for name, comp in section(rep, "components", f"{rwhere}.components").items():
                cwhere = f"{rwhere}.components.{name}"
                if not isinstance(comp, dict):
                    raise damaged(cwhere, "a mapping")
                fields(comp, {_NUMBERS: ("energy_j",), _STRINGS: ("kind", "method")}, cwhere)
                if comp.get("energy_j") is not None and comp.get("method") is None:
                    raise damaged(f"{cwhere}.method", _STRINGS)
            flags = rep.get("flags")
            if flags is not None and not (isinstance(flags, list) and all(isinstance(f, str) for f in flags)):
                raise damaged(f"{rwhere}.flags", "a list of strings")


def _check_grid(path: Path, run: dict[str, Any]) -> None:
    """Rows are priced under their own scenario's grid (runs always record one): one that does
    not resolve is this file's fault, and would otherwise fail every reader without naming it."""
    from carbonbench import grid
    from carbonbench.errors import ConfigError

    carbon = run["scenario"].get("carbon") or {}
    try:
        grid.resolve(carbon.get("country"), carbon.get("region"), carbon.get("grid_g_per_kwh"), where="scenario")
    except ConfigError as exc:
        raise ResultsError(f"{path}: scenario.carbon: {exc}") from None


def result_files(paths: Iterable[str | Path]) -> list[Path]:
    """Expand directories into their result files (not timelines), keeping order."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(sorted(f for f in p.rglob("*.json") if not f.name.startswith(".")))
        elif p.exists():
            files.append(p)
        else:
            raise ResultsError(f"{p}: no such result file or directory")
    return files


def load(paths: Iterable[str | Path] | str | Path, *, on_error: str = "raise", derive: bool = True) -> pd.DataFrame:
    """Read result files/directories from any machine into one tidy DataFrame.

    One row per point and repeat (a failed point without repeats gives one row). With
    ``on_error="skip"``, damaged files are skipped with a warning naming each one.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    rows: list[dict[str, Any]] = []
    for f in result_files(paths):
        try:
            run = read_run(f)
        except ResultsError as exc:
            if on_error == "skip":
                import warnings

                warnings.warn(f"skipped {exc}", stacklevel=2)
                continue
            raise
        rows.extend(run_rows(run, source=f))
    df = pd.DataFrame(rows, columns=COLUMNS)
    if derive:
        from carbonbench.carbon import derive as add_derived

        df = add_derived(df)
    return df


def run_rows(run: dict[str, Any], source: Optional[Path] = None) -> list[dict[str, Any]]:
    scenario = run.get("scenario", {})
    carbon, cost = scenario.get("carbon") or {}, scenario.get("cost") or {}
    device = run.get("device") or {}
    env = run.get("environment") or {}
    idle = run.get("idle") or {}
    idle_power = idle.get("power_w") or {}
    base = {
        "run_id": run.get("run_id"),
        "run_status": run.get("status"),
        "scenario": scenario.get("name"),
        "hostname": env.get("hostname"),
        "device_type": device.get("type"),
        "device_name": device.get("name"),
        "n_devices": device.get("count", 1),
        **_engine_columns(run),
        "dtype": device.get("dtype"),
        "grid_country": carbon.get("country"),
        "grid_region": carbon.get("region"),
        "grid_g_per_kwh": carbon.get("grid_g_per_kwh"),
        "pue": carbon.get("pue", 1.0),
        "usd_per_kwh": cost.get("usd_per_kwh"),
        "usd_per_device_hour": cost.get("usd_per_device_hour"),
        "quick": run.get("quick", False),
        "source_file": str(source) if source else None,
        "idle_power_w": _sum_known(idle_power.values()),
    }
    rows = []
    for point in run["points"]:
        if not isinstance(point, dict):
            continue
        prow = dict(base)
        prow.update({k: point.get(k) for k in POINT_COLUMNS})
        prow.update(
            params=point.get("params"),
            status=point.get("status"),
            error=point.get("error"),
            peak_memory_bytes=point.get("peak_memory_bytes"),
            tokens_per_word=point.get("tokens_per_word"),
        )
        repeats = point.get("repeats") or []
        if not repeats:
            rows.append({**prow, "repeat": 0})
            continue
        for rep in repeats:
            row = dict(prow)
            row.update(_repeat_columns(rep))
            # A point that failed after some repeats keeps them, marked with its status.
            row["status"] = rep.get("status", point.get("status"))
            rows.append(row)
    return rows


def _repeat_columns(rep: dict[str, Any]) -> dict[str, Any]:
    comps = rep.get("components") or {}
    by_kind: dict[str, list[dict]] = {}
    for c in comps.values():
        by_kind.setdefault(c.get("kind"), []).append(c)
    tokens, duration, energy = rep.get("tokens"), rep.get("duration_s"), rep.get("energy_j")
    latency = rep.get("latency_s") or {}
    out = {
        "repeat": rep.get("repeat"),
        "tokens": tokens,
        "steps": rep.get("steps"),
        "duration_s": duration,
        "flops": rep.get("flops"),
        "model_flops": rep.get("model_flops"),  # flops: absent (NaN) in files before it
        "tokens_per_s": tokens / duration if tokens and duration else None,
        "energy_j": energy,
        "energy_method": rep.get("energy_method"),
        "active_energy_j": rep.get("active_energy_j"),
        "joules_per_token": energy / tokens if energy is not None and tokens else None,
        "ttft_s": rep.get("ttft_s"),
        "tpot_s": rep.get("tpot_s"),
        "latency_p50_s": latency.get("p50"),
        "latency_p90_s": latency.get("p90"),
        "latency_p99_s": latency.get("p99"),
        "flags": ",".join(rep.get("flags") or []),
        "start_unix_s": rep.get("start_unix_s"),
    }
    for kind in ("gpu", "cpu", "dram"):
        parts = by_kind.get(kind, [])
        out[f"energy_{kind}_j"] = _sum_known(c.get("energy_j") for c in parts)
        methods = sorted({c.get("method") for c in parts if c.get("energy_j") is not None})
        out[f"energy_{kind}_method"] = "+".join(methods) if methods else ("none" if parts else None)
    # codecarbon measured the same window alongside: its figures, and ours minus its.
    cc = rep.get("codecarbon") or {}
    for ours, name in (("energy_j", "energy_j"), ("energy_cpu_j", "cpu_energy_j"),
                       ("energy_gpu_j", "gpu_energy_j"), ("energy_dram_j", "ram_energy_j")):
        theirs = cc.get(name)
        out[f"codecarbon_{name}"] = theirs
        mine = energy if ours == "energy_j" else out[ours]
        out[f"codecarbon_{name.removesuffix('_j')}_diff_j"] = (
            mine - theirs if mine is not None and theirs is not None else None
        )
    return out


def _engine_columns(run: dict[str, Any]) -> dict[str, Any]:
    """engine (its name) and engine_options ("compile=false,cuda_graphs=false,...", the
    options in effect as the run recorded them). Older runs give a plain name only."""
    engine = run.get("engine") or (run.get("scenario") or {}).get("engine") or "native"
    if isinstance(engine, str):
        return {"engine": engine, "engine_options": None}
    options = engine.get("options", {k: v for k, v in engine.items() if k != "name"})
    text = ",".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in sorted(options.items()))
    return {"engine": engine.get("name", "native"), "engine_options": text or None}


def _sum_known(values: Iterable[Any]) -> Optional[float]:
    known = [v for v in values if isinstance(v, (int, float)) and v is not None]
    return float(sum(known)) if known else None
