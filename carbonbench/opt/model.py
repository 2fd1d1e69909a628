"""A native PyTorch OPT decoder, small enough to read in one sitting.

Module and parameter names mirror Hugging Face's ``OPTForCausalLM.model.decoder``, so a
checkpoint loads by stripping a prefix. Numerics follow the Hugging Face implementation:
learned positions offset by 2 and counted over real tokens only (left padding is fine),
ReLU FFN, pre-LN everywhere except the 350m layout, LM head tied to the token embedding
(and the OPTConfig variants other checkpoints use: other activations, no biases, norms
without weights, no final norm, an untied head).
There is no dropout (OPT trained with 0.1): a benchmark's training step stays
deterministic, and dropout's cost is small beside the matmuls.

Inference uses a static KV cache allocated once per batch: a step writes its keys and
values into place and never looks at tensor values from Python, so no step waits on the
device.

Shapes: B batch, T new tokens this call, L keys attended (cached + new), H heads,
D d_model, E word_embed_proj_dim, V vocab.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from carbonbench.errors import UserError
from carbonbench.opt.activations import activation
from carbonbench.opt.card import POSITION_OFFSET, Architecture

PAD_ID = 1  # OPT's padding token, which prompts are padded with (Architecture.pad_token_id is the row without gradient)
INIT_STD = 0.02


class KVCache:
    """Preallocated keys and values for every layer, and which cached slots hold real tokens."""

    def __init__(self, arch: Architecture, batch: int, max_len: int, device, dtype, heads: int | None = None):
        # heads: the heads this process holds (fewer than n_heads under tensor parallelism)
        shape = (arch.n_layers, batch, heads or arch.n_heads, max_len, arch.head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)  # [layers, B, H, max_len, hd]
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.mask = torch.ones(batch, max_len, device=device, dtype=torch.bool)  # False = pad
        # Set from whether a padding mask was ever given, never from its values: without
        # padding, decoding needs no attention mask at all.
        self.padded = False
        self.key_pos = torch.arange(max_len, device=device)  # slot indices, for OPT.step's mask

    @property
    def max_len(self) -> int:
        return self.k.shape[3]

    def layer(self, i: int):
        """Layer i's keys and values, [B, H, max_len, hd] each, written in place."""
        return self.k[i], self.v[i]


class GrowingKVCache(KVCache):
    """Keys and values grown by concatenation at every step, as Hugging Face's DynamicCache
    does: each step copies the whole cache. Kept to measure what the static cache saves
    (engine option ``static_cache: false``); the padding mask stays preallocated.
    """

    def __init__(self, arch: Architecture, batch: int, max_len: int, device, dtype, heads: int | None = None):
        self._max_len = max_len
        self.layers = [_GrowingLayer() for _ in range(arch.n_layers)]
        self.mask = torch.ones(batch, max_len, device=device, dtype=torch.bool)
        self.padded = False
        self.key_pos = torch.arange(max_len, device=device)

    @property
    def max_len(self) -> int:
        return self._max_len

    def layer(self, i: int):
        return self.layers[i]


class _GrowingLayer:
    __slots__ = ("k", "v")

    def __init__(self):
        self.k = self.v = None

    def update(self, k: Tensor, v: Tensor, start_pos: int) -> tuple[Tensor, Tensor]:
        if start_pos == 0:  # a new prompt replaces whatever was cached
            self.k, self.v = k, v
        else:
            if self.k is None or self.k.shape[2] != start_pos:
                raise ValueError(
                    f"growing cache holds {0 if self.k is None else self.k.shape[2]} positions, not {start_pos}"
                )
            self.k, self.v = torch.cat([self.k, k], dim=2), torch.cat([self.v, v], dim=2)
        return self.k, self.v


