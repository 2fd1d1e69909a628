"""The three workloads measured: prefill, decode and a training step.

Each workload does one unit of work per ``step()`` and knows, before it runs, how many
tokens that step processes and how many FLOPs it costs, in two conventions
(carbonbench.flops): ``model_flops_per_step``, the published convention behind MFU,
and ``hardware_flops_per_step``, what the engine executes (activation recomputation,
decode steps over the whole static KV cache), behind HFU. ``flops_per_step`` is the
hardware figure, as it always was in the run files.
"""

from __future__ import annotations

import contextlib
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from carbonbench import flops
from carbonbench.engines import make_engine
from carbonbench.opt.card import Architecture
from carbonbench.scenario import Point, TrainConfig


def forward_flops(
    arch: Architecture, batch: int, new: int, cached: int = 0, head_positions: Optional[int] = None
) -> float:
    """One forward of ``new`` tokens after ``cached`` ones, attention dense over all of them."""
    return flops.forward(arch, batch, new, cached + new, new if head_positions is None else head_positions)


# Hardware FLOPs as floats, for the forecast and the fixtures.
def prefill_flops(arch: Architecture, batch: int, prompt: int) -> float:
    return flops.prefill(arch, batch, prompt).hardware


def decode_flops(arch: Architecture, batch: int, prompt: int, new: int) -> float:
    return flops.decode(arch, batch, prompt, new).hardware


def train_flops(arch: Architecture, batch: int, seq: int, recompute: bool = False) -> float:
    return flops.train(arch, batch, seq, recompute).hardware


def decode_attends_buffer(engine) -> bool:
    """Whether the engine's decode steps score every slot of a preallocated cache: the
    native engine's fixed-shape step (compiled or CUDA-graph replayed), and transformers'
    StaticCache (its prefill scores the prompt only, as the native one does)."""
    if _is_transformers(engine):
        return bool(engine.config.static_cache)
    return bool(getattr(engine, "compiles", False))


def projects_all_positions(engine) -> bool:
    """transformers applies opt-350m's project_out to every prompt position, then keeps
    the last; the native engine keeps the last position first."""
    return _is_transformers(engine)


def _is_transformers(engine) -> bool:
    return getattr(engine, "name", None) == "transformers"


@dataclass
class Inputs:
    """Prompt token ids and, for text prompts, their padding mask and word count."""

    input_ids: torch.Tensor  # [B, T]
    attention_mask: Optional[torch.Tensor] = None  # [B, T], 1 = real token, 0 = left padding
    words: Optional[int] = None
    real_tokens: Optional[int] = None
    serve: Optional[object] = None  # a serve point's request stream (carbonbench.serve_workload.ServeInputs)

    @property
    def tokens_per_word(self) -> Optional[float]:
        if not self.words or not self.real_tokens:
            return None
        return self.real_tokens / self.words


class Workload(ABC):
    """One unit of work per ``step()``; the runner times steps and meters windows."""

    name: str
    tokens_per_step: int
    model_flops_per_step: float
    hardware_flops_per_step: float

    def __init__(self, model: torch.nn.Module, point: Point, inputs: Inputs, sync: Callable[[], None], engine=None):
        self.model, self.point, self.inputs, self.sync = model, point, inputs, sync
        self.arch: Architecture = model.arch
        if engine is None:  # the native engine with default options
            engine = make_engine(None, inputs.input_ids.device)
        self.engine = engine  # carbonbench.engines.Engine: runs the model's operations

    @property
    def flops_per_step(self) -> float:
        """The hardware figure: what existing run files and callers have always read."""
        return self.hardware_flops_per_step

    @flops_per_step.setter
    def flops_per_step(self, value: float) -> None:
        self.hardware_flops_per_step = value

    def _set_flops(self, step: flops.StepFlops) -> None:
        self.model_flops_per_step, self.hardware_flops_per_step = step.model, step.hardware

    @abstractmethod
    def step(self) -> dict[str, float]:
        """Run one step; return extra timings (e.g. ttft_s) measured inside it."""

    def check(self) -> None:
        """Raise after a window if the work went wrong (e.g. a non-finite loss)."""

    @property
    def compiles(self) -> bool:
        """Whether the first step compiles or captures (torch.compile, CUDA graphs)."""
        return self.engine.compiles

    def seal(self) -> None:
        """After the warm-up: a recompile or graph capture from here on is an error."""
        self.engine.seal()

    def close(self) -> None:
        """Free what the workload holds (caches, optimizer state)."""
        self.engine.unseal()


class Prefill(Workload):
    name = "prefill"

    def __init__(self, model, point, inputs, sync, engine=None):
        super().__init__(model, point, inputs, sync, engine)
        b, t = inputs.input_ids.shape
        self.cache = self.engine.new_cache(model, b, t)
        self.tokens_per_step = b * t
        self._set_flops(flops.prefill(self.arch, b, t, projects_all_positions(self.engine)))

    def step(self) -> dict[str, float]:
        self.engine.prefill(self.model, self.inputs.input_ids, self.cache, self.inputs.attention_mask)
        return {}

    def close(self) -> None:
        super().close()
        self.cache = None


