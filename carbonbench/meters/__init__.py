"""Energy meters behind one window API: ``with meters.window("label") as w: ...``."""

from carbonbench.meters.base import (
    ComponentEnergy,
    Measurement,
    Meter,
    MeterSet,
    NullMeter,
    Window,
)
from carbonbench.meters.cpu import CpuEstimateMeter

__all__ = [
    "ComponentEnergy",
    "CpuEstimateMeter",
    "Measurement",
    "Meter",
    "MeterSet",
    "NullMeter",
    "Window",
]
