"""Estimates from measured results: one measured point, pooled, and the inference load
it would serve (daily and yearly energy, CO2e and dollars).

``select_point`` picks the one point of a results DataFrame left after filtering;
``estimate_inference`` scales its J/token to a load. Training estimates from a measured
MFU use the same point (carbonbench.estimate).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Optional

import pandas as pd

from carbonbench.carbon import HOURS_PER_YEAR, J_PER_KWH, CostConfig, EmbodiedConfig, is_sixteen_bit
from carbonbench.equivalents import equivalents
from carbonbench.errors import UserError
from carbonbench.estimate import Facility, _Flat, _positive, finite
from carbonbench.grid import GridIntensity
from carbonbench.hardware import Hardware, match_device
from carbonbench.records import POINT_KEYS_WITH_MACHINE


@dataclass(frozen=True)
class MeasuredPoint:
    """One measured point of a results file, repeats pooled (ok rows only)."""

    description: str
    model: Optional[str]
    workload: Optional[str]
    device_name: Optional[str]
    device_type: Optional[str]
    n_devices: int
    hardware: Optional[Hardware]
    repeats: int
    tokens: float
    energy_j: float
    duration_s: float
    flops: float  # hardware FLOPs: what the engine ran, recomputation included
    model_flops: float  # the published convention (carbonbench.flops); NaN in older files
    dtype: Optional[str]
    grid: Optional[GridIntensity]  # the intensity the results were priced under
    pue: Optional[float]
    usd_per_kwh: Optional[float]
    usd_per_device_hour: Optional[float]

    @property
    def joules_per_token(self) -> float:
        return self.energy_j / self.tokens

    @property
    def device_hours_per_token(self) -> float:
        return self.duration_s * self.n_devices / 3600.0 / self.tokens

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.duration_s

    @property
    def mfu(self) -> Optional[float]:
        """Pooled model FLOPs utilisation against the datasheet peak (16-bit, known hardware)."""
        return self._utilisation(self.model_flops)

    @property
    def hfu(self) -> Optional[float]:
        """Pooled hardware FLOPs utilisation: recomputation counted as work."""
        return self._utilisation(self.flops)

    def _utilisation(self, flops: float) -> Optional[float]:
        if self.hardware is None or not (flops > 0) or not is_sixteen_bit(self.dtype):
            return None
        return flops / self.duration_s / (self.hardware.peak_bf16_flops * self.n_devices)


@dataclass(frozen=True)
class InferenceEstimate(_Flat):
    mode: str
    point: str
    model: Optional[str]
    device_name: Optional[str]
    n_devices: int
    requests_per_day: float
    tokens_per_request: float
    tokens_per_day: float
    joules_per_token: float
    tokens_per_s: float
    device_hours_per_day: float
    devices_busy: float
    it_energy_kwh_per_day: float
    energy_kwh_per_day: float
    pue: float
    grid_g_per_kwh: float
    grid_source: str
    co2e_kg_per_day: float
    electricity_cost_usd_per_day: float
    rental_cost_usd_per_day: float
    cost_usd_per_day: float
    energy_mwh_per_year: float
    co2e_t_per_year: float
    cost_usd_per_year: float
    embodied_co2e_kg_per_day: Optional[float]
    embodied_source: str
    assumptions: tuple[str, ...]
    equivalents: tuple


def estimate_inference(
    point: MeasuredPoint,
    *,
    requests_per_day: float,
    tokens_per_request: float,
    facility: Facility,
) -> InferenceEstimate:
    """Daily energy, CO2e and dollars of serving a load at a measured point's efficiency."""
    _positive("requests per day", requests_per_day)
    _positive("tokens per request", tokens_per_request)
    tokens_per_day = requests_per_day * tokens_per_request
    it_kwh = tokens_per_day * point.joules_per_token / J_PER_KWH
    kwh = it_kwh * facility.pue
    device_hours = tokens_per_day * point.device_hours_per_token
    co2e_g = kwh * facility.grid.g_per_kwh
    electricity = kwh * facility.cost.usd_per_kwh
    rental = device_hours * facility.cost.usd_per_device_hour
    embodied_g, embodied_source = facility.embodied_g(device_hours, point.hardware)
    assumptions = [
        f"every token served costs what it cost in the measured point: {point.description}; "
        f"{point.joules_per_token:.4g} J/token at {point.tokens_per_s:.4g} tokens/s "
        f"(tokens as that workload counts them, pooled over {point.repeats} repeat(s))",
        "the load keeps the devices as busy as the benchmark did: no idle time between "
        "requests, no batching or prompt/decode mix other than the measured one",
        f"measured energy covers the whole device(s) ({point.n_devices} x {point.device_name}), idle draw included",
        *facility.assumptions(),
    ]
    if embodied_source:
        assumptions.append(f"embodied carbon shown separately: {embodied_source}")
    days_per_year = HOURS_PER_YEAR / 24.0
    return finite(
        InferenceEstimate(
            mode="inference",
            point=point.description,
            model=point.model,
            device_name=point.device_name,
            n_devices=point.n_devices,
            requests_per_day=float(requests_per_day),
            tokens_per_request=float(tokens_per_request),
            tokens_per_day=tokens_per_day,
            joules_per_token=point.joules_per_token,
            tokens_per_s=point.tokens_per_s,
            device_hours_per_day=device_hours,
            devices_busy=device_hours / 24.0,
            it_energy_kwh_per_day=it_kwh,
            energy_kwh_per_day=kwh,
            pue=facility.pue,
            grid_g_per_kwh=facility.grid.g_per_kwh,
            grid_source=facility.grid.source,
            co2e_kg_per_day=co2e_g / 1e3,
            electricity_cost_usd_per_day=electricity,
            rental_cost_usd_per_day=rental,
            cost_usd_per_day=electricity + rental,
            energy_mwh_per_year=kwh * days_per_year / 1e3,
            co2e_t_per_year=co2e_g * days_per_year / 1e6,
            cost_usd_per_year=(electricity + rental) * days_per_year,
            embodied_co2e_kg_per_day=None if embodied_g is None else embodied_g / 1e3,
            embodied_source=embodied_source,
            assumptions=tuple(assumptions),
            equivalents=tuple(equivalents(co2e_g)),
        )
    )


