"""NVIDIA GPU energy through NVML (the nvidia-ml-py package, module ``pynvml``).

Energy is the difference of two reads of ``nvmlDeviceGetTotalEnergyConsumption`` (mJ
since the driver loaded; Volta and later), taken at the window edges after the device
is synchronised. GPUs without that counter get sampled power integrated over time.
Either way a background sampler records a power timeline (plus clocks, utilisation,
temperature and memory), and the integrated figure is reported next to the counter's.

``pynvml`` is imported here, at module level, so tests replace
``carbonbench.meters.nvml.pynvml`` with a fake: every call below looks it up at run time.

NVML is initialised once per process and never shut down. ``nvmlShutdown`` would pull
the library from under codecarbon, which holds NVML handles of its own for the whole
run; process exit releases everything anyway.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import pynvml

from carbonbench.meters.base import ComponentEnergy
from carbonbench.meters.nvml_names import (  # noqa: F401  (the meter's errors, importable from here)
    ARCH_NAMES,
    VALUE_MEMBERS,
    DriverNotLoaded,
    GPULost,
    NvmlError,
    NVMLNoPermission,
    NVMLNotSupported,
    field_number,
    map_error,
)
from carbonbench.meters.sampler import SampledMeter

_init_lock = threading.Lock()
_initialised_module: Any = None  # the pynvml module (or test fake) that nvmlInit succeeded on


def call(what: str, fn: str, *args):
    """``pynvml.<fn>(*args)`` with NVML errors mapped to the project's exceptions."""
    try:
        return getattr(pynvml, fn)(*args)
    except pynvml.NVMLError as exc:
        raise map_error(exc, what, pynvml) from exc


def init() -> None:
    global _initialised_module
    with _init_lock:
        if _initialised_module is pynvml:
            return
        call("initialising NVML", "nvmlInit")
        _initialised_module = pynvml


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _bare_uuid(uuid: str) -> str:
    u = uuid.strip().lower()
    return u[4:] if u.startswith("gpu-") else u


def visible_devices(cuda_visible_devices: Optional[str] = None) -> list[int]:
    """NVML indices of the GPUs CUDA can see, in CUDA's order (cuda:0 first).

    Follows CUDA's parsing of CUDA_VISIBLE_DEVICES: comma-separated indices or GPU
    UUIDs (a unique prefix is enough), and the list ends at the first entry that names
    no device. MIG instances are refused: NVML energy is per physical GPU, so a MIG
    slice's energy cannot be told apart from its neighbours'.

    NVML orders GPUs by PCI bus id; CUDA does too only with CUDA_DEVICE_ORDER=PCI_BUS_ID.
    When torch is at hand, ``NvmlMeter(uuids=...)`` from torch's own device UUIDs is the
    exact mapping; this is the fallback.
    """
    init()
    count = call("counting GPUs", "nvmlDeviceGetCount")
    env = os.environ.get("CUDA_VISIBLE_DEVICES") if cuda_visible_devices is None else cuda_visible_devices
    if env is None:
        return list(range(count))
    uuids = None
    chosen: list[int] = []
    for token in env.split(","):
        token = token.strip()
        if not token:
            break
        if token.upper().startswith("MIG-"):
            raise NVMLNotSupported(
                f"CUDA_VISIBLE_DEVICES names a MIG instance ({token}): NVML measures energy per "
                "physical GPU, so a MIG slice cannot be metered on its own"
            )
        if token.lstrip("+-").isdigit():
            index = int(token)
            if not 0 <= index < count:
                break
        else:
            if uuids is None:
                uuids = [
                    _bare_uuid(_text(call("reading GPU UUID", "nvmlDeviceGetUUID", device_handle(i))))
                    for i in range(count)
                ]
            prefix = _bare_uuid(token)
            matches = [i for i, u in enumerate(uuids) if u.startswith(prefix)]
            if len(matches) != 1:
                break
            index = matches[0]
        if index in chosen:  # CUDA refuses duplicates; metering a GPU twice would double it
            break
        chosen.append(index)
    return chosen