class Decode(Workload):
    """Greedy generation of ``new_tokens`` after the prompt; tokens counted are the new ones."""

    name = "decode"

    def __init__(self, model, point, inputs, sync, engine=None):
        super().__init__(model, point, inputs, sync, engine)
        b, t = inputs.input_ids.shape
        self.new = point.new_tokens
        self.cache = self.engine.new_cache(model, b, t + self.new)
        self.tokens_per_step = b * self.new
        self._set_flops(
            flops.decode(
                self.arch, b, t, self.new, decode_attends_buffer(self.engine), projects_all_positions(self.engine)
            )
        )
        self.out = torch.empty(b, self.new, dtype=torch.long, device=inputs.input_ids.device)

    def step(self) -> dict[str, float]:
        t0 = time.perf_counter()
        prompt_len = self.inputs.input_ids.shape[1]
        logits = self.engine.prefill(self.model, self.inputs.input_ids, self.cache, self.inputs.attention_mask)
        token = logits.argmax(dim=-1, keepdim=True)  # [B, 1], stays on the device
        self.out[:, :1] = token
        self.sync()
        ttft = time.perf_counter() - t0
        for i in range(1, self.new):
            logits = self.engine.decode_step(self.model, token, self.cache, prompt_len + i - 1)
            token = logits.argmax(dim=-1, keepdim=True)
            self.out[:, i : i + 1] = token
        self.sync()
        total = time.perf_counter() - t0
        timings = {"ttft_s": ttft}
        if self.new > 1:
            timings["tpot_s"] = (total - ttft) / (self.new - 1)
        return timings

    def close(self) -> None:
        super().close()
        self.cache = None


class Train(Workload):
    """Forward, backward and an AdamW step; mixed precision when the dtype asks for it."""

    name = "train"

    def __init__(
        self,
        model,
        point,
        inputs,
        sync,
        *,
        lr: float,
        autocast_dtype: Optional[torch.dtype],
        recompute: bool,
        engine=None,
    ):
        super().__init__(model, point, inputs, sync, engine)
        device = inputs.input_ids.device
        b, t = inputs.input_ids.shape
        self.tokens_per_step = b * t
        self._set_flops(flops.train(self.arch, b, t, recompute))
        self.recompute = recompute
        model.train()
        if hasattr(model, "gradient_checkpointing"):
            model.gradient_checkpointing = recompute
        self.optimizer = self.engine.optimizer(model.parameters(), lr)
        self.autocast = (
            torch.autocast(device.type, dtype=autocast_dtype)
            if autocast_dtype is not None
            else contextlib.nullcontext()
        )
        # fp16 gradients underflow without loss scaling; bf16 and fp32 need none.
        self.scaler = torch.amp.GradScaler(device.type) if autocast_dtype == torch.float16 else None
        self.nonfinite = torch.zeros((), dtype=torch.bool, device=device)
        self.last_loss = torch.zeros((), device=device)

    def step(self) -> dict[str, float]:
        ids = self.inputs.input_ids
        with self.autocast:
            loss = self.engine.train_loss(self.model, ids)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        # Checked once per window by check(), so no host round trip inside the step.
        loss = loss.detach()
        self.nonfinite |= ~torch.isfinite(loss)
        self.last_loss = loss
        return {}

    def check(self) -> None:
        if bool(self.nonfinite):
            raise NonFiniteLoss(f"training loss became non-finite (last loss {float(self.last_loss)})")

    def close(self) -> None:
        super().close()
        self.optimizer.zero_grad(set_to_none=True)
        self.optimizer = None
        self.model.eval()


class NonFiniteLoss(RuntimeError):
    """A training step produced NaN or inf; the point is recorded as failed."""


WORKLOADS: dict[str, type[Workload]] = {"prefill": Prefill, "decode": Decode, "train": Train}


def make_workload(
    point: Point,
    model: torch.nn.Module,
    inputs: Inputs,
    sync: Callable[[], None],
    engine,
    train: Optional[TrainConfig],
    dtype: torch.dtype,
    replicas: int = 1,
) -> Workload:
    """The point's workload on ``model``. Training autocasts to ``dtype`` unless it is fp32.

    ``replicas`` data-parallel copies each run this step on their own rows, so a step's
    tokens and FLOPs are the whole job's: every replica's.
    """
    if point.workload == "train":
        workload: Workload = Train(
            model,
            point,
            inputs,
            sync,
            lr=train.lr,
            autocast_dtype=None if dtype == torch.float32 else dtype,
            recompute=train.activation_checkpointing,
            engine=engine,
        )
    else:
        workload = WORKLOADS[point.workload](model, point, inputs, sync, engine=engine)
    workload.tokens_per_step *= replicas
    workload.hardware_flops_per_step *= replicas
    workload.model_flops_per_step *= replicas
    return workload
