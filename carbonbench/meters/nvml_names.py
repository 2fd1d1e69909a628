"""NVML's names: its errors as the project's own (what went wrong, and whether measuring
can go on), its architecture codes, and the union members of its field values."""

from __future__ import annotations

from typing import Any

from carbonbench.errors import MeterError


class NvmlError(MeterError):
    """NVML failed; ``__cause__`` holds pynvml's exception."""

    fatal = False  # a fatal error stops the sampler at once instead of being retried


class NVMLNotSupported(NvmlError):
    """The GPU or driver does not offer what was asked (e.g. the energy counter)."""


class NVMLNoPermission(NvmlError):
    """The driver refused the query for lack of privileges."""


class GPULost(NvmlError):
    """The GPU stopped responding (fell off the bus, Xid error); it needs a reset."""

    fatal = True


class DriverNotLoaded(NvmlError):
    """No usable NVIDIA driver: not loaded, libnvidia-ml missing, or version mismatch."""

    fatal = True


# pynvml exception class name -> (our class, what the user should know)
_ERRORS = (
    ("NVMLError_NotSupported", NVMLNotSupported, "not supported by this GPU or driver"),
    ("NVMLError_NoPermission", NVMLNoPermission, "permission denied by the NVIDIA driver"),
    ("NVMLError_GpuIsLost", GPULost, "the GPU is lost (fell off the bus or hung); it needs a reset or a reboot"),
    ("NVMLError_ResetRequired", GPULost, "the GPU needs a reset before it can be used again"),
    ("NVMLError_DriverNotLoaded", DriverNotLoaded, "the NVIDIA driver is not loaded"),
    ("NVMLError_LibraryNotFound", DriverNotLoaded, "libnvidia-ml.so.1 was not found: is the NVIDIA driver installed?"),
    (
        "NVMLError_LibRmVersionMismatch",
        DriverNotLoaded,
        "the NVML library and the kernel driver versions differ: reboot or reload the driver",
    ),
)


def map_error(exc: BaseException, what: str, pynvml: Any) -> MeterError:
    """pynvml's exception as one of ours, with what was being done and what it means.

    ``pynvml`` is the module (or a test's fake) whose exception classes to match."""
    for class_name, ours, meaning in _ERRORS:
        cls = getattr(pynvml, class_name, None)
        if isinstance(cls, type) and isinstance(exc, cls):
            error = ours(f"NVML: {what}: {meaning} ({exc})")
            break
    else:
        error = NvmlError(f"NVML: {what}: {exc}")
    error.__cause__ = exc
    return error


ARCH_NAMES = {
    "NVML_DEVICE_ARCH_KEPLER": "Kepler",
    "NVML_DEVICE_ARCH_MAXWELL": "Maxwell",
    "NVML_DEVICE_ARCH_PASCAL": "Pascal",
    "NVML_DEVICE_ARCH_VOLTA": "Volta",
    "NVML_DEVICE_ARCH_TURING": "Turing",
    "NVML_DEVICE_ARCH_AMPERE": "Ampere",
    "NVML_DEVICE_ARCH_ADA": "Ada",
    "NVML_DEVICE_ARCH_HOPPER": "Hopper",
    "NVML_DEVICE_ARCH_BLACKWELL": "Blackwell",
}

# nvmlFieldValue_t is a union: its valueType names the member that holds the number.
VALUE_MEMBERS = {
    "NVML_VALUE_TYPE_DOUBLE": "dVal",
    "NVML_VALUE_TYPE_UNSIGNED_INT": "uiVal",
    "NVML_VALUE_TYPE_UNSIGNED_LONG": "ulVal",
    "NVML_VALUE_TYPE_UNSIGNED_LONG_LONG": "ullVal",
    "NVML_VALUE_TYPE_SIGNED_LONG_LONG": "sllVal",
    "NVML_VALUE_TYPE_SIGNED_INT": "siVal",
    "NVML_VALUE_TYPE_UNSIGNED_SHORT": "usVal",
}


def field_number(value: Any, pynvml: Any) -> float:
    """The number in an nvmlFieldValue_t, read through the union member its type names."""
    for const, member in VALUE_MEMBERS.items():
        if getattr(pynvml, const, None) == value.valueType:
            return float(getattr(value.value, member))
    return float(value.value.uiVal)  # the power fields are unsigned ints (mW)