def device_handle(index: int):
    return call(f"opening GPU {index}", "nvmlDeviceGetHandleByIndex", index)


@dataclass
class Gpu:
    """One metered GPU and what NVML offers for it."""

    component: str  # "gpu<cuda index>"
    handle: Any
    nvml_index: Optional[int]
    uuid: str
    name: str
    architecture: str
    has_counter: bool
    power_field: str  # "instant", "average" or "none"
    power_limit_w: Optional[float]
    unsupported: set[str] = field(default_factory=set)  # sampled fields NVML refused
    # Read once at start, for the record: what bounds the clocks and power of this GPU.
    enforced_power_limit_w: Optional[float] = None
    max_sm_clock_mhz: Optional[int] = None
    max_mem_clock_mhz: Optional[int] = None
    mig_mode: Optional[str] = None  # "enabled", "disabled", or None where NVML cannot say

    def describe(self) -> dict[str, Any]:
        return {
            "component": self.component,
            "nvml_index": self.nvml_index,
            "uuid": self.uuid,
            "name": self.name,
            "architecture": self.architecture,
            "method": "counter" if self.has_counter else "integrated",
            "energy_source": (
                "nvmlDeviceGetTotalEnergyConsumption (mJ counter, updates about every 100 ms)"
                if self.has_counter
                else "sampled power integrated over time (no energy counter before Volta)"
            ),
            "power_source": {
                "instant": "nvmlDeviceGetFieldValues(NVML_FI_DEV_POWER_INSTANT): instantaneous",
                "average": "nvmlDeviceGetPowerUsage: a 1 s moving average on Ampere and later, so the "
                "timeline lags and smooths bursts",
                "none": "none: the GPU reports no power (energy from the counter only)",
            }[self.power_field],
            "power_limit_w": self.power_limit_w,
            "enforced_power_limit_w": self.enforced_power_limit_w,
            "max_sm_clock_mhz": self.max_sm_clock_mhz,
            "max_mem_clock_mhz": self.max_mem_clock_mhz,
            "mig_mode": self.mig_mode,
            "unsupported_fields": sorted(self.unsupported),
        }


