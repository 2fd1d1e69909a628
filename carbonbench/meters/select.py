"""Choose the meters for a device: the best source available for each component.

GPU: NVML (counter or integrated) for every GPU CUDA can see, else a null meter saying
why. CPU and DRAM: RAPL counters when readable, else the utilisation x TDP estimate and
the per-GB DRAM estimate. RAPL files that exist but are unreadable get one warning per
process: silence would leave the user thinking the CPU figure was measured.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, Sequence

from carbonbench.errors import MeterError
from carbonbench.meters.base import Meter, MeterSet, NullMeter
from carbonbench.meters.cpu import CpuEstimateMeter, DramEstimateMeter
from carbonbench.meters.host import HostLoadMeter
from carbonbench.meters.nvml import NvmlMeter
from carbonbench.meters.rapl import POWERCAP_ROOT, RaplMeter, discover

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


class RaplPermissionWarning(UserWarning):
    """RAPL counters exist but this user cannot read them."""


_warned_rapl_permission = False


def build_meter_set(
    device: torch.device | str,
    measurement,
    *,
    sample: bool = True,
    powercap_root: Path = POWERCAP_ROOT,
    gpu_indices: Optional[Sequence[int]] = None,
) -> MeterSet:
    """``measurement`` is the scenario's MeasurementConfig section.

    ``sample`` False turns every background sampler off (for the overhead benchmark).
    ``gpu_indices`` restricts the GPUs metered to these CUDA indices; by default every
    GPU CUDA can see is metered, since each draws power whether or not this run uses it
    (the idle baseline takes an unused GPU's draw back out of active energy).
    """
    # A CPU device needs no torch (`carbonbench env` on a machine without a GPU stays light).
    device_type = getattr(device, "type", None) or str(device).split(":")[0]
    interval = measurement.sample_interval_s if sample else None
    meters: list[Meter] = list(_cpu_meters(measurement, interval, Path(powercap_root)))
    meters.append(HostLoadMeter())  # flags windows a busy neighbour makes unreliable
    sync = None
    if device_type == "cuda":
        gpu, indices = _gpu_meter(interval, gpu_indices)
        meters.insert(0, gpu)
        sync = _cuda_sync(indices if indices else [device])
    return MeterSet(meters, sync=sync)


def _cpu_meters(measurement, interval: Optional[float], root: Path) -> list[Meter]:
    found = discover(root)
    if found.domains:
        meters: list[Meter] = [RaplMeter(found.domains, sample_interval_s=interval, root=root)]
        if not any(d.kind == "dram" for d in found.domains):
            meters.append(DramEstimateMeter())
        return meters
    if found.permission_denied:
        _warn_rapl_permission(found.root)
    return [
        CpuEstimateMeter(measurement.cpu_tdp_w, sample_interval_s=interval, attribution=measurement.cpu_attribution),
        DramEstimateMeter(),
    ]


def _warn_rapl_permission(root: Path) -> None:
    global _warned_rapl_permission
    if _warned_rapl_permission:
        return
    _warned_rapl_permission = True
    warnings.warn(
        f"RAPL energy counters exist under {root} but this user cannot read them (root-only "
        "since Linux 5.10, CVE-2020-8694), so CPU and DRAM energy will be ESTIMATED from "
        "utilisation and TDP. To measure them, run as root or make the counters readable: "
        f"sudo chmod a+r {root}/intel-rapl:*/energy_uj {root}/intel-rapl:*/*/energy_uj "
        "(until reboot).",
        RaplPermissionWarning,
        stacklevel=3,
    )


def _gpu_meter(interval: Optional[float], gpu_indices: Optional[Sequence[int]]) -> tuple[Meter, list[int]]:
    uuids = _torch_uuids()
    indices = list(gpu_indices) if gpu_indices is not None else None
    try:
        meter = None
        if uuids is not None:
            indices = indices if indices is not None else list(range(len(uuids)))
            try:
                meter = NvmlMeter(uuids=[uuids[i] for i in indices], sample_interval_s=interval)
            except MeterError as exc:
                if getattr(exc, "fatal", False):
                    raise
                log.warning("matching torch's GPU UUIDs in NVML failed (%s); using CUDA_VISIBLE_DEVICES", exc)
        if meter is None:
            meter = NvmlMeter(sample_interval_s=interval)
            every = list(range(len(meter.gpus)))
            indices = indices if indices is not None else every
            meter.gpus = [meter.gpus[i] for i in indices]
        # Components are named by CUDA index, so a restricted set keeps torch's numbers.
        for gpu, index in zip(meter.gpus, indices):
            gpu.component = f"gpu{index}"
        return meter, indices
    except (MeterError, IndexError) as exc:
        log.warning("GPU energy will not be measured: %s", exc)
        return NullMeter("gpu", str(exc)), []


def _torch_uuids() -> Optional[list[str]]:
    """torch's own UUID for each visible device: exact whatever the CUDA device order."""
    import torch

    if not torch.cuda.is_available():
        return None
    try:
        uuids = [str(torch.cuda.get_device_properties(i).uuid) for i in range(torch.cuda.device_count())]
    except (AttributeError, RuntimeError):  # older torch without .uuid
        return None
    hex_only = [u.lower().removeprefix("gpu-").replace("-", "") for u in uuids]
    if not all(len(h) == 32 and all(c in "0123456789abcdef" for c in h) for h in hex_only):
        return None  # not the canonical form NVML knows; fall back to CUDA_VISIBLE_DEVICES
    return uuids


def _cuda_sync(devices: list) -> Callable[[], None]:
    import torch

    def sync() -> None:
        for d in devices:
            torch.cuda.synchronize(d)

    return sync
