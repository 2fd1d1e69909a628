"""What NVML offers on this machine, for `carbonbench env` and the GPU check: facts, not
measurements. Read without torch, so they work where CUDA is broken, which is when they
matter most; a refused read is listed, never raised.

``pynvml`` is reached through carbonbench.meters.nvml, so tests that replace it there
(at its import site) replace it here too.
"""

from __future__ import annotations

import os
from typing import Any, Optional

from carbonbench.errors import MeterError
from carbonbench.meters import nvml


def describe_system() -> dict[str, Any]:
    """Every GPU NVML sees, with the features carbonbench's measurements depend on.

    Whether the energy counter answers, whether the instantaneous power field exists
    (else power is a 1 s average on Ampere and later), the power limits, clocks, MIG
    mode and the driver. Independent of torch: it works where CUDA is broken, which is
    when these facts matter most. Never raises: no driver gives ``available: False``
    with the reason.
    """
    try:
        nvml.init()
        count = nvml.call("counting GPUs", "nvmlDeviceGetCount")
    except MeterError as exc:
        return {"available": False, "reason": str(exc)}
    cuda_driver = nvml.optional_call("nvmlSystemGetCudaDriverVersion")
    facts: dict[str, Any] = {
        "available": True,
        "driver_version": optional_text(nvml.optional_call("nvmlSystemGetDriverVersion")),
        "nvml_version": optional_text(nvml.optional_call("nvmlSystemGetNVMLVersion")),
        "cuda_driver_version": f"{cuda_driver // 1000}.{cuda_driver % 1000 // 10}"
        if isinstance(cuda_driver, int)
        else None,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "devices": [],
    }
    for index in range(count):
        try:
            handle = nvml.device_handle(index)
        except MeterError as exc:
            facts["devices"].append({"nvml_index": index, "error": str(exc)})
            continue
        facts["devices"].append(_device_facts(index, handle))
    return facts


def _device_facts(index: int, handle) -> dict[str, Any]:
    refused: list[str] = []

    def read(fn, *args):
        return nvml.optional_call(fn, handle, *args, refused=refused)

    arch_code = read("nvmlDeviceGetArchitecture")
    arch = next(
        (label for const, label in nvml.ARCH_NAMES.items() if getattr(nvml.pynvml, const, None) == arch_code),
        None if arch_code is None else f"code {arch_code}",
    )
    energy_mj = read("nvmlDeviceGetTotalEnergyConsumption")
    try:
        instant_mw = nvml.NvmlMeter._instant_power_mw(handle)
    except AttributeError:  # a pynvml without field values
        instant_mw = None
    constraints = read("nvmlDeviceGetPowerManagementLimitConstraints")
    clock_sm, clock_mem = getattr(nvml.pynvml, "NVML_CLOCK_SM", 1), getattr(nvml.pynvml, "NVML_CLOCK_MEM", 2)
    memory = read("nvmlDeviceGetMemoryInfo")
    capability = read("nvmlDeviceGetCudaComputeCapability")
    reasons = read("nvmlDeviceGetCurrentClocksEventReasons")
    return {
        "nvml_index": index,
        "name": optional_text(read("nvmlDeviceGetName")),
        "uuid": optional_text(read("nvmlDeviceGetUUID")),
        "architecture": arch,
        "compute_capability": f"{capability[0]}.{capability[1]}" if isinstance(capability, (list, tuple)) else None,
        "energy_counter": energy_mj is not None,
        "energy_counter_mj": energy_mj,
        "power_instant_field": instant_mw is not None,
        "power_instant_w": mw_to_w(instant_mw),
        "power_usage_w": mw_to_w(read("nvmlDeviceGetPowerUsage")),
        "power_limit_w": mw_to_w(read("nvmlDeviceGetPowerManagementLimit")),
        "power_limit_default_w": mw_to_w(read("nvmlDeviceGetPowerManagementDefaultLimit")),
        "power_limit_min_w": mw_to_w(constraints[0]) if isinstance(constraints, (list, tuple)) else None,
        "power_limit_max_w": mw_to_w(constraints[1]) if isinstance(constraints, (list, tuple)) else None,
        "enforced_power_limit_w": mw_to_w(read("nvmlDeviceGetEnforcedPowerLimit")),
        "sm_clock_mhz": read("nvmlDeviceGetClockInfo", clock_sm),
        "mem_clock_mhz": read("nvmlDeviceGetClockInfo", clock_mem),
        "max_sm_clock_mhz": read("nvmlDeviceGetMaxClockInfo", clock_sm),
        "max_mem_clock_mhz": read("nvmlDeviceGetMaxClockInfo", clock_mem),
        "clocks_event_reasons": reasons,
        "performance_state": read("nvmlDeviceGetPerformanceState"),
        "temperature_c": read("nvmlDeviceGetTemperature", getattr(nvml.pynvml, "NVML_TEMPERATURE_GPU", 0)),
        "memory_total_bytes": getattr(memory, "total", None),
        "memory_used_bytes": getattr(memory, "used", None),
        "mig_mode": nvml.mig_mode(handle, refused),
        "persistence_mode": read("nvmlDeviceGetPersistenceMode"),
        "refused": refused,
    }


def optional_text(value) -> Optional[str]:
    return nvml._text(value) if value is not None else None


def mw_to_w(value) -> Optional[float]:
    return value / 1000.0 if isinstance(value, (int, float)) else None
