"""Carbon and cost settings: where the electricity comes from and what it costs.

These are a scenario's ``carbon`` and ``cost`` sections. They need neither pandas nor
torch, so that a scenario file loads without either; the conversion of measured energy
into CO2e and dollars lives in ``carbonbench.carbon``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

from carbonbench import grid as gridmod
from carbonbench.config import FieldError, positive
from carbonbench.errors import ConfigError
from carbonbench.grid import GridIntensity
from carbonbench.hardware import BLOOM_LIFETIME_YEARS, BLOOM_UTILISATION, Hardware

HOURS_PER_YEAR = 8760.0  # 365 days; the amortisation convention in the BLOOM paper


@dataclass(frozen=True)
class EmbodiedConfig:
    """Manufacturing carbon amortised per device-hour (Luccioni et al. 2022, BLOOM)."""

    enabled: bool = False
    kgco2e_per_device: Optional[float] = field(default=None, metadata=positive())  # None: the hardware table's
    source: str = ""  # where kgco2e_per_device comes from; required when it is given
    lifetime_years: float = field(default=BLOOM_LIFETIME_YEARS, metadata=positive())
    utilisation: float = field(default=BLOOM_UTILISATION, metadata={"gt": 0, "max": 1})

    def __post_init__(self):
        if self.kgco2e_per_device is not None and not self.source.strip():
            raise FieldError("source", self.source, "say where kgco2e_per_device comes from")
        if not 0 < self.utilisation <= 1:
            raise FieldError("utilisation", self.utilisation, "must be in (0, 1]")
        if not self.lifetime_years > 0:
            raise FieldError("lifetime_years", self.lifetime_years, "must be > 0")

    @property
    def used_hours(self) -> float:
        """Hours a device is in use over its life: the amortisation denominator."""
        return self.lifetime_years * HOURS_PER_YEAR * self.utilisation

    def per_device_hour(self, hardware: Optional[Hardware]) -> tuple[float, str]:
        """(gCO2e per device-hour, source); NaN with the reason when no figure is known."""
        if self.kgco2e_per_device is not None:
            kg, source = self.kgco2e_per_device, self.source
        elif hardware is not None and hardware.embodied_kgco2e is not None:
            kg, source = hardware.embodied_kgco2e, hardware.embodied_source
        else:
            what = hardware.name if hardware is not None else "this device"
            return math.nan, f"no embodied figure for {what}: give kgco2e_per_device"
        g = kg * 1000.0 / self.used_hours
        return g, (
            f"{kg:g} kgCO2e per device over {self.lifetime_years:g} years at "
            f"{self.utilisation:.0%} use = {g:.3g} gCO2e/device-hour ({source})"
        )


@dataclass(frozen=True)
class CarbonConfig:
    """Where the electricity comes from. Emissions are derived when results are read."""

    country: Optional[str] = "USA"  # ISO 3166-1 alpha-3, as in codecarbon's data
    region: Optional[str] = None  # e.g. "california", "quebec", where codecarbon has regions
    grid_g_per_kwh: Optional[float] = field(default=None, metadata={"min": 0})
    pue: float = field(default=1.0, metadata={"min": 1.0})
    embodied: EmbodiedConfig = field(default_factory=EmbodiedConfig)

    def __post_init__(self):
        if self.grid_g_per_kwh is None and not self.country:
            raise FieldError("country", self.country, "give a country or grid_g_per_kwh")
        if self.pue < 1.0:
            raise FieldError("pue", self.pue, "must be >= 1.0 (facility energy over IT energy)")
        if self.grid_g_per_kwh is None:
            # Fail at load time, with the key, rather than when results are read.
            try:
                gridmod.country_intensity(self.country)
            except ConfigError as exc:
                raise FieldError("country", self.country, str(exc)) from None
            if self.region:
                try:
                    gridmod.region_intensity(self.country, self.region)
                except ConfigError as exc:
                    raise FieldError("region", self.region, str(exc)) from None

    def intensity(self, where: str = "scenario") -> GridIntensity:
        return gridmod.resolve(self.country, self.region, self.grid_g_per_kwh, where=where)


@dataclass(frozen=True)
class CostConfig:
    usd_per_kwh: float = field(default=0.15, metadata={"min": 0})
    usd_per_device_hour: float = field(default=0.0, metadata={"min": 0})

    def __post_init__(self):
        for key in ("usd_per_kwh", "usd_per_device_hour"):
            value = getattr(self, key)
            if not (math.isfinite(value) and value >= 0):
                raise FieldError(key, value, "must be a finite number >= 0")
