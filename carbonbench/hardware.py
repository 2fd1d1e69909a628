"""A small table of accelerators: datasheet peaks, memory, TDP, and embodied carbon.

The figures are the vendors' dense (not sparse) datasheet numbers; each row names its
datasheet. Since Ampere the datasheets list tensor-core peaks "with sparsity" (2:4
structured sparsity), twice the dense rate that a dense matmul can reach, so the rows
hold half the listed figure. They are ceilings a device rarely reaches: a large bf16
matmul on an H100 SXM ran at about 798 of the 989 TFLOP/s listed. MFU is computed
against the datasheet peak, as is usual, and the report says so.

Devices are matched by the name NVML reports (``nvmlDeviceGetName``). Patterns are
strict on purpose: an A100 PCIe has a different TDP from an A100 SXM4, so it does not
match the SXM4 row; unmatched devices get no MFU rather than a wrong one.

Users add or override rows with a YAML file, named by ``--hardware-file`` or the
``CARBONBENCH_HARDWARE_FILE`` environment variable::

    hardware:
      - name: mi300x
        description: AMD Instinct MI300X
        tdp_w: 750
        memory_gb: 192
        peak_bf16_tflops: 1307
        memory_bandwidth_gb_per_s: 5300
        nvml_names: ["AMD Instinct MI300X.*"]     # regular expressions, full match
        source: AMD MI300X datasheet

A device NVML never sees (a TPU) needs no ``nvml_names``; one whose vendor publishes no
TDP may leave ``tdp_w`` out and give a measured ``mean_power_w`` with its
``power_source`` instead. Estimates use the power given on the command line, else the
mean power, else the TDP, and say which.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Optional

from carbonbench.config import FieldError, build, closest, positive, read_yaml
from carbonbench.errors import UserError

HARDWARE_FILE_ENV = "CARBONBENCH_HARDWARE_FILE"
DATASHEET = "vendor datasheet"

# Luccioni et al. 2022 (BLOOM footprint, arXiv 2211.02001): about 150 kgCO2e per A100,
# a lower bound for the GPU alone, amortised over a 6-year life at 85% use.
BLOOM_A100_KGCO2E = 150.0
BLOOM_SOURCE = (
    "Luccioni et al. 2022, BLOOM footprint (arXiv 2211.02001): A100 about 150 kgCO2e, "
    "lower bound for the GPU alone, 6-year life at 85% use"
)
BLOOM_LIFETIME_YEARS = 6.0
BLOOM_UTILISATION = 0.85


@dataclass(frozen=True)
class Hardware:
    """One accelerator model. Units in the names; bytes and FLOP/s, not GB and TFLOP/s."""

    name: str  # the short key users type: "a100-80gb"
    description: str  # the full product name
    tdp_w: Optional[float]  # None: the vendor publishes none (TPUs)
    memory_bytes: int
    peak_bf16_flops: float  # dense bf16/fp16 tensor-core peak, FLOP/s per device
    memory_bandwidth_bytes_per_s: float
    nvml_names: tuple[str, ...] = ()  # regexes matched in full against NVML's name
    source: str = DATASHEET
    embodied_kgco2e: Optional[float] = None  # None: no published figure
    embodied_source: str = ""
    mean_power_w: Optional[float] = None  # a measured average under load, where published
    power_source: str = ""

    def __post_init__(self):
        for key in ("tdp_w", "memory_bytes", "peak_bf16_flops", "memory_bandwidth_bytes_per_s", "mean_power_w"):
            value = getattr(self, key)
            if key in ("tdp_w", "mean_power_w") and value is None:
                continue
            if not value > 0:
                raise ValueError(f"hardware {self.name}: {key} must be > 0 (got {value!r})")

    def matches(self, device_name: str) -> bool:
        text = " ".join(str(device_name).split())
        return any(re.fullmatch(p, text, flags=re.IGNORECASE) for p in self.nvml_names)


_GB, _T = 1e9, 1e12  # datasheets use decimal GB and TB/s

BUILTIN: tuple[Hardware, ...] = (
    Hardware(
        "v100-sxm2-32gb",
        "NVIDIA V100 SXM2 32GB",
        300,
        32 * _GB,
        125 * _T,
        0.900 * _T,
        (r"(Tesla )?V100-SXM2-32GB",),
        source="NVIDIA Tesla V100 GPU Accelerator datasheet (SXM2)",
    ),
    Hardware(
        "a100-40gb",
        "NVIDIA A100 SXM4 40GB",
        400,
        40 * _GB,
        312 * _T,
        1.555 * _T,
        (r"(NVIDIA )?A100-SXM4-40GB", r"NVIDIA A100 SXM4 40GB"),
        source="NVIDIA A100 Tensor Core GPU datasheet",
        embodied_kgco2e=BLOOM_A100_KGCO2E,
        embodied_source=BLOOM_SOURCE,
    ),
    Hardware(
        "a100-80gb",
        "NVIDIA A100 SXM4 80GB",
        400,
        80 * _GB,
        312 * _T,
        2.039 * _T,
        (r"(NVIDIA )?A100-SXM4-80GB", r"NVIDIA A100 SXM4 80GB"),
        source="NVIDIA A100 Tensor Core GPU datasheet",
        embodied_kgco2e=BLOOM_A100_KGCO2E,
        embodied_source=BLOOM_SOURCE,
    ),
    Hardware(
        "h100-sxm",
        "NVIDIA H100 SXM5 80GB",
        700,
        80 * _GB,
        989 * _T,
        3.35 * _T,
        (r"NVIDIA H100 80GB HBM3", r"NVIDIA H100 SXM5 80GB"),
        source="NVIDIA H100 Tensor Core GPU datasheet (H100 SXM)",
    ),
    Hardware(
        "h100-pcie",
        "NVIDIA H100 PCIe 80GB",
        350,
        80 * _GB,
        756 * _T,
        2.0 * _T,
        (r"NVIDIA H100 PCIe", r"NVIDIA H100 PCIe 80GB"),
        source="NVIDIA H100 Tensor Core GPU datasheet (H100 PCIe)",
    ),
    Hardware(
        "h200",
        "NVIDIA H200 SXM 141GB",
        700,
        141 * _GB,
        989 * _T,
        4.8 * _T,
        (r"NVIDIA H200", r"NVIDIA H200 SXM 141GB"),
        source="NVIDIA H200 Tensor Core GPU datasheet (H200 SXM)",
    ),
    Hardware(
        "l40s",
        "NVIDIA L40S",
        350,
        48 * _GB,
        362 * _T,
        0.864 * _T,
        (r"NVIDIA L40S",),
        source="NVIDIA L40S GPU datasheet",
    ),
    Hardware(
        "l4",
        "NVIDIA L4",
        72,
        24 * _GB,
        121 * _T,
        0.300 * _T,
        (r"NVIDIA L4",),
        source="NVIDIA L4 Tensor Core GPU datasheet",
    ),
    Hardware(
        "t4",
        "NVIDIA T4",
        70,
        16 * _GB,
        65 * _T,
        0.320 * _T,
        (r"(Tesla |NVIDIA )?T4",),
        source="NVIDIA T4 Tensor Core GPU datasheet",
    ),
)


@dataclass(frozen=True)
class HardwareEntry:
    """One row of a user hardware file, in the units datasheets use."""

    name: str
    # Bounds far outside any device (a megabyte to a petabyte of memory, a MFLOP/s to an
    # EFLOP/s, a milliwatt to 100 kW), so that every figure derived from them stays finite
    # and a plan never divides by a memory that rounds to zero bytes.
    memory_gb: float = field(metadata={"min": 1e-3, "max": 1_000_000})
    peak_bf16_tflops: float = field(metadata={"min": 1e-6, "max": 1_000_000})
    memory_bandwidth_gb_per_s: float = field(metadata={"min": 1e-3, "max": 10_000_000})
    tdp_w: Optional[float] = field(default=None, metadata={"min": 1e-3, "max": 100_000})
    mean_power_w: Optional[float] = field(default=None, metadata={"min": 1e-3, "max": 100_000})
    power_source: str = ""
    description: str = ""
    nvml_names: list[str] = field(default_factory=list)
    source: str = "user hardware file"
    embodied_kgco2e: Optional[float] = field(default=None, metadata=positive(max=1_000_000))
    embodied_source: str = ""

    def __post_init__(self):
        if not self.name.strip() or self.name != self.name.strip():
            raise FieldError("name", self.name, "must be a non-empty name without surrounding spaces")
        for i, pattern in enumerate(self.nvml_names):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise FieldError(f"nvml_names[{i}]", pattern, f"not a regular expression ({exc})") from None
        if self.embodied_kgco2e is not None and not self.embodied_source:
            raise FieldError("embodied_source", self.embodied_source, "say where embodied_kgco2e comes from")
        if self.mean_power_w is not None and not self.power_source.strip():
            raise FieldError("power_source", self.power_source, "say where mean_power_w comes from")

    def to_hardware(self, path: str) -> Hardware:
        return Hardware(
            name=self.name.lower(),
            description=self.description or self.name,
            tdp_w=self.tdp_w,
            memory_bytes=int(self.memory_gb * _GB),
            peak_bf16_flops=self.peak_bf16_tflops * _T,
            memory_bandwidth_bytes_per_s=self.memory_bandwidth_gb_per_s * _GB,
            nvml_names=tuple(self.nvml_names),
            source=f"{self.source} ({path})",
            embodied_kgco2e=self.embodied_kgco2e,
            embodied_source=self.embodied_source,
            mean_power_w=self.mean_power_w,
            power_source=self.power_source,
        )


@dataclass(frozen=True)
class HardwareFile:
    hardware: list[HardwareEntry]


def user_hardware_file(path: Optional[str] = None) -> Optional[str]:
    """The user file in force: the argument, else $CARBONBENCH_HARDWARE_FILE, else none."""
    return path or os.environ.get(HARDWARE_FILE_ENV) or None


def hardware_table(path: Optional[str] = None) -> dict[str, Hardware]:
    """Built-in rows plus the user's; a user row with a built-in name replaces it."""
    table = {hw.name: hw for hw in BUILTIN}
    path = user_hardware_file(path)
    if path:
        parsed = build(HardwareFile, read_yaml(path), source=str(path))
        for entry in parsed.hardware:
            table[entry.name.lower()] = entry.to_hardware(str(path))
    return table


def known_hardware(path: Optional[str] = None) -> list[str]:
    return sorted(hardware_table(path))


def get_hardware(name: str, path: Optional[str] = None) -> Hardware:
    """By key ('a100-80gb'), full description, or an NVML device name; else UserError."""
    table = hardware_table(path)
    text = " ".join(str(name).split())
    key = text.lower()
    if key in table:
        return table[key]
    for hw in table.values():
        if hw.description.lower() == key or hw.matches(text):
            return hw
    raise UserError(
        f"unknown hardware '{name}'{closest(key, table)}; known hardware: {', '.join(sorted(table))}"
        f" (add your own with --hardware-file or ${HARDWARE_FILE_ENV})"
    )


def match_device(nvml_name: Optional[str], path: Optional[str] = None) -> Optional[Hardware]:
    """The table row whose NVML pattern matches ``nvml_name``, or None (e.g. a CPU)."""
    if not isinstance(nvml_name, str) or not nvml_name.strip():
        return None
    # User rows come last in the table; look at them first so they can claim a name.
    for hw in reversed(list(hardware_table(path).values())):
        if hw.matches(nvml_name):
            return hw
    return None