class Attention(nn.Module):
    def __init__(self, arch: Architecture):
        super().__init__()
        d, bias = arch.d_model, arch.bias
        self.n_heads, self.head_dim = arch.n_heads, arch.head_dim
        self.q_proj = nn.Linear(d, d, bias=bias)
        self.k_proj = nn.Linear(d, d, bias=bias)
        self.v_proj = nn.Linear(d, d, bias=bias)
        self.out_proj = nn.Linear(d, d, bias=bias)
        self.fused = False  # True once fuse_qkv has replaced q/k/v_proj by qkv_proj

    @torch.no_grad()
    def fuse_qkv(self) -> None:
        """Replace q_proj, k_proj and v_proj by one qkv_proj holding their weights stacked
        [3 x width, D]: one matmul instead of three. Idempotent."""
        if self.fused:
            return
        projs = (self.q_proj, self.k_proj, self.v_proj)
        weight = torch.cat([p.weight for p in projs])  # [3 x width, D], same device and dtype
        has_bias = self.q_proj.bias is not None
        qkv = nn.Linear(weight.shape[1], weight.shape[0], bias=has_bias, device="meta")  # no init: replaced next
        qkv.weight = nn.Parameter(weight, requires_grad=self.q_proj.weight.requires_grad)
        if has_bias:
            bias = torch.cat([p.bias for p in projs])
            qkv.bias = nn.Parameter(bias, requires_grad=self.q_proj.bias.requires_grad)
        del self.q_proj, self.k_proj, self.v_proj
        self.qkv_proj, self.fused = qkv, True

    def forward(self, x: Tensor, mask: Tensor | None, cache_kv, start_pos: int) -> Tensor:
        B, T, D = x.shape
        if self.fused:
            qkv = self.qkv_proj(x).chunk(3, dim=-1)  # 3 x [B, T, width], views of one matmul
        else:
            qkv = (self.q_proj(x), self.k_proj(x), self.v_proj(x))
        # [B, T, width] -> [B, H, T, hd]. H is read from the width: all heads, or under
        # tensor parallelism only this rank's n_heads / tp (q, k, v column-sharded).
        q, k, v = (t.view(B, T, -1, self.head_dim).transpose(1, 2) for t in qkv)
        if cache_kv is not None:
            k, v = _update_cache(cache_kv, k, v, start_pos)  # [B, H, L, hd]
        # The causal fast path is only right when queries and keys start at the same position.
        is_causal = mask is None and start_pos == 0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)
        return self.out_proj(y.transpose(1, 2).reshape(B, T, -1))  # out_proj sums the rank shards


def _update_cache(cache_kv, k: Tensor, v: Tensor, start_pos) -> tuple[Tensor, Tensor]:
    """Store this call's keys and values [B, H, T, hd]; return the keys and values to attend.

    start_pos is an int (attend to the slots [0, start_pos + T)) or, in OPT.step, a
    one-element tensor: then every shape is fixed and all max_len slots are returned, the
    caller's mask hiding the slots not yet written.
    """
    if not isinstance(cache_kv, tuple):
        return cache_kv.update(k, v, start_pos)  # a GrowingKVCache layer
    k_cache, v_cache = cache_kv  # [B, H, max_len, hd]
    if isinstance(start_pos, Tensor):
        k_cache.index_copy_(2, start_pos, k)
        v_cache.index_copy_(2, start_pos, v)
        return k_cache, v_cache
    end = start_pos + k.shape[2]
    k_cache[:, :, start_pos:end] = k
    v_cache[:, :, start_pos:end] = v
    return k_cache[:, :, :end], v_cache[:, :, :end]


class DecoderLayer(nn.Module):
    def __init__(self, arch: Architecture):
        super().__init__()
        self.pre_ln = arch.pre_ln
        self.act = activation(arch.activation)
        affine = arch.layer_norm_affine
        self.self_attn = Attention(arch)
        self.self_attn_layer_norm = nn.LayerNorm(arch.d_model, elementwise_affine=affine)
        self.fc1 = nn.Linear(arch.d_model, arch.ffn_dim, bias=arch.bias)
        self.fc2 = nn.Linear(arch.ffn_dim, arch.d_model, bias=arch.bias)
        self.final_layer_norm = nn.LayerNorm(arch.d_model, elementwise_affine=affine)

    def forward(self, x: Tensor, mask: Tensor | None, cache_kv, start_pos: int) -> Tensor:
        if self.pre_ln:
            x = x + self.self_attn(self.self_attn_layer_norm(x), mask, cache_kv, start_pos)
            return x + self.fc2(self.act(self.fc1(self.final_layer_norm(x))))
        # opt-350m: normalise after each residual add.
        x = self.self_attn_layer_norm(x + self.self_attn(x, mask, cache_kv, start_pos))
        return self.final_layer_norm(x + self.fc2(self.act(self.fc1(x))))