def facility_for_point(
    point: MeasuredPoint,
    *,
    grid: Optional[GridIntensity] = None,
    pue: Optional[float] = None,
    usd_per_kwh: Optional[float] = None,
    usd_per_device_hour: Optional[float] = None,
    embodied: Optional[EmbodiedConfig] = None,
) -> Facility:
    """The point's own settings from its results, each overridden where one is given."""
    grid = grid or point.grid
    if grid is None:
        raise UserError("the results carry no grid intensity for this point: give --country or --grid-g-per-kwh")
    defaults = CostConfig()
    kwh_price = _pick(usd_per_kwh, point.usd_per_kwh, defaults.usd_per_kwh)
    hour_price = _pick(usd_per_device_hour, point.usd_per_device_hour, defaults.usd_per_device_hour)
    chosen_pue = _pick(pue, point.pue, 1.0)
    return Facility(
        grid=grid,
        pue=chosen_pue[0],
        cost=CostConfig(kwh_price[0], hour_price[0]),
        embodied=embodied or EmbodiedConfig(),
        pue_note=chosen_pue[1],
        cost_note=", ".join(
            f"{what} {how}" for what, how in (("$/kWh", kwh_price[1]), ("$/device-hour", hour_price[1]))
        ),
    )


def _pick(given, from_results, default) -> tuple[float, str]:
    if given is not None:
        return float(given), "given"
    if from_results is not None:
        return float(from_results), "from the results' scenario"
    return float(default), "default"


# Columns that identify a point (repeats of a point share them).
POINT_KEYS = POINT_KEYS_WITH_MACHINE


