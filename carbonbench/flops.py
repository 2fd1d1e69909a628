"""FLOPs of the OPT workloads and of whole training jobs, in two conventions.

MODEL FLOPs are the published convention behind MFU (PaLM, Chowdhery et al. 2022,
appendix B; Megatron-LM, Narayanan et al. 2021, appendix): the matmuls the model needs
for its outputs, attention counted as the full query x key rectangle, no recomputation.
A training step is three forwards (the backward costs two). For an OPT layout with a 4d
FFN and no embedding projections this is exactly Megatron-LM's
72 B s l h^2 (1 + s/(6h) + V/(12 l h)) per step; PaLM's 6 N + 12 L H Q T per token
differs only by the parameters that are not matmul weights (positions, biases, norms).

HARDWARE FLOPs, behind HFU, count what carbonbench's engine executes:

- activation checkpointing recomputes each decoder layer in the backward, as PyTorch's
  non-reentrant checkpoint does it: it stops once the last tensor the layer saved for
  backward is rebuilt, and autograd saves a matmul's inputs before running it. So a
  pre-LN layer's last matmul (fc2) is never run again; a post-LN layer (opt-350m) ends
  in a layer norm that saves its outputs, so fc2 does run again. The LM head and the
  embedding projections are outside the checkpointed layers and never recomputed;
- a decode step that reads the whole static KV cache (the native engine's compiled or
  CUDA-graph step, ``OPT.step``; transformers' StaticCache) scores every slot of the
  buffer, filled or not;
- transformers applies opt-350m's project_out to every prompt position before keeping
  the last one.

Both conventions count 2 FLOPs per multiply-add, matmuls only: biases, norms, softmax
and embedding lookups are left out (below 1% for every OPT size). Attention is counted
dense: each query against every key the SDPA call is given, masked or not, and its
backward as twice its forward. That is what the math SDPA backend computes, and what
``torch.utils.flop_counter.FlopCounterMode`` counts for it (it has no formula for the
CPU's fused kernel). Flash-style kernels skip whole masked tiles of a causal call, and
recompute the scores in their backward (FlopCounterMode counts that recompute for the
CUDA kernels); that kernel-level work depends on the kernel and the GPU, and is not
modelled.

For whole jobs, ``job_from_architecture`` and ``job_from_params`` give the same model
FLOPs and, with recomputation, hardware FLOPs as Megatron-LM counts them (one more
forward of every layer, none of the LM head: 96 B s l h^2 (1 + s/(6h) + V/(16 l h))).
BLOOM's published throughput was computed that way (its training README), and OPT's
logbook figures (4.3e23 FLOPs, 33 days on 1024 GPUs at 147 TFLOP/s) agree with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from carbonbench.opt.card import Architecture


@dataclass(frozen=True)
class StepFlops:
    """One workload step, in both conventions."""

    model: float
    hardware: float


def layer_weights(arch: Architecture) -> int:
    """Matmul weights of one decoder layer: q, k, v, out_proj, fc1, fc2."""
    d = arch.d_model
    return 4 * d * d + 2 * d * arch.ffn_dim


def forward(arch: Architecture, batch: int, new: int, keys: int, head: int, project_out: Optional[int] = None) -> float:
    """One forward over ``new`` tokens per row, each query scored against ``keys`` keys,
    logits for ``head`` positions per row; ``project_out`` positions (default: the
    logit positions) pass opt-350m's output projection."""
    d, e = arch.d_model, arch.word_embed_proj_dim
    out = head if project_out is None else project_out
    # project_in maps every new token; project_out the positions it is given.
    proj = 2 * d * e * (new + out) if arch.projects_embeddings else 0
    matmul = 2 * arch.n_layers * layer_weights(arch) * new + proj + 2 * arch.vocab_size * e * head
    attention = 4 * arch.n_layers * d * new * keys  # QK^T and AV, [new x keys] each
    return float(batch * (matmul + attention))


def recompute(arch: Architecture, batch: int, seq: int) -> float:
    """What non-reentrant checkpointing of every decoder layer runs again in the backward
    (see the module docstring for why fc2 is skipped in a pre-LN layer)."""
    per_token = 2 * layer_weights(arch) + 4 * arch.d_model * seq
    if arch.pre_ln:
        per_token -= 2 * arch.d_model * arch.ffn_dim  # fc2
    return float(batch * seq * arch.n_layers * per_token)


def prefill(arch: Architecture, batch: int, prompt: int, project_all: bool = False) -> StepFlops:
    """The prompt into an empty cache, logits of the last position only. ``project_all``:
    the engine applies opt-350m's output projection to every prompt position before
    keeping the last (transformers does; the native engine slices first)."""
    model = forward(arch, batch, prompt, prompt, head=1)
    return StepFlops(model, forward(arch, batch, prompt, prompt, head=1, project_out=prompt if project_all else 1))


