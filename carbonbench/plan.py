"""Memory planning: how many devices of a kind a model needs, for inference and training.

The figures are the standard first-order accounting, each with its source:

- Weights: parameters x bytes per parameter. int8 stores the layers' linear weights in
  one byte (LLM.int8()-style); embeddings, biases and norms stay in 16-bit.
- KV cache (inference): 2 (K and V) x layers x batch x length x d_model, 16-bit
  (32-bit for an fp32 model).
- Inference activations: the transient working set of one layer (residual stream, its
  normed copy and the FFN intermediate) plus the logits for every position of the
  batch. Attention scores are assumed fused (SDPA/FlashAttention), so not stored.
- Training model states, mixed-precision Adam (Rajbhandari et al. 2020, ZeRO, sec. 3.1):
  16-bit weights 2 + gradients 2 + fp32 master weights, momentum and variance 12 =
  16 bytes per parameter. Pure fp32: 4 + 4 + 8 = 16 bytes as well.
- Training activations (Korthikanti et al. 2022, "Reducing Activation Recomputation in
  Large Transformer Models", eq. 1, no parallelism): s b h (34 + 5 a s / h) bytes per
  layer with 16-bit activations; doubled for fp32. With full recomputation only each
  layer's input is kept (2 s b h bytes per layer) plus one layer's full set while it is
  recomputed. Logits for the loss add b s V x 4 bytes (fp32) in both cases.

Devices needed assumes everything shards evenly across devices (FSDP/ZeRO-3 for the
model states, tensor/sequence parallelism for activations and the KV cache) and ignores
communication buffers: it is a lower bound.

The same accounting is the runner's pre-flight check on the CPU (``preflight``): a point
whose weights, cache and activations cannot fit in the host's available memory becomes
an ``oom`` row before it allocates anything, where running it would bring the kernel's
OOM killer down on the whole sweep. Being a lower bound, it never refuses a point that fits.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Optional, Sequence

import psutil

from carbonbench.errors import ModelTooLargeError, UserError
from carbonbench.hardware import Hardware
from carbonbench.opt.card import MAX_POSITIONS, Card
from carbonbench.scenario import Point

DTYPE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 1}
TRAINING_DTYPES = ("fp32", "fp16", "bf16")
DEFAULT_RESERVE = 0.10
MAX_PLAN_BATCH = 1 << 24  # plan asks about whole jobs: batches across many devices
TORCH_DTYPES = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}

_SOURCES = (
    "model states: Rajbhandari et al. 2020 (ZeRO), 16 bytes per parameter for mixed-precision Adam",
    "training activations: Korthikanti et al. 2022, eq. 1: s*b*h*(34 + 5*a*s/h) bytes per layer",
)


@dataclass(frozen=True)
class InferenceMemory:
    dtype: str
    batch_size: int
    seq_len: int
    weights_bytes: int
    kv_cache_bytes: int
    activations_bytes: int
    total_bytes: int
    devices_needed: int
    fits_one_device: bool


@dataclass(frozen=True)
class TrainingMemory:
    dtype: str
    batch_size: int
    seq_len: int
    weights_bytes: int
    gradients_bytes: int
    optimizer_bytes: int
    activations_bytes: int
    activations_recompute_bytes: int
    total_bytes: int
    total_recompute_bytes: int
    devices_needed: int
    devices_needed_recompute: int
    fits_one_device: bool
    fits_one_device_recompute: bool


@dataclass(frozen=True)
class MemoryPlan:
    model: str
    params: int
    hardware: str
    device_memory_bytes: int
    reserve_fraction: float
    usable_bytes_per_device: int
    inference: tuple[InferenceMemory, ...]
    training: tuple[TrainingMemory, ...]
    assumptions: tuple[str, ...]

    def to_dict(self) -> dict:
        out = asdict(self)
        out["inference"] = [asdict(m) for m in self.inference]
        out["training"] = [asdict(m) for m in self.training]
        out["assumptions"] = list(self.assumptions)
        return out


def weights_bytes(card: Card, dtype: str) -> int:
    _check_dtype(dtype)
    params = card.param_count()
    if dtype != "int8":
        return params * DTYPE_BYTES[dtype]
    arch = card.arch
    linear = arch.n_layers * (4 * arch.d_model**2 + 2 * arch.d_model * arch.ffn_dim)
    if arch.projects_embeddings:
        linear += 2 * arch.d_model * arch.word_embed_proj_dim
    return linear * 1 + (params - linear) * 2


def kv_cache_bytes(card: Card, dtype: str, batch_size: int, seq_len: int) -> int:
    arch = card.arch
    return 2 * arch.n_layers * batch_size * seq_len * arch.d_model * _activation_bytes(dtype)


def inference_activations_bytes(
    card: Card, dtype: str, batch_size: int, seq_len: int, logits_positions: Optional[int] = None
) -> int:
    """One layer's working set for every position, plus logits for ``logits_positions``
    positions per row (default all of them; prefill and decode keep only the last)."""
    arch = card.arch
    logits = arch.vocab_size * (seq_len if logits_positions is None else logits_positions)
    per_position = 2 * arch.d_model + arch.ffn_dim
    return (batch_size * seq_len * per_position + batch_size * logits) * _activation_bytes(dtype)


def training_activations_bytes(card: Card, dtype: str, batch_size: int, seq_len: int, recompute: bool) -> int:
    arch = card.arch
    s, b, h, a, L = seq_len, batch_size, arch.d_model, arch.n_heads, arch.n_layers
    scale = _activation_bytes(dtype) / 2  # the published formula is for 16-bit activations
    one_layer = s * b * h * (34 + 5 * a * s / h) * scale
    logits = b * s * arch.vocab_size * 4
    if recompute:
        kept = L * 2 * s * b * h * scale
        return int(kept + one_layer + logits)
    return int(L * one_layer + logits)


def plan_memory(
    card: Card,
    hardware: Hardware,
    *,
    dtypes: Sequence[str] = ("fp32", "bf16", "int8"),
    batch_size: int = 1,
    seq_len: Optional[int] = None,
    inference: bool = True,
    training: bool = True,
    reserve_fraction: float = DEFAULT_RESERVE,
) -> MemoryPlan:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= MAX_PLAN_BATCH:
        raise UserError(f"batch size must be a whole number from 1 to {MAX_PLAN_BATCH} (got {batch_size!r})")
    seq_len = card.arch.max_positions if seq_len is None else seq_len
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or not 1 <= seq_len <= MAX_POSITIONS:
        raise UserError(f"sequence length must be a whole number from 1 to {MAX_POSITIONS} (got {seq_len!r})")
    if not (0 <= reserve_fraction < 1):
        raise UserError(f"reserve fraction must be in [0, 1) (got {reserve_fraction})")
    if not (inference or training):
        raise UserError("nothing to plan: choose inference, training or both")
    for d in dtypes:
        _check_dtype(d)
    dtypes = list(dict.fromkeys(dtypes))
    train_dtypes = [d for d in dtypes if d in TRAINING_DTYPES]
    if training and not inference and not train_dtypes:
        raise UserError("int8 is a storage format for inference here, not a training dtype: choose fp32, fp16 or bf16")

    usable = int(hardware.memory_bytes * (1 - reserve_fraction))
    if usable < 1:  # devices needed divides by it
        raise UserError(
            f"{hardware.name}: {hardware.memory_bytes:,} bytes with {reserve_fraction:.6g} kept back "
            "leaves no usable memory; give a smaller --reserve"
        )
    inf_rows = tuple(_inference(card, d, batch_size, seq_len, usable) for d in dtypes) if inference else ()
    train_rows = tuple(_training(card, d, batch_size, seq_len, usable) for d in train_dtypes) if training else ()

    assumptions = [
        f"{hardware.description}: {hardware.memory_bytes / 1e9:g} GB ({hardware.source}, GB = 10^9 bytes), "
        f"{reserve_fraction:.0%} kept back for the CUDA context, allocator fragmentation and workspaces",
        f"batch {batch_size} x {seq_len} tokens"
        + (" (the model's context length)" if seq_len == card.arch.max_positions else ""),
        "devices needed assumes memory shards evenly across devices (FSDP/ZeRO-3 plus tensor "
        "parallelism) and ignores communication buffers: a lower bound",
    ]
    if inference:
        assumptions += [
            "inference: KV cache in 16-bit (32-bit for fp32); activations are one layer's working "
            "set plus logits for every position; attention fused (no stored score matrix)",
        ]
        if "int8" in dtypes:
            assumptions.append(
                "int8: linear-layer weights in 1 byte, embeddings, biases and norms in 16-bit; "
                "quantisation scales not counted"
            )
    if training:
        assumptions += [
            "training: Adam; fp16/bf16 means mixed precision with fp32 master weights and optimizer "
            "state (16 bytes per parameter); fp32 means 4 + 4 + 8 = 16 bytes per parameter",
            "training activations with eager attention (the 5*a*s/h term); logits for the loss in fp32",
            *_SOURCES,
        ]
        if "int8" in dtypes:
            assumptions.append("int8 is shown for inference only: it is not a training dtype here")
    return MemoryPlan(
        model=card.name,
        params=card.param_count(),
        hardware=hardware.name,
        device_memory_bytes=hardware.memory_bytes,
        reserve_fraction=reserve_fraction,
        usable_bytes_per_device=usable,
        inference=inf_rows,
        training=train_rows,
        assumptions=tuple(assumptions),
    )


def _inference(card: Card, dtype: str, b: int, s: int, usable: int) -> InferenceMemory:
    w = weights_bytes(card, dtype)
    kv = kv_cache_bytes(card, dtype, b, s)
    act = inference_activations_bytes(card, dtype, b, s)
    total = w + kv + act
    return InferenceMemory(dtype, b, s, w, kv, act, total, _devices(total, usable), total <= usable)


def _training(card: Card, dtype: str, b: int, s: int, usable: int) -> TrainingMemory:
    params = card.param_count()
    w = params * DTYPE_BYTES[dtype]
    grads = params * DTYPE_BYTES[dtype]
    # fp32 Adam keeps momentum and variance (8 bytes); mixed precision adds fp32 master weights.
    optimizer = params * (8 if dtype == "fp32" else 12)
    act = training_activations_bytes(card, dtype, b, s, recompute=False)
    act_rc = training_activations_bytes(card, dtype, b, s, recompute=True)
    states = w + grads + optimizer
    total, total_rc = states + act, states + act_rc
    return TrainingMemory(
        dtype,
        b,
        s,
        w,
        grads,
        optimizer,
        act,
        act_rc,
        total,
        total_rc,
        _devices(total, usable),
        _devices(total_rc, usable),
        total <= usable,
        total_rc <= usable,
    )


# -- the runner's pre-flight check ------------------------------------------------------------
@dataclass(frozen=True)
class PointMemory:
    """What one point holds in memory at its peak, by part (bytes)."""

    weights_bytes: int
    states_bytes: int  # training: gradients and Adam's two moments
    kv_cache_bytes: int
    activations_bytes: int  # the inputs included

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.states_bytes + self.kv_cache_bytes + self.activations_bytes

    def parts(self) -> str:
        named = (
            ("weights", self.weights_bytes),
            ("gradients and optimizer", self.states_bytes),
            ("KV cache", self.kv_cache_bytes),
            ("activations", self.activations_bytes),
        )
        return ", ".join(f"{what} {n / 1e9:,.1f} GB" for what, n in named if n)


def point_memory(card: Card, point: Point, dtype: str, *, weights: bool = True) -> PointMemory:
    """The memory a point needs as the runner runs it, at the lower bounds above.

    Inference runs in ``dtype`` and keeps logits for the last position only (prefill,
    decode); its KV cache holds prompt and new tokens. Training keeps fp32 weights,
    gradients and Adam moments, activations in ``dtype`` (autocast), counted with
    recomputation, the smaller of the two, so that no point that fits is refused.
    ``weights=False`` when the weights are already in memory.
    """
    b = point.batch_size
    if point.workload == "train":
        params, s = card.param_count(), point.seq_len
        act = training_activations_bytes(card, dtype, b, s, recompute=True)
        return PointMemory(params * 4 if weights else 0, params * (4 + 8), 0, act + b * s * 8)
    s = point.prompt_tokens
    act = inference_activations_bytes(card, dtype, b, s, logits_positions=1) + b * s * 16  # ids and mask
    kv = kv_cache_bytes(card, dtype, b, s + point.new_tokens)
    return PointMemory(weights_bytes(card, dtype) if weights else 0, 0, kv, act)


def preflight(point: Point, card: Card, dtype: Any, device: Any, layout: Any = None, *, loaded: bool = False) -> None:
    """ModelTooLargeError (the runner's ``oom`` row) when a point on the CPU cannot fit in
    the host's available memory; nothing for other devices, where running out of
    memory is an exception the runner records, not the end of the process.

    dtype is the scenario's torch dtype, device a torch device, layout the point's
    (only a single-process layout is checked), loaded whether the weights are in memory.
    """
    if getattr(device, "type", device) != "cpu" or getattr(layout, "mode", "single") != "single":
        return
    need = point_memory(card, point, TORCH_DTYPES.get(str(dtype).removeprefix("torch."), "fp32"), weights=not loaded)
    free = psutil.virtual_memory().available
    if need.total_bytes > free:
        raise ModelTooLargeError(
            f"{point.key} needs about {need.total_bytes / 1e9:,.1f} GB of host memory ({need.parts()}) but "
            f"{free / 1e9:,.1f} GB is available; not run (estimated as carbonbench plan does)"
        )


def _devices(total: int, usable: int) -> int:
    return max(1, math.ceil(total / usable))


def _activation_bytes(dtype: str) -> int:
    _check_dtype(dtype)
    return 4 if dtype == "fp32" else 2  # int8 models compute in 16-bit


def _check_dtype(dtype: str) -> None:
    if dtype not in DTYPE_BYTES:
        raise UserError(f"unknown dtype '{dtype}'; choose one of {', '.join(DTYPE_BYTES)}")
