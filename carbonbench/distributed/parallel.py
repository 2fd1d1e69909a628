"""How each point spreads over the ranks, and wrapping the model to match.

Three layouts, chosen per point from the scenario's ``parallel`` section:

- ``fsdp`` (every training point): FSDP2 (``torch.distributed.fsdp.fully_shard``) on
  each decoder layer and on the root, over all ranks. Parameters, gradients and AdamW
  state are sharded; each rank trains on its own ``batch_size`` rows (data parallel),
  so a step's global batch is ``batch_size x world_size``. With a 16-bit scenario dtype,
  parameters are all-gathered in that dtype and gradients reduced in fp32
  (``MixedPrecisionPolicy``). Activation checkpointing is the model's own per-layer
  ``gradient_checkpointing`` (``workloads.train.activation_checkpointing``).
- ``tp`` (inference): Megatron-style tensor parallelism with
  ``torch.distributed.tensor.parallel`` inside groups of ``tp`` consecutive ranks:
  q/k/v and fc1 column-sharded, out_proj and fc2 row-sharded (one all-reduce after
  attention and one after the FFN), each rank holding ``n_heads / tp`` heads and their
  KV cache. Embeddings, norms and the tied LM head stay replicated. The ``world / tp``
  groups are data parallel with each other, each on its own ``batch_size`` rows.
- ``replicate`` (inference that fits on one device): a full copy per rank, each on its
  own ``batch_size`` rows. No communication.

On one process every point is ``single``: the model is not wrapped at all. The native
engine's ``fused_qkv`` applies there only: the models built here keep separate q/k/v
projections (the tp plan shards them by name), and a multi-process job records the
option as dropped (carbonbench.engines.base.effective).

Tokens and FLOPs of a step count every data-parallel replica (``dp`` of them), so
J/token divides the energy of every device by the tokens of every device.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal, Optional, Sequence

import torch
from torch import nn

from carbonbench import plan
from carbonbench.errors import ModelTooLargeError, UserError
from carbonbench.opt import available_bytes, build, load_card
from carbonbench.opt.card import Card
from carbonbench.opt.model import INIT_STD

Mode = Literal["single", "fsdp", "tp", "replicate"]
MEMORY_RESERVE = 0.10  # as carbonbench.plan: CUDA context, fragmentation, workspaces

TP_PLAN_DOC = {
    "self_attn.q_proj": "colwise",
    "self_attn.k_proj": "colwise",
    "self_attn.v_proj": "colwise",
    "self_attn.out_proj": "rowwise",
    "fc1": "colwise",
    "fc2": "rowwise",
}


@dataclass(frozen=True)
class Layout:
    mode: Mode
    dp: int = 1  # data-parallel replicas, each on its own batch_size rows
    tp: int = 1  # ranks per tensor-parallel group
    dp_rank: int = 0  # which replica this rank belongs to
    reason: str = "one process"

    def local_rows(self, tensor: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        """This replica's rows of a global batch of ``dp x batch_size`` rows."""
        if tensor is None or self.dp == 1:
            return tensor
        rows = tensor.shape[0] // self.dp
        return tensor[self.dp_rank * rows : (self.dp_rank + 1) * rows]

    def as_dict(self) -> dict:
        out = {"mode": self.mode, "dp": self.dp, "tp": self.tp, "reason": self.reason}
        if self.mode == "tp":
            out["tp_plan"] = TP_PLAN_DOC
        return out


SINGLE_LAYOUT = Layout("single")


