"""The ``engine:`` section of a scenario: which implementation runs the model, and its speed settings."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal, Optional

from carbonbench.config import FieldError

CUDA_ONLY_SDPA = ("efficient", "cudnn")


EngineName = Literal["native", "transformers"]


@dataclass(frozen=True, eq=False)
class EngineConfig:
    """Which implementation runs the model, and the speed settings it runs with.

    ``engine: native`` (a plain name) means ``engine: {name: native}``; every option can
    be switched alone, so that its effect can be measured. What each does, and which
    apply where, is in docs/engines.md. Options that need CUDA are a ConfigError with
    ``device: cpu``; with ``device: auto`` on a CPU they are ignored and the run's
    warnings and ``engine.options`` say so.
    """

    name: EngineName = "native"
    compile: bool = False  # torch.compile the forward (prefill, train) and the decode step
    cuda_graphs: bool = False  # replay the decode step from a captured CUDA graph (native, CUDA)
    # Preallocated KV cache; unset = the engine's usual: native true, transformers false
    # (DynamicCache, what Hugging Face's generate uses by default).
    static_cache: Optional[bool] = None
    # q, k and v from one [3D, D] matmul instead of three (native only; unset = native
    # true): in small-batch decode on a GPU, one GEMV should cost less than three small ones.
    fused_qkv: Optional[bool] = None
    fused_optimizer: bool = True  # fused AdamW kernel for training (both engines)
    sdpa_backend: Literal["auto", "flash", "efficient", "cudnn", "math"] = "auto"

    def __post_init__(self):
        if self.static_cache is None:
            object.__setattr__(self, "static_cache", self.name == "native")
        if self.fused_qkv is None:
            object.__setattr__(self, "fused_qkv", self.name == "native")
        if self.fused_qkv and self.name != "native":
            raise FieldError("fused_qkv", True, "is a native-engine setting")
        if self.cuda_graphs and self.name != "native":
            raise FieldError(
                "cuda_graphs", True, "is a native-engine setting (for transformers use compile with static_cache)"
            )
        if self.cuda_graphs and not self.static_cache:
            raise FieldError("cuda_graphs", True, "needs static_cache: true (a graph replays fixed buffers)")
        if self.compile and self.name == "native" and not self.static_cache:
            raise FieldError(
                "compile",
                True,
                "needs static_cache: true on the native engine (a growing cache changes shapes every step)",
            )

    def options(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "name"}

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):  # the plain form: `scenario.engine == "native"` compares the name
            return self.name == other
        if isinstance(other, EngineConfig):
            return (self.name, self.options()) == (other.name, other.options())
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self.name, tuple(self.options().items())))
