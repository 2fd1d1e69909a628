"""The transformers engine: Hugging Face's OPTForCausalLM, run the way its users run it.

An optional extra (``pip install carbonbench[transformers]``). It is here as the
yardstick: the engine most people measure with. So by default it does what
``model.generate`` does for greedy decoding, step by step:

- prefill: ``model(input_ids, attention_mask, past_key_values=DynamicCache(),
  use_cache=True, logits_to_keep=1)``; the attention mask is all ones when the prompt
  is unpadded, as a tokenizer returns it;
- each decode step: ``model(token, attention_mask=<mask grown by one column>,
  past_key_values=cache, use_cache=True)``: the DynamicCache concatenates keys and
  values at every step;
- training: ``model(input_ids, labels=input_ids).loss``, Hugging Face's own loss.

The step loop leaves out generate's logits processors and stopping checks (one host
sync per token), so it is, if anything, kind to transformers. Attention is
``attn_implementation="sdpa"``, transformers' default. Dropout is off, as in the
native engine, so both do the same arithmetic.

Options: static_cache uses transformers' StaticCache; compile wraps the model in
torch.compile (Hugging Face's recipe pairs it with static_cache); sdpa_backend and
fused_optimizer act as in the native engine. cuda_graphs is native-only.
"""

from __future__ import annotations

import importlib.util
from typing import Optional

import torch
from torch import Tensor, nn

from carbonbench.engines.base import Engine
from carbonbench.errors import ModelTooLargeError, UserError
from carbonbench.opt import available_bytes, target_device

GB = 1e9
MISSING = "engine 'transformers' needs the transformers extra: pip install carbonbench[transformers]"


def require_transformers():
    if importlib.util.find_spec("transformers") is None:
        raise UserError(MISSING)
    try:
        import transformers
    except ImportError as exc:
        raise UserError(
            f"{MISSING} (import failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
        ) from None
    return transformers


def hf_config(arch, **overrides):
    """An OPTConfig describing arch, dropout off, SDPA attention."""
    from transformers import OPTConfig

    config = OPTConfig(
        vocab_size=arch.vocab_size,
        hidden_size=arch.d_model,
        num_hidden_layers=arch.n_layers,
        ffn_dim=arch.ffn_dim,
        num_attention_heads=arch.n_heads,
        max_position_embeddings=arch.max_positions,
        word_embed_proj_dim=arch.word_embed_proj_dim,
        do_layer_norm_before=arch.pre_ln,
        activation_function=arch.activation,
        enable_bias=arch.bias,
        layer_norm_elementwise_affine=arch.layer_norm_affine,
        _remove_final_layer_norm=arch.remove_final_layer_norm,
        pad_token_id=arch.pad_token_id,
        bos_token_id=2,
        eos_token_id=2,
        tie_word_embeddings=arch.tie_word_embeddings,
        **{**NO_DROPOUT, **overrides},
    )
    config._attn_implementation = "sdpa"
    return config


NO_DROPOUT = dict(dropout=0.0, attention_dropout=0.0, layerdrop=0.0)


class HFModel(nn.Module):
    """OPTForCausalLM with what the workloads read: ``arch`` and ``gradient_checkpointing``."""

    def __init__(self, hf: nn.Module, arch):
        super().__init__()
        self.hf = hf
        self.arch = arch

    def forward(self, input_ids: Tensor, attention_mask: Optional[Tensor] = None) -> Tensor:
        return self.hf(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits

    @property
    def gradient_checkpointing(self) -> bool:
        hf = self.hf
        flag = (
            "is_activation_checkpointing"
            if hasattr(type(hf), "is_activation_checkpointing")
            else "is_gradient_checkpointing"
        )
        return bool(getattr(hf, flag, False))

    @gradient_checkpointing.setter
    def gradient_checkpointing(self, on: bool) -> None:
        if on:
            self.hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        elif self.gradient_checkpointing:
            self.hf.gradient_checkpointing_disable()

    @property
    def device(self) -> torch.device:
        return next(self.hf.parameters()).device


class HFCache:
    """Hugging Face's cache for one batch (a DynamicCache per prompt, or one StaticCache
    reset per prompt) and the attention mask that generate would carry along."""

    def __init__(self, model: HFModel, batch: int, max_len: int, static: bool):
        self.model, self.batch, self.max_len, self.static = model, batch, max_len, static
        self.kv = None
        self.attention_mask: Optional[Tensor] = None

    def start(self, input_ids: Tensor, attention_mask: Optional[Tensor]) -> None:
        from transformers import DynamicCache, StaticCache

        config = self.model.hf.config
        if not self.static:
            self.kv = DynamicCache(config=config)
        elif self.kv is None:
            self.kv = StaticCache(config=config, max_cache_len=self.max_len)
        else:
            self.kv.reset()
        self.attention_mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask

    def grow(self) -> Tensor:
        mask = self.attention_mask
        self.attention_mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
        return self.attention_mask


class TransformersEngine(Engine):
    name = "transformers"

    def __init__(self, config, device, notes=None):
        require_transformers()
        super().__init__(config, device, notes)

    def load(self, entry, device, dtype, seed):
        from transformers import OPTForCausalLM

        card = entry.card
        arch = card.architecture
        device = target_device(device)
        needed, free = arch.param_count() * dtype.itemsize, available_bytes(device)
        if needed > free:
            raise ModelTooLargeError(
                f"{card.name} needs {needed / GB:.1f} GB of weights in {str(dtype).removeprefix('torch.')}"
                f" but {device} has {free / GB:.1f} GB free"
            )
        if card.checkpoint:
            from transformers import OPTConfig

            config = OPTConfig.from_pretrained(card.checkpoint, local_files_only=True)
            for key, value in NO_DROPOUT.items():
                setattr(config, key, value)
            hf = OPTForCausalLM.from_pretrained(
                card.checkpoint, config=config, local_files_only=True, dtype=dtype, attn_implementation="sdpa"
            ).to(device)
        else:
            torch.manual_seed(seed)  # random weights, as the native engine draws its own
            with torch.device(device):
                hf = OPTForCausalLM._from_config(hf_config(arch), dtype=dtype)
        model = HFModel(hf, arch)
        if self.config.compile:
            # Hugging Face's recipe: compile the forward, keep the module.
            hf.forward = self.compile_fn(hf.forward)
        return model

    def new_cache(self, model, batch, max_len):
        if max_len > model.arch.max_positions:
            raise UserError(
                f"{max_len} positions (prompt + new tokens) exceed the model's "
                f"max_positions of {model.arch.max_positions}"
            )
        return HFCache(model, batch, max_len, static=self.config.static_cache)

    def prefill(self, model, input_ids, cache, attention_mask=None):
        with self.sdpa(), torch.inference_mode():
            cache.start(input_ids, attention_mask)
            out = model.hf(
                input_ids=input_ids,
                attention_mask=cache.attention_mask,
                past_key_values=cache.kv,
                use_cache=True,
                logits_to_keep=1,
            )
        return out.logits[:, -1]

    def decode_step(self, model, token_ids, cache, pos):
        with self.sdpa(), torch.inference_mode():
            out = model.hf(input_ids=token_ids, attention_mask=cache.grow(), past_key_values=cache.kv, use_cache=True)
        return out.logits[:, -1]

    def train_loss(self, model, input_ids):
        with self.sdpa():
            return model.hf(input_ids=input_ids, labels=input_ids, use_cache=False).loss