def select_point(
    df: pd.DataFrame,
    *,
    source: str = "results",
    workloads: Optional[tuple[str, ...]] = None,
    select: Optional[Mapping[str, str]] = None,
    hardware_file: Optional[str] = None,
) -> MeasuredPoint:
    """The one point of ``df`` left after filtering; a UserError if none or several remain.

    ``select`` maps column names to values (compared as text, so '8' matches 8).
    """
    rows = df
    if "status" in rows.columns:
        rows = rows[rows["status"] == "ok"]
    for col in ("tokens", "energy_j", "duration_s"):
        if col not in rows.columns:
            raise UserError(f"{source}: results lack the column '{col}'")
        rows = rows[pd.to_numeric(rows[col], errors="coerce") > 0]
    if workloads is not None and "workload" in rows.columns:
        rows = rows[rows["workload"].isin(workloads)]
    for key, value in (select or {}).items():
        if key not in df.columns:
            raise UserError(
                f"--select {key}={value}: results have no column '{key}'; "
                f"choose among {', '.join(c for c in POINT_KEYS if c in df.columns)}"
            )
        rows = rows[rows[key].map(_as_text) == _as_text(value)]
    what = f" with workload {'/'.join(workloads)}" if workloads else ""
    if rows.empty:
        raise UserError(f"{source}: no successful measured point{what} matches" + _selection_text(select))
    keys = [c for c in POINT_KEYS if c in rows.columns]
    groups = list(rows.groupby(keys, dropna=False, sort=True)) if keys else [((), rows)]
    if len(groups) > 1:
        listed = "; ".join(_describe(g.iloc[0], keys) for _, g in groups[:8])
        more = f" (and {len(groups) - 8} more)" if len(groups) > 8 else ""
        raise UserError(
            f"{source}: {len(groups)} measured points{what} match; pick one with --select KEY=VALUE "
            f"(e.g. --select batch_size=8): {listed}{more}"
        )
    _, group = groups[0]
    first = group.iloc[0]
    num = {c: pd.to_numeric(group[c], errors="coerce") for c in ("tokens", "energy_j", "duration_s")}
    flops, model_flops = (_pooled(group, col) for col in ("flops", "model_flops"))
    n_devices = int(_get(first, "n_devices", 1) or 1)
    device_type = _get(first, "device_type")
    device_name = _get(first, "device_name")
    hw = match_device(device_name, hardware_file) if device_type != "cpu" else None
    grid = None
    if isinstance(_get(first, "grid_source"), str) and _number(_get(first, "grid_g_per_kwh")) is not None:
        grid = GridIntensity(float(first["grid_g_per_kwh"]), f"{first['grid_source']} (as in {source})")
    return MeasuredPoint(
        description=f"{_describe(first, keys)} in {source}",
        model=_get(first, "model"),
        workload=_get(first, "workload"),
        device_name=device_name,
        device_type=device_type,
        n_devices=n_devices,
        hardware=hw,
        repeats=len(group),
        tokens=float(num["tokens"].sum()),
        energy_j=float(num["energy_j"].sum()),
        duration_s=float(num["duration_s"].sum()),
        flops=flops,
        model_flops=model_flops,
        dtype=_get(first, "dtype"),
        grid=grid,
        pue=_number(_get(first, "pue")),
        usd_per_kwh=_number(_get(first, "usd_per_kwh")),
        usd_per_device_hour=_number(_get(first, "usd_per_device_hour")),
    )


def _pooled(group: pd.DataFrame, col: str) -> float:
    """The sum over the repeats, or NaN when any repeat lacks the figure."""
    if col not in group.columns:
        return math.nan
    values = pd.to_numeric(group[col], errors="coerce")
    return float(values.sum()) if values.notna().all() else math.nan


def _get(row: pd.Series, key: str, default=None):
    if key not in row.index:
        return default
    value = row[key]
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return default
    return value.item() if hasattr(value, "item") else value


def _number(value) -> Optional[float]:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _as_text(value) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip().lower()


def _describe(row: pd.Series, keys: list[str]) -> str:
    shown = (
        "model",
        "workload",
        "dtype",
        "batch_size",
        "prompt_tokens",
        "new_tokens",
        "seq_len",
        "device_name",
        "n_devices",
    )
    sizes = ("prompt_tokens", "new_tokens", "seq_len")  # 0 means "not this workload's size"
    parts = [
        f"{k}={_as_text(row[k]) if isinstance(row[k], float) else row[k]}"
        for k in shown
        if k in keys and _get(row, k) is not None and not (k in sizes and _get(row, k) == 0)
    ]
    return " ".join(parts) or "the only point"


def _selection_text(select: Optional[Mapping[str, str]]) -> str:
    if not select:
        return ""
    return " " + " ".join(f"{k}={v}" for k, v in select.items())
