"""What a ``carbonbench.measure`` window gives back: a frozen ``WindowResult`` whose every
energy figure carries its method, with carbon and cost derived from the window's settings."""

from __future__ import annotations

import time
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping, Optional

from carbonbench.api.settings import Settings
from carbonbench.meters.base import Measurement


# -- results ------------------------------------------------------------------------------
@dataclass(frozen=True)
class ComponentResult:
    """One component's energy in a window (``gpu0``, ``cpu``, ``cpu-package0``, ``dram0``, ...)."""

    kind: str  # gpu | cpu | dram
    energy_j: Optional[float]  # None: no meter could say (a null meter, a failure)
    method: str  # counter | integrated | estimated | none
    meter: str  # nvml, rapl, cpu-estimate, dram-estimate, null-gpu, ...


@dataclass(frozen=True)
class WindowResult:
    """What one window measured. Carbon and cost are derived from energy with the grid,
    PUE and price given to ``measure`` (the same formulas as ``carbonbench.carbon``)."""

    name: str
    status: str  # ok | error (exception in the block) | interrupted (Ctrl-C) | meter-error
    error: Optional[str]
    start_unix_s: float
    duration_s: float
    energy_j: Optional[float]  # the sum of the components that reported energy
    method: str  # the weakest method among those components: a total with an estimate is an estimate
    components: Mapping[str, ComponentResult]
    power_w: Optional[float]  # energy_j / duration_s
    co2e_g: Optional[float]  # energy_j x PUE x grid intensity
    usd: Optional[float]  # energy_j x PUE x $/kWh + duration x $/device-hour
    grid_g_per_kwh: float
    grid_source: str
    pue: float
    flags: tuple[str, ...] = ()  # e.g. short-window: shorter than a meter's resolution
    tokens: Optional[int] = None
    joules_per_token: Optional[float] = None  # only when tokens were given
    active_energy_j: Optional[float] = None  # above the session's idle baseline, when it has one

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def as_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "components"}
        out["flags"] = list(self.flags)
        out["components"] = {name: vars(c).copy() for name, c in self.components.items()}
        return out


def result_of(
    window: Any,  # a carbonbench.api.window.Measure, closed
    settings: Settings,
    meas: Optional[Measurement],
    status: str,
    error: Optional[str],
    *,
    active_energy_j: Optional[float] = None,
) -> WindowResult:
    """The frozen result of a closed window; ``meas`` None when the meters failed."""
    if meas is None:  # the block ran, the meters could not say: time only, energy unknown
        start, duration, energy, method, components, flags = (
            window.t0_unix_s,
            time.perf_counter() - window.t0,
            None,
            "none",
            {},
            (),
        )
    else:
        start, duration, energy, method, flags = (
            meas.start_unix_s,
            meas.duration_s,
            meas.energy_j,
            meas.method,
            meas.flags,
        )
        components = {c.component: ComponentResult(c.kind, c.energy_j, c.method, c.meter) for c in meas.components}
    components = MappingProxyType(components)  # frozen all the way down: a result is a record
    tokens = window.tokens
    return WindowResult(
        name=window.name,
        status=status,
        error=error,
        start_unix_s=start,
        duration_s=duration,
        energy_j=energy,
        method=method,
        components=components,
        power_w=energy / duration if energy is not None and duration > 0 else None,
        co2e_g=settings.co2e_g(energy),
        usd=settings.usd(energy, duration),
        grid_g_per_kwh=settings.grid.g_per_kwh,
        grid_source=settings.grid.source,
        pue=settings.carbon.pue,
        flags=tuple(flags),
        tokens=tokens,
        joules_per_token=energy / tokens if energy is not None and tokens else None,
        active_energy_j=active_energy_j,
    )
