"""Where and how ``carbonbench.measure`` windows are measured and priced.

``Settings`` holds what a scenario's ``measurement``, ``carbon`` and ``cost`` sections
hold, checked by the scenario loader's own rules, and prices energy with the formulas of
``carbonbench.carbon`` (which needs pandas; these need nothing but the numbers).
``meter_set`` picks the meters a benchmark run would pick for the device.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from carbonbench.config import build
from carbonbench.errors import UserError
from carbonbench.grid import GridIntensity
from carbonbench.meters.base import MeterSet, NullMeter
from carbonbench.meters.select import build_meter_set
from carbonbench.scenario import MeasurementConfig
from carbonbench.settings import CarbonConfig, CostConfig

J_PER_KWH = 3.6e6


@dataclass(frozen=True)
class Settings:
    """Where and how windows are measured and priced; shaped like a scenario's sections
    (``measurement``, ``carbon``, ``cost``), so the run-file code reads it as one."""

    device: torch.device
    measurement: MeasurementConfig
    carbon: CarbonConfig
    cost: CostConfig
    grid: GridIntensity = field(init=False)

    def __post_init__(self):
        object.__setattr__(self, "grid", self.carbon.intensity(where="carbonbench.measure"))

    @classmethod
    def make(
        cls,
        device: "str | torch.device" = "auto",
        *,
        country: Optional[str] = None,
        region: Optional[str] = None,
        grid_g_per_kwh: Optional[float] = None,
        pue: float = 1.0,
        usd_per_kwh: float = 0.15,
        usd_per_device_hour: float = 0.0,
        sample_interval_s: float = 0.1,
        cpu_tdp_w: Optional[float] = None,
        **measurement: Any,
    ) -> "Settings":
        # A scenario's defaults: the USA grid unless an intensity or another country is given.
        if country is None and grid_g_per_kwh is None:
            country = "USA"
        # The scenario loader's own checks (types, bounds, known country and region):
        # a bad setting is one ConfigError naming it, raised where measure() is called.
        where = "carbonbench.measure"
        carbon = build(
            CarbonConfig,
            {"country": country, "region": region, "grid_g_per_kwh": grid_g_per_kwh, "pue": pue},
            source=where,
        )
        cost = build(CostConfig, {"usd_per_kwh": usd_per_kwh, "usd_per_device_hour": usd_per_device_hour}, source=where)
        meas = build(
            MeasurementConfig,
            {"sample_interval_s": sample_interval_s, "cpu_tdp_w": cpu_tdp_w, **measurement},
            source=where,
        )
        return cls(resolve_device(device), meas, carbon, cost)

    def co2e_g(self, energy_j: Optional[float]) -> Optional[float]:
        return None if energy_j is None else energy_j / J_PER_KWH * self.carbon.pue * self.grid.g_per_kwh

    def usd(self, energy_j: Optional[float], duration_s: float, n_devices: int = 1) -> Optional[float]:
        if energy_j is None:  # a rental-only figure would pass for the whole cost
            return None
        electricity = energy_j / J_PER_KWH * self.carbon.pue * self.cost.usd_per_kwh
        return electricity + duration_s * n_devices / 3600.0 * self.cost.usd_per_device_hour


def resolve_device(device: "str | torch.device") -> torch.device:
    """auto: CUDA when torch sees it, else the CPU. 'cuda' without a GPU is kept: its meter
    is then a null one saying why, and the CPU is still measured."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu" or device == "cuda" or str(device).startswith("cuda:"):
        return torch.device(device)
    raise UserError(f"carbonbench.measure: unknown device {device!r} (use auto, cpu, cuda or cuda:N)")


def meter_set(settings: Settings) -> MeterSet:
    """The meters a run would use on this device (carbonbench.meters.select)."""
    device, m = settings.device, settings.measurement
    if device.type == "cuda" and not torch.cuda.is_available():
        cpu = build_meter_set(torch.device("cpu"), m)
        reason = "device 'cuda' was asked for, but torch sees no CUDA GPU"
        return MeterSet([NullMeter("gpu", reason), *cpu.meters])
    return build_meter_set(device, m)