class NvmlMeter(SampledMeter):
    """Energy of NVIDIA GPUs: counter deltas where available, else integrated power.

    ``indices`` are NVML indices and ``uuids`` GPU UUIDs (either with or without the
    "GPU-" prefix), both in CUDA order; with neither, the GPUs CUDA_VISIBLE_DEVICES
    exposes. Component k is "gpu<k>", matching torch's cuda:k. ``sample_interval_s``
    None turns the background sampler off (edge samples are still taken).
    """

    name = "nvml"
    resolution_s = 0.1  # the energy counter updates about every 100 ms

    def __init__(
        self,
        indices: Optional[Sequence[int]] = None,
        *,
        uuids: Optional[Sequence[str]] = None,
        sample_interval_s: Optional[float] = 0.1,
    ):
        init()
        if uuids is not None:
            handles = [
                (None, call(f"opening GPU {u}", "nvmlDeviceGetHandleByUUID", "GPU-" + _bare_uuid(u))) for u in uuids
            ]
        else:
            chosen = visible_devices() if indices is None else list(indices)
            handles = [(i, device_handle(i)) for i in chosen]
        if not handles:
            raise NVMLNotSupported("NVML: no GPU is visible (CUDA_VISIBLE_DEVICES is empty or names no GPU)")
        self.gpus = [self._probe(f"gpu{k}", index, handle) for k, (index, handle) in enumerate(handles)]
        self.driver_version = self._optional(lambda: _text(pynvml.nvmlSystemGetDriverVersion()))
        self.sample_interval_s = sample_interval_s
        # Edge samples and thread samples share one buffer; the thread only runs if asked.
        self._init_sampler(self._sample_all, sample_interval_s)

    # -- setup -----------------------------------------------------------------------
    @staticmethod
    def _optional(read):
        try:
            return read()
        except pynvml.NVMLError:
            return None

    def _probe(self, component: str, index: Optional[int], handle) -> Gpu:
        where = f"{component} (NVML index {index})" if index is not None else component
        uuid = _text(call(f"reading the UUID of {where}", "nvmlDeviceGetUUID", handle))
        name = _text(call(f"reading the name of {where}", "nvmlDeviceGetName", handle))
        arch_code = self._optional(lambda: pynvml.nvmlDeviceGetArchitecture(handle))
        volta = getattr(pynvml, "NVML_DEVICE_ARCH_VOLTA", 5)
        arch = next(
            (label for const, label in ARCH_NAMES.items() if getattr(pynvml, const, None) == arch_code),
            "unknown" if arch_code is None else f"code {arch_code}",
        )
        # Trust the counter only where a read succeeds: some virtualised GPUs report
        # Volta or later yet refuse the call. An unknown code is a newer GPU: try it.
        has_counter = arch_code is None or arch_code >= volta
        if has_counter:
            try:
                call(f"reading the energy counter of {where}", "nvmlDeviceGetTotalEnergyConsumption", handle)
            except NVMLNotSupported:
                has_counter = False
        power_field = "instant" if self._instant_power_mw(handle) is not None else "average"
        if power_field == "average":
            try:
                call(f"reading the power of {where}", "nvmlDeviceGetPowerUsage", handle)
            except NVMLNotSupported:
                if not has_counter:
                    raise NVMLNotSupported(
                        f"NVML: {where} ({name}) reports neither an energy counter nor its power: "
                        "its energy cannot be measured"
                    ) from None
                power_field = "none"  # the counter still measures; only the timeline is lost
        limit = self._optional(lambda: pynvml.nvmlDeviceGetPowerManagementLimit(handle))
        enforced = optional_call("nvmlDeviceGetEnforcedPowerLimit", handle)
        return Gpu(
            component,
            handle,
            index,
            uuid,
            name,
            arch,
            has_counter,
            power_field,
            limit / 1000.0 if limit is not None else None,
            enforced_power_limit_w=enforced / 1000.0 if enforced is not None else None,
            max_sm_clock_mhz=optional_call("nvmlDeviceGetMaxClockInfo", handle, getattr(pynvml, "NVML_CLOCK_SM", 1)),
            max_mem_clock_mhz=optional_call("nvmlDeviceGetMaxClockInfo", handle, getattr(pynvml, "NVML_CLOCK_MEM", 2)),
            mig_mode=mig_mode(handle),
        )

    @staticmethod
    def _instant_power_mw(handle) -> Optional[float]:
        field_id = getattr(pynvml, "NVML_FI_DEV_POWER_INSTANT", None)
        if field_id is None:
            return None
        try:
            value = pynvml.nvmlDeviceGetFieldValues(handle, [field_id])[0]
        except pynvml.NVMLError:
            return None
        if value.nvmlReturn != pynvml.NVML_SUCCESS:
            return None
        return field_number(value, pynvml)

    # -- reads -----------------------------------------------------------------------
    def _power_w(self, gpu: Gpu) -> Optional[float]:
        if gpu.power_field == "none":
            return None
        if gpu.power_field == "instant":
            mw = self._instant_power_mw(gpu.handle)
            if mw is not None:
                return mw / 1000.0
        return call(f"reading the power of {gpu.component}", "nvmlDeviceGetPowerUsage", gpu.handle) / 1000.0

    def _energy_mj(self, gpu: Gpu) -> Optional[int]:
        if not gpu.has_counter:
            return None
        return call(f"reading the energy counter of {gpu.component}", "nvmlDeviceGetTotalEnergyConsumption", gpu.handle)

    def _edge_rows(self) -> list[dict[str, Any]]:
        rows = []
        for gpu in self.gpus:
            rows.append(
                {"unix_s": time.time(), "component": gpu.component, "kind": "gpu", "power_w": self._power_w(gpu)}
            )
        return rows

    def _sample_all(self) -> list[dict[str, Any]]:
        return [self._sample(gpu) for gpu in self.gpus]

    def _sample(self, gpu: Gpu) -> dict[str, Any]:
        row: dict[str, Any] = {
            "unix_s": time.time(),
            "component": gpu.component,
            "kind": "gpu",
            "power_w": self._power_w(gpu),
        }
        h = gpu.handle
        reads = {
            "sm_clock_mhz": lambda: pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM),
            "mem_clock_mhz": lambda: pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_MEM),
            "utilisation": lambda: pynvml.nvmlDeviceGetUtilizationRates(h),
            "temperature_c": lambda: pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU),
            "memory_used_bytes": lambda: pynvml.nvmlDeviceGetMemoryInfo(h).used,
        }
        for key, read in reads.items():
            value = None
            if key not in gpu.unsupported:
                try:
                    value = read()
                except pynvml.NVMLError as exc:
                    mapped = map_error(exc, f"reading {key} of {gpu.component}", pynvml)
                    if mapped.fatal:
                        raise mapped from exc
                    gpu.unsupported.add(key)  # ask once; a refused field stays refused
            if key == "utilisation":
                row["gpu_util_pct"] = getattr(value, "gpu", None)
                row["mem_util_pct"] = getattr(value, "memory", None)
            else:
                row[key] = value
        return row

    # -- Meter API -------------------------------------------------------------------
    def begin(self) -> Any:
        energies = [self._energy_mj(g) for g in self.gpus]
        self.sampler.add(self._edge_rows())
        return energies

    def end(self, snapshot, start_unix_s, end_unix_s) -> list[ComponentEnergy]:
        energies = [self._energy_mj(g) for g in self.gpus]
        self.sampler.add(self._edge_rows())
        out = []
        for gpu, before, after in zip(self.gpus, snapshot, energies):
            integrated = self.sampler.integrate(gpu.component, start_unix_s, end_unix_s)
            # A counter that went backwards means the driver reloaded mid-window.
            if before is not None and after is not None and after >= before:
                out.append(
                    ComponentEnergy(gpu.component, "gpu", (after - before) / 1000.0, "counter", self.name, integrated)
                )
            else:
                out.append(ComponentEnergy(gpu.component, "gpu", integrated, "integrated", self.name, integrated))
        return out

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": "gpu",
            "method": "counter" if all(g.has_counter for g in self.gpus) else "integrated",
            "resolution_s": self.resolution_s,
            "driver_version": self.driver_version,
            "nvml_version": self._optional(lambda: _text(pynvml.nvmlSystemGetNVMLVersion())),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "devices": [g.describe() for g in self.gpus],
            "sampler": self.sampler_stats(),
            "integration": "trapezoidal over samples clipped to the window, edges interpolated",
        }


# -- what NVML offers, for `carbonbench env` -------------------------------------------
def optional_call(fn: str, *args, refused: Optional[list] = None):
    """``pynvml.<fn>(*args)``, or None where the GPU, the driver or this pynvml lacks it.

    Used for facts that are recorded, never for measurements: a refusal is noted in
    ``refused`` (when given) rather than raised, so one missing feature cannot hide the rest.
    """
    read = getattr(pynvml, fn, None)
    if read is None:  # an older nvidia-ml-py (or a test fake) without the function
        if refused is not None:
            refused.append(f"{fn}: not in this pynvml")
        return None
    try:
        return read(*args)
    except pynvml.NVMLError as exc:
        if refused is not None:
            refused.append(f"{fn}: {exc}")
        return None


def mig_mode(handle, refused: Optional[list] = None) -> Optional[str]:
    modes = optional_call("nvmlDeviceGetMigMode", handle, refused=refused)
    if not modes:
        return None
    current = modes[0] if isinstance(modes, (list, tuple)) else modes
    return "enabled" if current == getattr(pynvml, "NVML_DEVICE_MIG_ENABLE", 1) else "disabled"
