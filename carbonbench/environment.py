"""What machine and software a run happened on, recorded with every result file."""

from __future__ import annotations

import os
import platform
import socket
import sys
from typing import Any

import psutil
import torch

from carbonbench import __version__
from carbonbench.errors import UserError
from carbonbench.meters.cpu import cpu_model_name


def resolve_device(requested: str) -> torch.device:
    """'auto' picks CUDA when present; 'cuda' without a GPU is a user error."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise UserError("device 'cuda' was asked for, but torch sees no CUDA GPU (use --device cpu or auto)")
    if requested not in ("cpu", "cuda"):
        raise UserError(f"unknown device '{requested}' (use auto, cpu or cuda)")
    return torch.device(requested)


def resolve_dtype(requested: str, device: torch.device) -> torch.dtype:
    if requested == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float16 if device.type == "cuda" else torch.float32
    return getattr(torch, requested)


def gpu_info() -> list[dict[str, Any]]:
    if not torch.cuda.is_available():
        return []
    gpus = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        gpus.append(
            {
                "index": i,
                "name": props.name,
                "memory_bytes": props.total_memory,
                "compute_capability": f"{props.major}.{props.minor}",
                "multiprocessors": props.multi_processor_count,
            }
        )
    return gpus


def nvidia_driver() -> str | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        version = pynvml.nvmlSystemGetDriverVersion()
        return version.decode() if isinstance(version, bytes) else version
    except Exception:  # any NVML failure just means "unknown" here; meters report their own
        return None


def nvml_facts() -> dict[str, Any]:
    """What NVML says about every GPU (carbonbench.meters.nvml_facts), read without
    torch: the energy counter, instantaneous power, limits, clocks, MIG mode."""
    try:
        from carbonbench.meters import nvml_facts  # pynvml: only when asked, and a missing one is said
    except ImportError as exc:  # nvidia-ml-py missing: a broken install, said as such
        return {"available": False, "reason": f"pynvml cannot be imported ({exc}): pip install nvidia-ml-py"}
    return nvml_facts.describe_system()


def collect(device: torch.device | None = None) -> dict[str, Any]:
    vm = psutil.virtual_memory()
    env = {
        "hostname": socket.gethostname(),
        "os": f"{platform.system()} {platform.release()}",
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "carbonbench": __version__,
        "cpu_model": cpu_model_name(),
        "cpu_physical_cores": psutil.cpu_count(logical=False),
        "cpu_logical_cores": psutil.cpu_count(logical=True),
        "torch_threads": torch.get_num_threads(),
        "ram_bytes": vm.total,
        "gpus": gpu_info(),
        "cuda": torch.version.cuda,
        "nvidia_driver": nvidia_driver() if torch.cuda.is_available() else None,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }
    if device is not None:
        env["device_type"] = device.type
        env["device_name"] = device_name(device, env)
    return env


def device_name(device: torch.device, env: dict[str, Any]) -> str:
    if device.type == "cuda":
        index = device.index or 0
        return env["gpus"][index]["name"] if env["gpus"] else "CUDA device"
    return env["cpu_model"]
