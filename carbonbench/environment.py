"""What machine and software a run happened on, recorded with every result file.

torch is imported where a function needs it: ``carbonbench env`` on a machine without a
GPU describes it from the files torch ships, without loading torch (light_device).
"""

from __future__ import annotations

import ast
import glob
import importlib.metadata
import importlib.util
import os
import platform
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from carbonbench import __version__
from carbonbench.errors import UserError
from carbonbench.meters.cpu import cpu_model_name

if TYPE_CHECKING:
    import torch


def resolve_device(requested: str) -> torch.device:
    """'auto' picks CUDA when present; 'cuda' without a GPU is a user error."""
    import torch

    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise UserError("device 'cuda' was asked for, but torch sees no CUDA GPU (use --device cpu or auto)")
    if requested not in ("cpu", "cuda"):
        raise UserError(f"unknown device '{requested}' (use auto, cpu or cuda)")
    return torch.device(requested)


def light_device(requested: str):
    """``"cpu"`` without importing torch when no GPU can be there; else resolve_device's answer."""
    gpu_nodes = glob.glob("/dev/nvidia[0-9]*") + glob.glob("/dev/kfd")  # NVIDIA and ROCm device nodes
    if requested == "cpu" or (requested == "auto" and not gpu_nodes):
        return "cpu"
    return resolve_device(requested)


def resolve_dtype(requested: str, device: torch.device) -> torch.dtype:
    import torch

    if requested == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float16 if device.type == "cuda" else torch.float32
    return getattr(torch, requested)


def gpu_info() -> list[dict[str, Any]]:
    import torch

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


def collect(device=None, threads: dict | None = None) -> dict[str, Any]:
    """The environment block; ``threads`` is what carbonbench.threads.apply set for the run.

    ``device`` "cpu" (a string, from light_device) describes torch without importing it.
    """
    if device == "cpu" and "torch" not in sys.modules:
        return _host() | _torch_unloaded()
    import torch

    env = _host()
    env.update(
        {
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "torch_interop_threads": torch.get_num_interop_threads(),
            **(threads or {}),
            "gpus": gpu_info(),
            "cuda": torch.version.cuda,
            "nvidia_driver": nvidia_driver() if torch.cuda.is_available() else None,
        }
    )
    if device is not None:
        device = torch.device(device)
        env["device_type"] = device.type
        env["device_name"] = device_name(device, env)
    return env


def _host() -> dict[str, Any]:
    vm = psutil.virtual_memory()
    return {
        "hostname": socket.gethostname(),
        "os": f"{platform.system()} {platform.release()}",
        "python": sys.version.split()[0],
        "carbonbench": __version__,
        "cpu_model": cpu_model_name(),
        "cpu_physical_cores": psutil.cpu_count(logical=False),
        "cpu_logical_cores": psutil.cpu_count(logical=True),
        "ram_bytes": vm.total,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }


def _torch_unloaded() -> dict[str, Any]:
    """What ``collect`` says of torch without importing it: its version, its CUDA build,
    and the threads ``measurement.threads: auto`` would give a run started now."""
    from carbonbench.threads import auto_threads

    auto = auto_threads()
    return {
        "torch": _installed_version("torch"),
        "threads_auto": auto.threads,
        "threads_reason": auto.reason,
        "gpus": [],
        "cuda": _torch_build_field("cuda"),
        "nvidia_driver": None,
        "device_type": "cpu",
        "device_name": cpu_model_name(),
    }


def _installed_version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _torch_build_field(name: str) -> str | None:
    """A constant of torch/version.py (written when torch was built), read as text."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return None
    try:
        tree = ast.parse((Path(next(iter(spec.submodule_search_locations))) / "version.py").read_text())
    except (OSError, SyntaxError, StopIteration):
        return None
    for node in tree.body:
        target = (
            node.target
            if isinstance(node, ast.AnnAssign)
            else (node.targets[0] if isinstance(node, ast.Assign) else None)
        )
        if isinstance(target, ast.Name) and target.id == name and node.value is not None:
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                return None
            return value if isinstance(value, str) else None
    return None


def device_name(device: torch.device, env: dict[str, Any]) -> str:
    if device.type == "cuda":
        index = device.index or 0
        return env["gpus"][index]["name"] if env["gpus"] else "CUDA device"
    return env["cpu_model"]