class OPT(nn.Module):
    def __init__(self, arch: Architecture):
        super().__init__()
        self.arch = arch
        d, e = arch.d_model, arch.word_embed_proj_dim
        self.embed_tokens = nn.Embedding(arch.vocab_size, e, padding_idx=arch.pad_token_id)
        self.embed_positions = nn.Embedding(arch.max_positions + POSITION_OFFSET, d)
        if arch.projects_embeddings:
            self.project_in = nn.Linear(e, d, bias=False)
            self.project_out = nn.Linear(d, e, bias=False)
        self.layers = nn.ModuleList(DecoderLayer(arch) for _ in range(arch.n_layers))
        if arch.final_norm:
            self.final_layer_norm = nn.LayerNorm(d, elementwise_affine=arch.layer_norm_affine)
        if not arch.tie_word_embeddings:
            self.lm_head = nn.Linear(e, arch.vocab_size, bias=False)
        # Recompute each layer's activations in backward instead of storing them.
        self.gradient_checkpointing = False
        # Attention heads held by this process: n_heads / tp under tensor parallelism
        # (set by carbonbench.distributed.parallel); sizes the KV cache.
        self.local_heads = arch.n_heads

    def fuse_qkv(self) -> "OPT":
        """Compute each layer's q, k and v with one matmul (engine option ``fused_qkv``).

        Done after loading: the model as built keeps Hugging Face's names, so checkpoints
        load into it (a fused model's state_dict has qkv_proj instead). Not on a sharded
        model: a column shard of the fused weight would cut across the q|k|v boundary,
        and FSDP2 holds the old parameters.
        """
        sharded = any(hasattr(p, "placements") for p in self.parameters())  # DTensors
        if sharded or self.local_heads != self.arch.n_heads:
            raise ValueError("fuse_qkv needs an unsharded model (not tensor parallel or FSDP2)")
        for layer in self.layers:
            layer.self_attn.fuse_qkv()
        return self

    @property
    def device(self) -> torch.device:
        return self.embed_tokens.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.embed_tokens.weight.dtype

    def new_cache(self, batch: int, max_len: int, growing: bool = False) -> KVCache:
        """A KV cache for batch rows of up to max_len positions: preallocated, or grown
        by concatenation at each step when growing (to measure what preallocation saves)."""
        if max_len > self.arch.max_positions:
            raise UserError(
                f"{max_len} positions (prompt + new tokens) exceed the model's "
                f"max_positions of {self.arch.max_positions}"
            )
        kind = GrowingKVCache if growing else KVCache
        return kind(self.arch, batch, max_len, self.device, self.dtype, heads=self.local_heads)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        cache: KVCache | None = None,
        start_pos: int = 0,
        last_only: bool = False,
    ) -> Tensor:
        """Logits [B, T, V] for input_ids [B, T] at positions [start_pos, start_pos + T).

        attention_mask [B, T] marks real tokens with 1 and padding with 0. With a cache,
        the keys of earlier calls are attended too and this call's keys are stored.
        last_only gives [B, 1, V]: generation needs only the last position, and the LM
        head over a whole prompt costs as much as several layers.
        """
        T = input_ids.shape[1]
        end = start_pos + T
        key_mask = attention_mask.bool() if attention_mask is not None else None  # [B, L]
        if cache is not None:
            cache.padded = (cache.padded and start_pos > 0) or key_mask is not None
            cache.mask[:, start_pos:end] = True if key_mask is None else key_mask
            key_mask = cache.mask[:, :end] if cache.padded else None
        elif start_pos:
            raise ValueError("start_pos needs a cache")

        x = self.embed_tokens(input_ids)  # [B, T, E]
        if self.arch.projects_embeddings:
            x = self.project_in(x)  # [B, T, D]
        x = x + self.embed_positions(_positions(key_mask, start_pos, end, x.device))

        mask = _attention_mask(key_mask, start_pos, T, x.device)
        checkpointing = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for i, layer in enumerate(self.layers):
            cache_kv = cache.layer(i) if cache is not None else None
            if checkpointing:
                x = checkpoint(layer, x, mask, cache_kv, start_pos, use_reentrant=False)
            else:
                x = layer(x, mask, cache_kv, start_pos)

        if last_only:
            x = x[:, -1:]
        return self._head(x)

    def step(self, token_ids: Tensor, cache: KVCache, pos: Tensor) -> Tensor:
        """Logits [B, V] for one token per row [B, 1] at position pos, a one-element long
        tensor on the model's device; the same numbers as ``decode_step``.

        Every shape here is fixed by the cache and pos is data, not a Python int, so one
        compiled graph, or one captured CUDA graph, serves every decode step. The price:
        attention reads all max_len cached slots, masked, instead of the filled ones.
        """
        pos = pos.reshape(1)
        cache.mask.index_fill_(1, pos, True)  # the new token is real
        seen = cache.mask & (cache.key_pos <= pos)  # [B, max_len]: real tokens up to pos
        # A token's position counts the real tokens up to it (left padding starts at 0).
        positions = seen.sum(1, keepdim=True) - 1 + POSITION_OFFSET  # [B, 1]
        x = self.embed_tokens(token_ids)  # [B, 1, E]
        if self.arch.projects_embeddings:
            x = self.project_in(x)
        x = x + self.embed_positions(positions)
        mask = seen[:, None, None, :]  # [B, 1, 1, max_len]
        for i, layer in enumerate(self.layers):
            x = layer(x, mask, cache.layer(i), pos)
        return self._head(x)[:, -1]

    def _head(self, x: Tensor) -> Tensor:
        if self.arch.final_norm:
            x = self.final_layer_norm(x)
        if self.arch.projects_embeddings:
            x = self.project_out(x)  # [B, T, E]
        if not self.arch.tie_word_embeddings:
            return self.lm_head(x)  # [B, T, V]
        return F.linear(x, self.embed_tokens.weight)  # tied LM head: [B, T, V]


