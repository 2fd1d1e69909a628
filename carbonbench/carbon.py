"""The conversion of measured energy into CO2e and dollars (settings: carbonbench.settings).

Energy is what gets measured; CO2e and dollars are derived here when results are read,
so one measurement can be shown under any grid, PUE or price (``where_to_run``).

    facility energy = measured energy x PUE
    operational CO2e = facility energy x grid intensity
    cost = facility energy x $/kWh + device-hours x $/device-hour
    embodied CO2e = device-hours x (device kgCO2e / (lifetime hours x utilisation))

Embodied carbon is off by default and always kept in its own columns, never added to
operational carbon: the two are different kinds of figure with different uncertainties.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from carbonbench import grid as gridmod
from carbonbench.errors import ConfigError, ResultsError
from carbonbench.grid import GridIntensity
from carbonbench.hardware import Hardware, match_device
from carbonbench.records import POINT_KEYS_WITH_MACHINE
from carbonbench.serve_records import DERIVED as REQUEST_COLUMNS
from carbonbench.serve_records import derive_request_columns
from carbonbench.settings import HOURS_PER_YEAR, CarbonConfig, CostConfig, EmbodiedConfig

__all__ = ["CarbonConfig", "CostConfig", "EmbodiedConfig", "HOURS_PER_YEAR", "derive", "where_to_run"]

J_PER_KWH = 3.6e6
MILLION = 1e6

# Where a row is, in the results: the scenario's settings, one column each.
GRID_COLUMNS = ("grid_country", "grid_region", "grid_g_per_kwh")
_NUMERIC = ("energy_j", "tokens", "duration_s", "n_devices", "flops", "model_flops")
_SIXTEEN_BIT = {"float16", "fp16", "half", "bfloat16", "bf16"}

DERIVED_COLUMNS = (
    "grid_g_per_kwh",
    "grid_source",
    "energy_kwh",
    "facility_energy_kwh",
    "device_hours",
    "joules_per_token",
    "kwh_per_million_tokens",
    "facility_kwh_per_million_tokens",
    "co2e_g",
    "co2e_g_per_million_tokens",
    "cost_usd",
    "usd_per_million_tokens",
    "usd_electricity_per_million_tokens",
    "usd_rental_per_million_tokens",
    "tokens_per_joule",
    "achieved_flops_per_s",
    "achieved_model_flops_per_s",
    "hardware",
    "peak_flops_per_s",
    "mfu",
    "hfu",
    *REQUEST_COLUMNS,
)
EMBODIED_COLUMNS = ("embodied_co2e_g", "embodied_co2e_g_per_million_tokens", "embodied_source")

DEFAULT_PLACES: tuple[tuple[str, Optional[str]], ...] = (
    ("FRA", None),
    ("CAN", "quebec"),
    ("USA", None),
    ("DEU", None),
    ("POL", None),
    ("IND", None),
)


def derive(
    df: pd.DataFrame,
    carbon: Optional[CarbonConfig] = None,
    cost: Optional[CostConfig] = None,
    embodied: Optional[EmbodiedConfig] = None,
    *,
    hardware_file: Optional[str] = None,
) -> pd.DataFrame:
    """A copy of ``df`` with carbon, cost and efficiency columns added (see DERIVED_COLUMNS).

    Without ``carbon``/``cost`` each row is priced under its own scenario settings
    (grid_country, grid_region, grid_g_per_kwh, pue, usd_per_kwh, usd_per_device_hour);
    with them, every row is re-priced under the given ones and those columns are
    overwritten to match. Embodied columns appear only when embodied carbon is enabled,
    by ``embodied`` or by ``carbon.embodied``.
    """
    grid = carbon.intensity(where="override") if carbon is not None else None
    pue = carbon.pue if carbon is not None else None
    if embodied is None and carbon is not None:
        embodied = carbon.embodied
    out = _derive(df, grid, pue, cost, embodied, hardware_file)
    if carbon is not None:
        out["grid_country"] = carbon.country if carbon.grid_g_per_kwh is None else None
        out["grid_region"] = carbon.region if carbon.grid_g_per_kwh is None else None
    return out


def where_to_run(
    df: pd.DataFrame,
    places: Sequence[tuple[str, Optional[str]]] = DEFAULT_PLACES,
    *,
    pue: Optional[float] = None,
    cost: Optional[CostConfig] = None,
    aggregate: bool = True,
    hardware_file: Optional[str] = None,
) -> pd.DataFrame:
    """The same measurements priced under several grids: one row per point and place.

    ``pue`` None keeps each row's own PUE. With ``aggregate``, repeats of a point are
    averaged (ok rows only) and counted in ``repeats``.
    """
    if pue is not None and not pue >= 1.0:
        raise ConfigError(f"PUE must be >= 1.0 (got {pue})")
    frames = []
    for country, region in places:
        g = gridmod.resolve(country, region)
        d = _derive(df, g, pue, cost, None, hardware_file)
        d.insert(0, "place", g.label)
        d["grid_country"], d["grid_region"] = g.country, g.region
        frames.append(d)
    keys = ["place", "grid_country", "grid_region", "grid_g_per_kwh", "grid_source"]
    keys += [c for c in _POINT_KEYS if c in df.columns]
    metrics = [
        "joules_per_token",
        "kwh_per_million_tokens",
        "facility_kwh_per_million_tokens",
        "co2e_g_per_million_tokens",
        "usd_per_million_tokens",
    ]
    if not frames:
        return pd.DataFrame(columns=keys + metrics + (["repeats"] if aggregate else []))
    table = pd.concat(frames, ignore_index=True)
    if not aggregate:
        return table[keys + metrics + (["repeat"] if "repeat" in table.columns else [])]
    if "status" in table.columns:
        table = table[table["status"] == "ok"]
    grouped = table.groupby(keys, dropna=False, sort=False)
    result = grouped[metrics].mean()
    result["repeats"] = grouped.size()
    return result.reset_index()


_POINT_KEYS = POINT_KEYS_WITH_MACHINE


def _derive(
    df: pd.DataFrame,
    grid: Optional[GridIntensity],
    pue: Optional[float],
    cost: Optional[CostConfig],
    embodied: Optional[EmbodiedConfig],
    hardware_file: Optional[str],
) -> pd.DataFrame:
    out = df.copy()
    for col in _NUMERIC:
        out[col] = pd.to_numeric(out[col], errors="coerce") if col in out.columns else np.nan
    for col in ("device_name", "device_type", "dtype"):
        if col not in out.columns:
            out[col] = None
    _require_settings(out, grid is None, pue is None, cost is None)

    if grid is not None:
        out["grid_g_per_kwh"] = float(grid.g_per_kwh)
        out["grid_source"] = grid.source
    else:
        out["grid_g_per_kwh"], out["grid_source"] = _resolve_rows(out)
    if pue is not None:
        out["pue"] = float(pue)
    if cost is not None:
        out["usd_per_kwh"] = float(cost.usd_per_kwh)
        out["usd_per_device_hour"] = float(cost.usd_per_device_hour)
    for col in ("pue", "usd_per_kwh", "usd_per_device_hour"):
        out[col] = pd.to_numeric(out[col], errors="coerce")

    tokens = out["tokens"]
    out["energy_kwh"] = out["energy_j"] / J_PER_KWH
    out["facility_energy_kwh"] = out["energy_kwh"] * out["pue"]
    out["device_hours"] = out["duration_s"] * out["n_devices"] / 3600.0
    # Keep the results' own figure where it has one; fill it where it does not.
    computed = _per(out["energy_j"], tokens)
    if "joules_per_token" in out.columns:
        out["joules_per_token"] = pd.to_numeric(out["joules_per_token"], errors="coerce").fillna(computed)
    else:
        out["joules_per_token"] = computed
    out["kwh_per_million_tokens"] = _per(out["energy_kwh"], tokens) * MILLION
    out["facility_kwh_per_million_tokens"] = _per(out["facility_energy_kwh"], tokens) * MILLION
    out["co2e_g"] = out["facility_energy_kwh"] * out["grid_g_per_kwh"]
    out["co2e_g_per_million_tokens"] = _per(out["co2e_g"], tokens) * MILLION
    electricity = out["facility_energy_kwh"] * out["usd_per_kwh"]
    rental = out["device_hours"] * out["usd_per_device_hour"]
    out["cost_usd"] = electricity + rental
    out["usd_electricity_per_million_tokens"] = _per(electricity, tokens) * MILLION
    out["usd_rental_per_million_tokens"] = _per(rental, tokens) * MILLION
    out["usd_per_million_tokens"] = _per(out["cost_usd"], tokens) * MILLION
    out["tokens_per_joule"] = _per(tokens, out["energy_j"])
    # flops counts what the engine executed (recomputation included), model_flops the
    # published convention (carbonbench.flops); files from before model_flops give NaN.
    out["achieved_flops_per_s"] = _per(out["flops"], out["duration_s"])
    out["achieved_model_flops_per_s"] = _per(out["model_flops"], out["duration_s"])

    derive_request_columns(out)  # serve points: per 1,000 requests
    hardware = _match_rows(out, hardware_file)
    out["hardware"] = [hw.name if hw is not None else None for hw in hardware]
    peak = pd.Series(
        [hw.peak_bf16_flops if hw is not None else np.nan for hw in hardware], index=out.index, dtype=float
    )
    out["peak_flops_per_s"] = peak * out["n_devices"]
    # The table holds 16-bit tensor-core peaks only; an fp32 run's MFU against them
    # would be a different quantity, so it is left out rather than misreported.
    sixteen_bit = out["dtype"].map(is_sixteen_bit).astype(bool)
    out["mfu"] = _per(out["achieved_model_flops_per_s"], out["peak_flops_per_s"]).where(sixteen_bit)
    out["hfu"] = _per(out["achieved_flops_per_s"], out["peak_flops_per_s"]).where(sixteen_bit)

    if embodied is not None and embodied.enabled:
        per_hour = [embodied.per_device_hour(hw) for hw in hardware]
        g_per_device_hour = pd.Series([g for g, _ in per_hour], index=out.index, dtype=float)
        out["embodied_co2e_g"] = out["device_hours"] * g_per_device_hour
        out["embodied_co2e_g_per_million_tokens"] = _per(out["embodied_co2e_g"], tokens) * MILLION
        out["embodied_source"] = [s for _, s in per_hour]
    return out


def _per(num: pd.Series, den: pd.Series) -> pd.Series:
    """num / den, NaN where den is zero, negative or missing (no inf in results)."""
    num = pd.to_numeric(num, errors="coerce").astype(float)
    den = pd.to_numeric(den, errors="coerce").astype(float)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        ratio = (num / den.where(den > 0)).astype(float)
    return ratio.where(np.isfinite(ratio))


def is_sixteen_bit(dtype) -> bool:
    if not isinstance(dtype, str):
        return False
    return dtype.lower().removeprefix("torch.") in _SIXTEEN_BIT


def _require_settings(df: pd.DataFrame, need_grid: bool, need_pue: bool, need_cost: bool) -> None:
    needed = []
    if need_grid:
        needed += [c for c in GRID_COLUMNS if c not in df.columns]
    if need_pue and "pue" not in df.columns:
        needed.append("pue")
    if need_cost:
        needed += [c for c in ("usd_per_kwh", "usd_per_device_hour") if c not in df.columns]
    if not needed:
        return
    if len(df) == 0:
        for col in needed:
            df[col] = np.nan
        return
    raise ResultsError(
        f"results lack the scenario settings {', '.join(needed)}: pass explicit carbon/cost settings "
        "(e.g. --country, --pue, --usd-per-kwh) to price them"
    )


def _resolve_rows(df: pd.DataFrame) -> tuple[list, list]:
    """Per-row intensity and source. Rows already derived keep theirs (derive is idempotent)."""
    already = df["grid_source"] if "grid_source" in df.columns else pd.Series(None, index=df.index, dtype=object)
    cache: dict = {}
    values, sources = [], []
    for country, region, explicit, source, current in zip(
        df["grid_country"], df["grid_region"], df["grid_g_per_kwh"], already, df["grid_g_per_kwh"]
    ):
        if isinstance(source, str) and source:
            values.append(float(current))
            sources.append(source)
            continue
        key = (_key(country), _key(region), _key(explicit))
        if key not in cache:
            cache[key] = gridmod.resolve(country, region, explicit, where="scenario")
        values.append(cache[key].g_per_kwh)
        sources.append(cache[key].source)
    return values, sources


def _key(value):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def _match_rows(df: pd.DataFrame, hardware_file: Optional[str]) -> list[Optional[Hardware]]:
    cache: dict = {}
    matched = []
    for device_type, name in zip(df["device_type"], df["device_name"]):
        if device_type == "cpu":
            matched.append(None)
            continue
        if name not in cache:
            cache[name] = match_device(name, hardware_file)
        matched.append(cache[name])
    return matched
