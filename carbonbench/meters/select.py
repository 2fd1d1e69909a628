"""Choose the meters for a device: the best source available for each component."""

from __future__ import annotations

import torch

from carbonbench.meters.base import MeterSet, NullMeter
from carbonbench.meters.cpu import CpuEstimateMeter


def build_meter_set(device: torch.device, measurement) -> MeterSet:
    """``measurement`` is the scenario's MeasurementConfig section."""
    meters = [CpuEstimateMeter(measurement.cpu_tdp_w), NullMeter("dram", "no RAPL DRAM domain readable")]
    sync = None
    if device.type == "cuda":
        meters.append(NullMeter("gpu", "no NVML meter"))
        sync = lambda: torch.cuda.synchronize(device)  # noqa: E731
    return MeterSet(meters, sync=sync)