def _positions(key_mask: Tensor | None, start_pos: int, end: int, device) -> Tensor:
    """Position-table rows for the new tokens: [T] without padding, else [B, T].

    As in HF: a real token's position counts the real tokens up to it, so left-padded
    rows start at 0; pad tokens get -1. Both are shifted by OPT's offset of 2.
    """
    if key_mask is None:
        return torch.arange(start_pos + POSITION_OFFSET, end + POSITION_OFFSET, device=device)
    real = key_mask.long()  # [B, L]
    return (real.cumsum(1) * real - 1 + POSITION_OFFSET)[:, start_pos:]


def _attention_mask(key_mask: Tensor | None, start_pos: int, T: int, device) -> Tensor | None:
    """Boolean mask [B, 1, T, L] (True = attend), or None when SDPA needs none.

    None means causal from position 0 (SDPA's fast path) or, for a single new token
    after an unpadded cache, "attend to everything".
    """
    if key_mask is None and (start_pos == 0 or T == 1):
        return None
    L = start_pos + T
    query_pos = torch.arange(start_pos, L, device=device)[:, None]  # [T, 1]
    key_pos = torch.arange(L, device=device)[None, :]  # [1, L]
    mask = (key_pos <= query_pos)[None, None]  # [1, 1, T, L]
    if key_mask is not None:
        # A pad query may attend to itself, so that no row is fully masked: for such a
        # row torch < 2.5 and some kernels return NaN, which would leak into real rows.
        mask = mask & (key_mask[:, None, None, :] | (key_pos == query_pos))
    return mask


@torch.inference_mode()
def prefill(model: OPT, input_ids: Tensor, cache: KVCache, attention_mask: Tensor | None = None) -> Tensor:
    """Run the prompt [B, S] into an empty cache; logits of its last position [B, V]."""
    return model(input_ids, attention_mask, cache=cache, start_pos=0, last_only=True)[:, -1]


@torch.inference_mode()
def decode_step(model: OPT, token_ids: Tensor, cache: KVCache, pos: int) -> Tensor:
    """Feed one token per row [B, 1] at position pos; logits [B, V] for the next one."""
    return model(token_ids, cache=cache, start_pos=pos)[:, -1]


@torch.inference_mode()
def generate(model: OPT, input_ids: Tensor, max_new_tokens: int, attention_mask: Tensor | None = None) -> Tensor:
    """Greedy continuation [B, max_new_tokens]; never stops early, so the count is fixed."""
    B, S = input_ids.shape
    cache = model.new_cache(B, S + max_new_tokens)
    out = torch.empty(B, max_new_tokens, dtype=torch.long, device=input_ids.device)
    if max_new_tokens == 0:
        return out
    out[:, 0] = prefill(model, input_ids, cache, attention_mask).argmax(-1)
    for i in range(1, max_new_tokens):
        out[:, i] = decode_step(model, out[:, i - 1 : i], cache, S + i - 1).argmax(-1)
    return out


def loss_fn(logits: Tensor, input_ids: Tensor) -> Tensor:
    """Mean next-token cross-entropy, reduced in float32 whatever the model's dtype."""
    V = logits.shape[-1]
    return F.cross_entropy(logits[:, :-1].reshape(-1, V).float(), input_ids[:, 1:].reshape(-1))


@torch.no_grad()
def init_weights(model: OPT, seed: int) -> None:
    """OPT/HF initialisation, reproducible for a given seed and device."""
    gen = torch.Generator(device=model.device).manual_seed(seed)
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.normal_(0.0, INIT_STD, generator=gen)
        if isinstance(module, nn.Linear) and module.bias is not None:
            module.bias.zero_()
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            module.weight[module.padding_idx].zero_()
        if isinstance(module, nn.LayerNorm) and module.elementwise_affine:
            module.weight.fill_(1.0)
            module.bias.zero_()