# -- choosing a layout ---------------------------------------------------------------------
def plan_layouts(points: Sequence, parallel, ctx, dtype: torch.dtype, cards: dict[str, Card]) -> dict[str, Layout]:
    """The layout of every point (``cards``: each model label's card), decided on rank 0
    and shared, so all ranks agree."""
    if not ctx.distributed:
        return {p.key: SINGLE_LAYOUT for p in points}
    if ctx.world_size > 1 and parallel.strategy == "none":
        raise UserError(
            f"parallel.strategy is 'none' but {ctx.world_size} processes were launched: "
            "use one process, or strategy auto, fsdp or tp"
        )
    decided = None
    if ctx.rank == 0:
        decided = {p.key: _decide(p, parallel, ctx, dtype, cards[p.model]) for p in points}
    decided = ctx.broadcast(decided)
    for lay in decided.values():
        if isinstance(lay, UserError):
            raise lay
    return {key: dataclasses.replace(lay, dp_rank=ctx.rank // lay.tp) for key, lay in decided.items()}


def _decide(point, parallel, ctx, dtype: torch.dtype, card: Card):
    try:
        return layout_for(point, parallel, ctx.world_size, ctx.local_world_size, card, dtype, _free_bytes(ctx))
    except UserError as exc:
        return exc  # raised on every rank after the broadcast


def layout_for(point, parallel, world: int, local_world: int, card, dtype: torch.dtype, free_bytes: int) -> Layout:
    """The layout of one point for a job of ``world`` ranks, ``local_world`` per node."""
    if world == 1:
        return Layout("single", reason="one process: the model is not wrapped")
    if point.workload == "train":
        return Layout("fsdp", dp=world, reason="training: FSDP2 data parallel over every rank")
    strategy = parallel.strategy
    if strategy == "fsdp":
        return Layout("replicate", dp=world, reason="strategy fsdp: inference replicated, a batch per rank")
    if strategy == "tp":
        # Default: the GPUs of a node (NVLink); across nodes only with one GPU per node.
        tp = parallel.tp_size or (local_world if local_world > 1 else world)
        if tp == 1:
            return Layout("replicate", dp=world, reason="strategy tp with tp_size 1: replicated, a batch per rank")
        return _tp_layout(card, world, tp, f"strategy tp: tensor parallel over {tp} ranks")
    needed = devices_needed(card, dtype, point, free_bytes)
    if needed <= 1 and parallel.tp_size is None:
        return Layout("replicate", dp=world, reason="auto: the model fits on one device, so replicated")
    if parallel.tp_size is not None:
        if parallel.tp_size == 1:
            return Layout("replicate", dp=world, reason="auto with tp_size 1: replicated, a batch per rank")
        return _tp_layout(card, world, parallel.tp_size, f"auto: tp_size {parallel.tp_size} from the scenario")
    candidates = [t for t in range(2, world + 1) if _tp_ok(card, world, t)]
    if not candidates:
        return Layout(
            "replicate",
            dp=world,
            reason=f"auto: needs {needed} devices but no tensor-parallel degree divides "
            f"{world} ranks, {card.arch.n_heads} heads and ffn {card.arch.ffn_dim}",
        )
    # The smallest degree that fits, within a node when possible (TP all-reduces are chatty).
    fitting = [t for t in candidates if t >= needed]
    in_node = [t for t in fitting if t <= local_world]
    tp = (in_node or fitting or [max(candidates)])[0]
    return _tp_layout(
        card, world, tp, f"auto: about {needed} devices' worth of memory needed, so tensor parallel over {tp}"
    )


def _tp_ok(card, world: int, tp: int) -> bool:
    arch = card.arch
    return world % tp == 0 and arch.n_heads % tp == 0 and arch.ffn_dim % tp == 0


def _tp_layout(card, world: int, tp: int, reason: str) -> Layout:
    arch = card.arch
    if world % tp:
        raise UserError(f"parallel.tp_size {tp} does not divide the {world} ranks launched")
    if arch.n_heads % tp or arch.ffn_dim % tp:
        raise UserError(
            f"parallel.tp_size {tp} must divide {card.name}'s {arch.n_heads} attention heads "
            f"and its ffn_dim {arch.ffn_dim}"
        )
    return Layout("tp", dp=world // tp, tp=tp, reason=reason)


def devices_needed(card, dtype: torch.dtype, point, free_bytes: int) -> int:
    """Devices whose free memory holds the point's weights, KV cache and activations."""
    name = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}.get(dtype, "fp32")
    length = point.prompt_tokens + point.new_tokens
    need = (
        plan.weights_bytes(card, name)
        + plan.kv_cache_bytes(card, name, point.batch_size, length)
        + plan.inference_activations_bytes(card, name, point.batch_size, max(point.prompt_tokens, 1))
    )
    usable = max(free_bytes * (1 - MEMORY_RESERVE), 1)
    return max(1, math.ceil(need / usable))


def _free_bytes(ctx) -> int:
    free = available_bytes(ctx.device)
    # Ranks on one host share its memory when they compute on the CPU.
    return free // ctx.local_world_size if ctx.device.type == "cpu" else free


# -- building the model ---------------------------------------------------------------------
def build_model(
    card: Card, layout: Layout, ctx, dtype: torch.dtype, seed: int, param_dtype: Optional[torch.dtype] = None
):
    """The model for a layout on this rank: loaded whole then sharded when its weights fit
    on one device (every rank starts from the same weights), else built on the meta
    device, sharded, and only this rank's shards allocated and randomly initialised."""
    if layout.mode in ("single", "replicate"):
        return load_card(card, device=ctx.device, dtype=dtype, seed=seed)
    whole_fits = ctx.broadcast(card.param_count() * dtype.itemsize <= _free_bytes(ctx) * (1 - MEMORY_RESERVE))
    if whole_fits:
        model = load_card(card, device=ctx.device, dtype=dtype, seed=seed)
        shard(model, layout, ctx, param_dtype)
        return model
    if card.checkpoint:
        raise ModelTooLargeError(
            f"{card.name}: the checkpoint does not fit on one device, and loading a checkpoint "
            "shard by shard is not supported yet (random weights are)"
        )
    return build_sharded(card, layout, ctx, dtype, seed, param_dtype)


def build_sharded(card, layout: Layout, ctx, dtype: torch.dtype, seed: int, param_dtype: Optional[torch.dtype] = None):
    """Meta model -> sharded -> this rank's shards allocated and initialised (OPT init)."""
    model = build(card.arch, device="meta", dtype=dtype, name=card.name)
    shard(model, layout, ctx, param_dtype)
    model.to_empty(device=ctx.device)
    init_sharded(model, seed)
    return model


def shard(model, layout: Layout, ctx, param_dtype: Optional[torch.dtype] = None) -> None:
    if layout.mode == "fsdp":
        apply_fsdp(model, ctx.mesh((ctx.world_size,), ("dp",)), param_dtype)
    elif layout.mode == "tp":
        apply_tp(model, ctx.mesh((layout.dp, layout.tp), ("dp", "tp"))["tp"])
    else:
        raise ValueError(f"nothing to shard for layout {layout.mode}")


def apply_fsdp(model, mesh, param_dtype: Optional[torch.dtype] = None) -> None:
    """FSDP2: one unit per decoder layer, then the root (embeddings, final norm, LM head)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mp = (
        MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
        if param_dtype
        else MixedPrecisionPolicy()
    )
    for layer in model.layers:
        fully_shard(layer, mesh=mesh, mp_policy=mp)
    fully_shard(model, mesh=mesh, mp_policy=mp)


def apply_tp(model, tp_mesh) -> None:
    """Column-shard q/k/v and fc1, row-shard out_proj and fc2, in every decoder layer."""
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    tp = tp_mesh.size()
    arch = model.arch
    if arch.n_heads % tp or arch.ffn_dim % tp:
        raise UserError(f"tensor parallel degree {tp} must divide {arch.n_heads} heads and ffn_dim {arch.ffn_dim}")
    if any(layer.self_attn.fused for layer in model.layers):
        # The plan shards q/k/v by name; a column shard of the fused [3D, D] weight would
        # cut across the q|k|v boundary. build_model never fuses.
        raise ValueError("tensor parallelism needs separate q/k/v projections (a model without fuse_qkv)")
    style = {"colwise": ColwiseParallel, "rowwise": RowwiseParallel}
    tp_plan = {name: style[kind]() for name, kind in TP_PLAN_DOC.items()}
    for layer in model.layers:
        parallelize_module(layer, tp_mesh, tp_plan)
    model.local_heads = arch.n_heads // tp


@torch.no_grad()
def init_sharded(model, seed: int) -> None:
    """OPT's initialisation on (possibly sharded) parameters; DTensor keeps it consistent
    across ranks. The padding row is left as drawn: one row of random weights changes no
    FLOP count and no shape."""
    torch.manual_seed(seed)
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, 0.0, INIT_STD)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.LayerNorm) and module.elementwise_affine:
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
