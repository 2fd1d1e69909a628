"""Whole-job estimates: training from a model, power from first principles, inference.

Pure functions over small dataclasses; each result flattens to a dict whose keys carry
their units (energy_mwh, co2e_t, device_hours, wall_days, cost_usd, flops) and an
``assumptions`` list that says, in words, everything the numbers rest on.

Training:
    FLOPs        = 6 N D, or 8 N D with activation recomputation (one extra forward)
    wall time    = FLOPs / (devices x achieved FLOP/s per device)
    achieved     = MFU x datasheet peak, or given directly, or measured (results file)
    device-hours = devices x wall time
    IT energy    = device-hours x device power (default: the device's TDP)
    energy       = IT energy x PUE;  CO2e = energy x grid intensity
    cost         = energy x $/kWh + device-hours x $/device-hour
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, Mapping, Optional

import pandas as pd

from carbonbench.carbon import HOURS_PER_YEAR, CostConfig, EmbodiedConfig, is_sixteen_bit
from carbonbench.equivalents import equivalents
from carbonbench.errors import UserError
from carbonbench.grid import GridIntensity
from carbonbench.hardware import Hardware, match_device

FORWARD_BACKWARD_FLOPS_PER_PARAM_TOKEN = 6  # 2 forward + 4 backward (Kaplan et al. 2020)
RECOMPUTE_FLOPS_PER_PARAM_TOKEN = 8  # plus a second forward to rebuild activations


@dataclass(frozen=True)
class Facility:
    """Where and at what price the devices run: grid, PUE, prices, embodied carbon."""

    grid: GridIntensity
    pue: float = 1.0
    cost: CostConfig = field(default_factory=CostConfig)
    embodied: EmbodiedConfig = field(default_factory=EmbodiedConfig)
    pue_note: str = ""  # where the PUE came from, when it matters ("default", "results")
    cost_note: str = ""

    def __post_init__(self):
        if not (math.isfinite(self.pue) and self.pue >= 1.0):
            raise UserError(f"PUE must be a number >= 1.0 (got {self.pue})")

    def assumptions(self) -> list[str]:
        notes = [
            f"PUE {float(self.pue)}{' (' + self.pue_note + ')' if self.pue_note else ''}: facility energy = "
            f"device energy x {float(self.pue)}"
            + ("; 1.0 means no cooling or power-delivery overhead is counted" if self.pue == 1.0 else ""),
            f"grid intensity {self.grid.g_per_kwh:.4g} gCO2e/kWh ({self.grid.source}), a yearly average",
            f"electricity ${self.cost.usd_per_kwh:g}/kWh and device rental "
            f"${self.cost.usd_per_device_hour:g}/device-hour{' (' + self.cost_note + ')' if self.cost_note else ''}",
        ]
        if not self.embodied.enabled:
            notes.append("embodied (manufacturing) carbon not included")
        return notes

    def embodied_g(self, device_hours: float, hardware: Optional[Hardware]) -> tuple[Optional[float], str]:
        if not self.embodied.enabled:
            return None, ""
        per_hour, source = self.embodied.per_device_hour(hardware)
        if math.isnan(per_hour):
            raise UserError(f"embodied carbon: {source} (--embodied-kgco2e with --embodied-source)")
        return device_hours * per_hour, source


class _Flat:
    """Flattening for the result dataclasses: plain dicts with unit-named keys."""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                value = [v.to_dict() if hasattr(v, "to_dict") else v for v in value]
            out[f.name] = value
        return out


@dataclass(frozen=True)
class TrainingEstimate(_Flat):
    mode: str
    model: Optional[str]
    params: int
    tokens: float
    recompute: bool
    flops_per_param_token: int
    flops: float
    hardware: str
    devices: int
    peak_flops_per_s_per_device: float
    achieved_flops_per_s_per_device: float
    mfu: float
    device_power_w: float
    wall_hours: float
    wall_days: float
    device_hours: float
    it_energy_mwh: float
    energy_mwh: float
    pue: float
    grid_g_per_kwh: float
    grid_source: str
    co2e_t: float
    electricity_cost_usd: float
    rental_cost_usd: float
    cost_usd: float
    embodied_co2e_t: Optional[float]
    embodied_source: str
    assumptions: tuple[str, ...]
    equivalents: tuple


@dataclass(frozen=True)
class PowerEstimate(_Flat):
    mode: str
    devices: int
    device_power_w: float
    wall_hours: float
    wall_days: float
    device_hours: float
    it_energy_mwh: float
    energy_mwh: float
    pue: float
    grid_g_per_kwh: float
    grid_source: str
    co2e_t: float
    electricity_cost_usd: float
    rental_cost_usd: float
    cost_usd: float
    embodied_co2e_t: Optional[float]
    embodied_source: str
    assumptions: tuple[str, ...]
    equivalents: tuple


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
    flops: float
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
        """Pooled MFU against the datasheet peak, for 16-bit points on known hardware."""
        if self.hardware is None or not (self.flops > 0) or not is_sixteen_bit(self.dtype):
            return None
        return self.flops / self.duration_s / (self.hardware.peak_bf16_flops * self.n_devices)


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


def training_flops(params: float, tokens: float, recompute: bool = False) -> float:
    """6 N D, or 8 N D when activations are recomputed in the backward pass."""
    _positive("params", params)
    _positive("tokens", tokens)
    k = RECOMPUTE_FLOPS_PER_PARAM_TOKEN if recompute else FORWARD_BACKWARD_FLOPS_PER_PARAM_TOKEN
    return float(k) * params * tokens


def estimate_training(
    *,
    params: int,
    tokens: float,
    hardware: Hardware,
    devices: int,
    facility: Facility,
    mfu: Optional[float] = None,
    achieved_flops_per_s: Optional[float] = None,
    mfu_source: str = "given",
    device_power_w: Optional[float] = None,
    recompute: bool = False,
    model: Optional[str] = None,
) -> TrainingEstimate:
    _count("devices", devices)
    if (mfu is None) == (achieved_flops_per_s is None):
        raise UserError("give exactly one of an MFU or an achieved FLOP/s per device")
    peak = hardware.peak_bf16_flops
    if mfu is not None:
        if not (0 < mfu <= 1):
            raise UserError(f"MFU must be in (0, 1] (got {mfu})")
        achieved = mfu * peak
    else:
        _positive("achieved FLOP/s per device", achieved_flops_per_s)
        achieved = float(achieved_flops_per_s)
        mfu = achieved / peak
        if mfu > 1:
            raise UserError(
                f"{achieved / 1e12:g} TFLOP/s per device is above the {hardware.description} "
                f"peak of {peak / 1e12:g} TFLOP/s"
            )
    power, power_note = _device_power(device_power_w, hardware)
    k = RECOMPUTE_FLOPS_PER_PARAM_TOKEN if recompute else FORWARD_BACKWARD_FLOPS_PER_PARAM_TOKEN
    flops = training_flops(params, tokens, recompute)
    wall_s = flops / (devices * achieved)
    device_hours = devices * wall_s / 3600.0
    e = _energy(device_hours, power, facility, hardware)

    who = f"{model} ({params:,} parameters)" if model else f"{params:,} parameters"
    assumptions = [
        f"FLOPs = {k} N D: "
        + ("6 N D for forward and backward plus 2 N D for recomputing activations"
           if recompute else "forward and backward, no activation recomputation")
        + f"; N = {who}, D = {tokens:.4g} tokens; attention FLOPs are not counted",
        f"throughput {achieved / 1e12:.4g} TFLOP/s per device ({mfu_source}) = {mfu:.1%} of the "
        f"{hardware.description} dense bf16/fp16 peak of {peak / 1e12:g} TFLOP/s ({hardware.source})"
        + ("; counts the FLOPs the devices execute, recomputation included" if recompute else ""),
        f"all {devices:,} devices busy for the whole job: no failures, restarts, evaluation or idle time",
        f"device power {power:g} W per device held for the whole job ({power_note}); host CPUs, "
        "memory and network are counted only through the PUE",
        *facility.assumptions(),
    ]
    if e["embodied_source"]:
        assumptions.append(f"embodied carbon shown separately: {e['embodied_source']}")
    return TrainingEstimate(
        mode="training", model=model, params=int(params), tokens=float(tokens), recompute=recompute,
        flops_per_param_token=k, flops=flops, hardware=hardware.name, devices=int(devices),
        peak_flops_per_s_per_device=peak, achieved_flops_per_s_per_device=achieved, mfu=mfu,
        device_power_w=power, wall_hours=wall_s / 3600.0, wall_days=wall_s / 86400.0,
        device_hours=device_hours, **_energy_fields(e, facility),
        assumptions=tuple(assumptions), equivalents=tuple(equivalents(e["co2e_g"])),
    )


def estimate_power(
    *,
    devices: int,
    hours: float,
    facility: Facility,
    device_power_w: Optional[float] = None,
    hardware: Optional[Hardware] = None,
) -> PowerEstimate:
    """N devices drawing W watts for H hours: the first-principles estimate."""
    _count("devices", devices)
    _positive("hours", hours)
    if device_power_w is None and hardware is None:
        raise UserError("give the device power in W, or a hardware name to use its TDP")
    power, power_note = _device_power(device_power_w, hardware)
    device_hours = devices * hours
    e = _energy(device_hours, power, facility, hardware)
    assumptions = [
        f"{devices:,} devices at {power:g} W each ({power_note}) for {hours:g} hours, "
        "drawing that power throughout",
        "host CPUs, memory and network are counted only through the PUE",
        *facility.assumptions(),
    ]
    if e["embodied_source"]:
        assumptions.append(f"embodied carbon shown separately: {e['embodied_source']}")
    return PowerEstimate(
        mode="power", devices=int(devices), device_power_w=power, wall_hours=float(hours),
        wall_days=hours / 24.0, device_hours=device_hours, **_energy_fields(e, facility),
        assumptions=tuple(assumptions), equivalents=tuple(equivalents(e["co2e_g"])),
    )


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
    it_kwh = tokens_per_day * point.joules_per_token / 3.6e6
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
        f"measured energy covers the whole device(s) ({point.n_devices} x {point.device_name}), "
        "idle draw included",
        *facility.assumptions(),
    ]
    if embodied_source:
        assumptions.append(f"embodied carbon shown separately: {embodied_source}")
    days_per_year = HOURS_PER_YEAR / 24.0
    return InferenceEstimate(
        mode="inference", point=point.description, model=point.model, device_name=point.device_name,
        n_devices=point.n_devices, requests_per_day=float(requests_per_day),
        tokens_per_request=float(tokens_per_request), tokens_per_day=tokens_per_day,
        joules_per_token=point.joules_per_token, tokens_per_s=point.tokens_per_s,
        device_hours_per_day=device_hours, devices_busy=device_hours / 24.0,
        it_energy_kwh_per_day=it_kwh, energy_kwh_per_day=kwh, pue=facility.pue,
        grid_g_per_kwh=facility.grid.g_per_kwh, grid_source=facility.grid.source,
        co2e_kg_per_day=co2e_g / 1e3, electricity_cost_usd_per_day=electricity,
        rental_cost_usd_per_day=rental, cost_usd_per_day=electricity + rental,
        energy_mwh_per_year=kwh * days_per_year / 1e3, co2e_t_per_year=co2e_g * days_per_year / 1e6,
        cost_usd_per_year=(electricity + rental) * days_per_year,
        embodied_co2e_kg_per_day=None if embodied_g is None else embodied_g / 1e3,
        embodied_source=embodied_source, assumptions=tuple(assumptions),
        equivalents=tuple(equivalents(co2e_g)),
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
        grid=grid, pue=chosen_pue[0], cost=CostConfig(kwh_price[0], hour_price[0]),
        embodied=embodied or EmbodiedConfig(), pue_note=chosen_pue[1],
        cost_note=", ".join(f"{what} {how}" for what, how in (("$/kWh", kwh_price[1]), ("$/device-hour", hour_price[1]))),
    )


def _pick(given, from_results, default) -> tuple[float, str]:
    if given is not None:
        return float(given), "given"
    if from_results is not None:
        return float(from_results), "from the results' scenario"
    return float(default), "default"


# Columns that identify a point (repeats of a point share them).
POINT_KEYS = (
    "run_id", "hostname", "device_type", "device_name", "n_devices", "model", "engine", "dtype",
    "workload", "batch_size", "prompt_tokens", "new_tokens", "seq_len",
)


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
    flops = pd.to_numeric(group["flops"], errors="coerce") if "flops" in group.columns else None
    n_devices = int(_get(first, "n_devices", 1) or 1)
    device_type = _get(first, "device_type")
    device_name = _get(first, "device_name")
    hw = match_device(device_name, hardware_file) if device_type != "cpu" else None
    grid = None
    if isinstance(_get(first, "grid_source"), str) and _number(_get(first, "grid_g_per_kwh")) is not None:
        grid = GridIntensity(float(first["grid_g_per_kwh"]), f"{first['grid_source']} (as in {source})")
    return MeasuredPoint(
        description=f"{_describe(first, keys)} in {source}",
        model=_get(first, "model"), workload=_get(first, "workload"), device_name=device_name,
        device_type=device_type, n_devices=n_devices, hardware=hw, repeats=len(group),
        tokens=float(num["tokens"].sum()), energy_j=float(num["energy_j"].sum()),
        duration_s=float(num["duration_s"].sum()),
        flops=float(flops.sum()) if flops is not None and flops.notna().all() else math.nan,
        dtype=_get(first, "dtype"), grid=grid, pue=_number(_get(first, "pue")),
        usd_per_kwh=_number(_get(first, "usd_per_kwh")),
        usd_per_device_hour=_number(_get(first, "usd_per_device_hour")),
    )


def _energy(device_hours: float, power_w: float, facility: Facility, hardware: Optional[Hardware]) -> dict:
    it_kwh = device_hours * power_w / 1e3
    kwh = it_kwh * facility.pue
    embodied_g, embodied_source = facility.embodied_g(device_hours, hardware)
    return {
        "it_kwh": it_kwh, "kwh": kwh, "co2e_g": kwh * facility.grid.g_per_kwh,
        "electricity": kwh * facility.cost.usd_per_kwh,
        "rental": device_hours * facility.cost.usd_per_device_hour,
        "embodied_g": embodied_g, "embodied_source": embodied_source,
    }


def _energy_fields(e: dict, facility: Facility) -> dict:
    return {
        "it_energy_mwh": e["it_kwh"] / 1e3, "energy_mwh": e["kwh"] / 1e3, "pue": facility.pue,
        "grid_g_per_kwh": facility.grid.g_per_kwh, "grid_source": facility.grid.source,
        "co2e_t": e["co2e_g"] / 1e6, "electricity_cost_usd": e["electricity"],
        "rental_cost_usd": e["rental"], "cost_usd": e["electricity"] + e["rental"],
        "embodied_co2e_t": None if e["embodied_g"] is None else e["embodied_g"] / 1e6,
        "embodied_source": e["embodied_source"],
    }


def _device_power(device_power_w: Optional[float], hardware: Optional[Hardware]) -> tuple[float, str]:
    if device_power_w is not None:
        _positive("device power (W)", device_power_w)
        return float(device_power_w), "given"
    assert hardware is not None
    return float(hardware.tdp_w), f"TDP of the {hardware.description}, {hardware.source}"


def _positive(what: str, value) -> None:
    if value is None or not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise UserError(f"{what} must be a positive number (got {value!r})")


def _count(what: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{what} must be a whole number >= 1 (got {value!r})")


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
    shown = ("model", "workload", "dtype", "batch_size", "prompt_tokens", "new_tokens", "seq_len",
             "device_name", "n_devices")
    sizes = ("prompt_tokens", "new_tokens", "seq_len")  # 0 means "not this workload's size"
    parts = [f"{k}={_as_text(row[k]) if isinstance(row[k], float) else row[k]}" for k in shown
             if k in keys and _get(row, k) is not None and not (k in sizes and _get(row, k) == 0)]
    return " ".join(parts) or "the only point"


def _selection_text(select: Optional[Mapping[str, str]]) -> str:
    if not select:
        return ""
    return " " + " ".join(f"{k}={v}" for k, v in select.items())
