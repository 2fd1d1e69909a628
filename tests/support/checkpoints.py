"""A small valid OPT checkpoint directory (config.json and model.safetensors), for tests
to damage one way at a time."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

CONFIG = {
    "model_type": "opt",
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "hidden_size": 16,
    "ffn_dim": 32,
    "vocab_size": 100,
    "max_position_embeddings": 64,
    "word_embed_proj_dim": 16,
    "do_layer_norm_before": True,
    "activation_function": "relu",
}


def good_state_dict() -> dict[str, torch.Tensor]:
    from carbonbench.opt import build
    from carbonbench.opt.card import Architecture

    arch = Architecture(n_layers=1, n_heads=2, d_model=16, ffn_dim=32, vocab_size=100, max_positions=64)
    model = build(arch, seed=0)
    return {f"model.decoder.{k}": v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def write_checkpoint(directory: Path, state: dict | None = None, config: dict | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config or CONFIG))
    save_file(state if state is not None else good_state_dict(), directory / "model.safetensors")
    return directory
