"""Energy meters behind one window API: ``with meters.window("label") as w: ...``.

``build_meter_set`` (in ``carbonbench.meters.select``) picks the best source for each
component; NVML and codecarbon live in their own modules and are imported on use.
"""

from carbonbench.meters.base import (
    ComponentEnergy,
    Measurement,
    Meter,
    MeterSet,
    NullMeter,
    Window,
)
from carbonbench.meters.cpu import CpuEstimateMeter, DramEstimateMeter
from carbonbench.meters.idle import IdleBaseline, measure_idle
from carbonbench.meters.rapl import RaplMeter
from carbonbench.meters.sampler import Sampler, SamplerError, integrate

__all__ = [
    "ComponentEnergy",
    "CpuEstimateMeter",
    "DramEstimateMeter",
    "IdleBaseline",
    "Measurement",
    "Meter",
    "MeterSet",
    "NullMeter",
    "RaplMeter",
    "Sampler",
    "SamplerError",
    "Window",
    "integrate",
    "measure_idle",
]