def decode(
    arch: Architecture, batch: int, prompt: int, new: int, attends_buffer: bool = False, project_all: bool = False
) -> StepFlops:
    """A prefill, then new - 1 single-token steps. The model needs the step at position p
    to score p + 1 keys; with ``attends_buffer`` every step scores all prompt + new slots
    of the static cache."""
    first = prefill(arch, batch, prompt, project_all)
    model, hardware = first.model, first.hardware
    buffer = prompt + new
    for i in range(1, new):
        model += forward(arch, batch, 1, prompt + i, head=1)
        hardware += forward(arch, batch, 1, buffer if attends_buffer else prompt + i, head=1)
    return StepFlops(model, hardware)


def train(arch: Architecture, batch: int, seq: int, recompute_layers: bool = False) -> StepFlops:
    """Forward (logits for every position), backward at twice the forward, and with
    activation checkpointing what PyTorch recomputes."""
    model = 3.0 * forward(arch, batch, seq, seq, head=seq)
    return StepFlops(model, model + (recompute(arch, batch, seq) if recompute_layers else 0.0))


# ---- whole training jobs ------------------------------------------------------------


@dataclass(frozen=True)
class JobFlops:
    """A whole training job: model FLOPs (MFU), hardware FLOPs (HFU) and how each was counted."""

    model: float
    hardware: float
    model_rule: str
    hardware_rule: str


def job_from_architecture(arch: Architecture, tokens: float, seq: int, recompute_layers: bool) -> JobFlops:
    """D tokens in sequences of ``seq``: per token 3 forwards of every matmul weight
    (layers, projections, tied LM head) plus 12 L d s of attention; with recomputation,
    one more forward of every layer (Megatron-LM's count)."""
    d, L = arch.d_model, arch.n_layers
    steps = tokens / seq  # sequences; fractional is fine, FLOPs are linear in tokens
    model = steps * train(arch, 1, seq).model
    extra = tokens * L * (2 * layer_weights(arch) + 4 * d * seq) if recompute_layers else 0.0
    rule = (
        f"3 x (2 x {arch.matmul_params():,} matmul weights + 4 L d s attention) per token, "
        f"L = {L}, d = {d}, s = {seq}: the PaLM/Megatron-LM convention, full attention, no recomputation"
    )
    hw_rule = (
        f"model FLOPs + one more forward of every layer per token (2 x {layer_weights(arch):,} weights "
        "+ 4 d s per layer), as Megatron-LM counts recomputation; the LM head is not recomputed"
        if recompute_layers
        else "the same as model FLOPs: no recomputation"
    )
    return JobFlops(model, model + extra, rule, hw_rule)


def job_from_params(
    params: float, layers: int, d_model: int, seq: int, tokens: float, recompute_layers: bool
) -> JobFlops:
    """PaLM's 6 N + 12 L H Q T per token (H Q = d_model), for a model known only by its
    parameter count N, layers and width; recomputation adds one forward of the layers,
    taken as 12 L d^2 weights (a 4d FFN, as Megatron-LM's formula assumes)."""
    per_token = 6.0 * params + 12.0 * layers * d_model * seq
    extra = tokens * (2.0 * 12 * layers * d_model**2 + 4.0 * layers * d_model * seq) if recompute_layers else 0.0
    rule = (
        f"6 N + 12 L d s per token (PaLM, appendix B), N = {params:,.0f}, L = {layers}, d = {d_model}, "
        f"s = {seq}: full attention, no recomputation"
    )
    hw_rule = (
        "model FLOPs + one more forward of the layers per token (24 L d^2 + 4 L d s, a 4d FFN as in "
        "Megatron-LM); the LM head is not recomputed"
        if recompute_layers
        else "the same as model FLOPs: no recomputation"
    )
    return JobFlops(tokens * per_token, tokens * per_token + extra, rule, hw_rule)


def megatron_iteration(batch: int, seq: int, layers: int, hidden: int, vocab: int, recompute_layers: bool) -> float:
    """Narayanan et al. 2021, appendix: FLOPs of one iteration of B sequences of s tokens,
    96 B s l h^2 (1 + s/(6h) + V/(16 l h)) with activation recomputation (their eq. 3); without
    it, the appendix's terms with one forward fewer: 72 B s l h^2 (1 + s/(6h) + V/(12 l h))."""
    B, s, l, h, V = batch, seq, layers, hidden, vocab
    if recompute_layers:
        return 96.0 * B * s * l * h**2 * (1 + s / (6 * h) + V / (16 * l * h))
    return 72.0 * B * s * l * h**2 * (1 + s / (6 * h) + V / (12 * l * h))


def palm_per_token(params: float, layers: int, heads: int, head_dim: int, seq: int) -> float:
    """Chowdhery et al. 2022 (PaLM), appendix B: 6 N + 12 L H Q T model FLOPs per token."""
    return 6.0 * params + 12.0 * layers * heads * head_dim * seq
