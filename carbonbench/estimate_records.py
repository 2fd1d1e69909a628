"""What an estimate takes and gives (carbonbench.estimate, carbonbench.measured): the
facility and host it assumes, its results as flat dicts with units in their keys, and the
checks that refuse a figure that is not a finite number."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, Optional

from carbonbench.errors import UserError
from carbonbench.grid import GridIntensity
from carbonbench.hardware import Hardware
from carbonbench.settings import CostConfig, EmbodiedConfig  # not carbonbench.carbon: that imports pandas


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
class Host:
    """Power drawn beside the devices (host CPUs, memory, network), per device."""

    w_per_device: float = 0.0
    note: str = ""

    def __post_init__(self):
        if not (math.isfinite(self.w_per_device) and self.w_per_device >= 0):
            raise UserError(f"host power must be a number >= 0 W (got {self.w_per_device})")

    def assumption(self) -> str:
        if self.w_per_device == 0:
            return (
                "host CPUs, memory and network are not counted (give --host-w-per-device or "
                "--host-w-per-node to add them)"
            )
        return f"host power {self.w_per_device:g} W per device ({self.note or 'given'}), drawn for every device-hour"


NO_HOST = Host()  # devices only: no host power beside them


@dataclass(frozen=True)
class TrainingEstimate(_Flat):
    mode: str
    model: Optional[str]
    params: int
    tokens: float
    seq_len: int
    recompute: bool
    model_flops: float
    hardware_flops: float
    model_flops_rule: str
    hardware_flops_rule: str
    hardware: str
    devices: int
    peak_flops_per_s_per_device: float
    achieved_flops_per_s_per_device: float  # hardware FLOPs
    achieved_model_flops_per_s_per_device: float
    mfu: float
    hfu: float
    throughput_source: str
    device_power_w: float
    host_power_w_per_device: float
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
    devices: Optional[int]
    device_power_w: float
    host_power_w_per_device: float
    wall_hours: Optional[float]
    wall_days: Optional[float]
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


def finite(result):
    """result, if every figure in it is a finite number; else one UserError line.

    Finite inputs can still overflow (10^300 tokens is 10^312 FLOPs): the estimate is
    refused, naming the figure, rather than printed with inf and n/a everywhere.
    """
    for f in fields(result):
        value = getattr(result, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(
                f"the estimate's {f.name} comes out as {value}: an input is too large or too small "
                "to compute with (see each flag's range in --help)"
            )
    return result


def _positive(what: str, value) -> None:
    if value is None or not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise UserError(f"{what} must be a positive number (got {value!r})")
