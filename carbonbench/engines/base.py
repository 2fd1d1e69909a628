"""What every engine does, and the settings they share.

An engine loads a model and runs the three workloads' operations on it: prefill, one
decode step, a training loss, an optimizer. The workloads in carbonbench.workloads call
only these, so the same workload, meters and windows measure either engine.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from abc import ABC, abstractmethod
from typing import Any, Optional

import torch
from torch import Tensor, nn

from carbonbench.scenario import CUDA_ONLY_SDPA, EngineConfig, ModelEntry

# torch.compile's backend; "aot_eager" or "eager" trace without generating code, for
# bisecting a compile problem (and for fast tests). Unset: inductor.
COMPILE_BACKEND_ENV = "CARBONBENCH_COMPILE_BACKEND"


def compile_backend() -> str:
    return os.environ.get(COMPILE_BACKEND_ENV) or "inductor"


def effective(config: EngineConfig, device: torch.device) -> tuple[EngineConfig, list[str]]:
    """The options that apply on device (and in this process group), and a note for
    each one dropped.

    A scenario with ``device: cpu`` cannot ask for CUDA-only options (ConfigError at
    load); one with ``device: auto`` may, and on a CPU they are dropped with a note, so
    that one scenario file runs anywhere.
    """
    notes, changes = [], {}
    world = _world_size()
    if config.fused_qkv and world > 1:
        # Every point of a multi-process job is sharded or replicated by
        # carbonbench.distributed.parallel, which never fuses (a column shard of the fused
        # weight would cut across q|k|v), so the option cannot be in effect.
        changes["fused_qkv"] = False
        notes.append(f"engine.fused_qkv ignored: the models of a {world}-process job keep separate q/k/v projections")
    if device.type != "cuda":
        if config.cuda_graphs:
            changes["cuda_graphs"] = False
            notes.append(f"engine.cuda_graphs ignored: CUDA graphs need a CUDA device, this run is on {device.type}")
        if config.sdpa_backend in CUDA_ONLY_SDPA:
            changes["sdpa_backend"] = "auto"
            notes.append(
                f"engine.sdpa_backend {config.sdpa_backend!r} ignored: a CUDA kernel, this run is on {device.type}"
            )
        if config.fused_optimizer and device.type != "cpu":
            changes["fused_optimizer"] = False
            notes.append(f"engine.fused_optimizer ignored: no fused AdamW on {device.type}")
    return (dataclasses.replace(config, **changes) if changes else config), notes


def _world_size() -> int:
    """Processes in this job's default process group (1 outside torchrun)."""
    dist = torch.distributed
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _configure_dynamo() -> None:
    import torch._dynamo.config as dc

    # Every point of a sweep may compile its own shapes. Past the default limit of 8,
    # dynamo would quietly run eager; here a limit hit is an error, never a slow point.
    dc.recompile_limit = max(dc.recompile_limit, 64)
    dc.accumulated_recompile_limit = max(dc.accumulated_recompile_limit, 4096)
    dc.fail_on_recompile_limit_hit = True


class Engine(ABC):
    """One implementation of OPT and the options it runs with (already made effective)."""

    name: str

    def __init__(self, config: EngineConfig, device: torch.device, notes: Optional[list[str]] = None):
        self.config = config
        self.device = torch.device(device)
        self.notes = list(notes or [])
        self.sealed = False  # True inside measured windows: no compiling, no capturing
        if self.compiles:
            _configure_dynamo()

    # -- the model --------------------------------------------------------------------
    @abstractmethod
    def load(self, entry: ModelEntry, device, dtype: torch.dtype, seed: int) -> nn.Module:
        """The model of a scenario's entry (its card: random weights or a checkpoint). It has
        ``.arch`` (an Architecture), ``.parameters()``, ``train()``/``eval()`` and a
        settable ``gradient_checkpointing``."""

    @abstractmethod
    def new_cache(self, model: nn.Module, batch: int, max_len: int) -> Any:
        """A KV cache for batch rows and up to max_len positions (prompt + new tokens)."""

    @abstractmethod
    def prefill(
        self, model: nn.Module, input_ids: Tensor, cache: Any, attention_mask: Optional[Tensor] = None
    ) -> Tensor:
        """Run the prompt [B, S] into a fresh cache; logits of its last position [B, V]."""

    @abstractmethod
    def decode_step(self, model: nn.Module, token_ids: Tensor, cache: Any, pos: int) -> Tensor:
        """Feed one token per row [B, 1] at position pos; logits [B, V] for the next one.

        The tensor returned may be a buffer that the next step overwrites: use it (argmax)
        before the next call."""

    @abstractmethod
    def train_loss(self, model: nn.Module, input_ids: Tensor) -> Tensor:
        """Mean next-token cross-entropy of input_ids [B, T] (with grad), in float32."""

    def optimizer(self, params, lr: float) -> torch.optim.Optimizer:
        """AdamW as OPT trained (betas 0.9/0.95, weight decay 0.1); fused when asked."""
        fused = True if self.config.fused_optimizer else None
        return torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=0.1, fused=fused)

    # -- compile and measurement windows --------------------------------------------
    @property
    def compiles(self) -> bool:
        """Whether a first step compiles or captures anything (so the warm-up must time it)."""
        return self.config.compile or self.config.cuda_graphs

    def seal(self) -> None:
        """Called after the warm-up: from here a recompile or a graph capture raises
        instead of running inside a measured window."""
        self.sealed = True
        if self.config.compile:
            torch.compiler.set_stance("fail_on_recompile")

    def unseal(self) -> None:
        if self.sealed and self.config.compile:
            torch.compiler.set_stance("default")
        self.sealed = False

    def sdpa(self):
        """The attention kernels allowed (engine.sdpa_backend); auto lets torch choose."""
        if self.config.sdpa_backend == "auto":
            return contextlib.nullcontext()
        from torch.nn.attention import SDPBackend, sdpa_kernel

        backend = {
            "flash": SDPBackend.FLASH_ATTENTION,
            "efficient": SDPBackend.EFFICIENT_ATTENTION,
            "cudnn": SDPBackend.CUDNN_ATTENTION,
            "math": SDPBackend.MATH,
        }[self.config.sdpa_backend]
        return sdpa_kernel(backend)

    def compile_fn(self, fn, **kwargs):
        return torch.compile(fn, backend=compile_backend(), **kwargs)

    def describe(self) -> dict[str, Any]:
        """What a run records: the engine, its effective options and any notes."""
        info = {"name": self.name, "options": self.config.options(), "notes": list(self.notes)}
        if self.config.compile:
            info["compile_backend"] = compile_backend()
        return info
