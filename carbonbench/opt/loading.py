"""Build an OPT model from a card, or load a local Hugging Face checkpoint (torch).

Models are first made on the ``meta`` device, which costs no memory, so that a model
too large for the target is refused before a byte is allocated, and a GPU model is never
staged in host memory.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import psutil
import torch

from carbonbench.errors import CheckpointError, ModelTooLargeError, UserError
from carbonbench.opt.card import Architecture, Card
from carbonbench.opt.checkpoint import arch_from_hf_config, load_into, read_state_dict
from carbonbench.opt.hub import card_for
from carbonbench.opt.model import OPT, init_weights

GB = 1e9


def load(name_or_path: str | Path, device="cpu", dtype: torch.dtype = torch.float32, seed: int = 0) -> OPT:
    """A model from a card name, a card .yaml, a checkpoint directory, or a Hugging Face
    model id (``facebook/opt-1.3b``) already in the local cache (carbonbench.opt.hub).

    A card whose ``checkpoint`` names a directory gets those weights; any other card
    gets random weights drawn with seed.
    """
    path = Path(name_or_path)
    if path.is_dir():  # an existing path wins over a Hugging Face id of the same spelling
        return _from_checkpoint(path, None, path.name, device, dtype)
    return load_card(card_for(name_or_path), device, dtype, seed)


def load_card(card: Card, device="cpu", dtype: torch.dtype = torch.float32, seed: int = 0) -> OPT:
    """The model a card describes: its checkpoint's weights, or random ones drawn with seed."""
    if card.checkpoint:
        return _from_checkpoint(Path(card.checkpoint), card.arch, card.name, device, dtype)
    return build(card.arch, device, dtype, seed, name=card.name)


def build(
    arch: Architecture,
    device="cpu",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    name: str = "model",
) -> OPT:
    """A randomly initialised model; on the meta device it has shapes but no weights."""
    model = _allocate(arch, device, dtype, name)
    if model.device.type != "meta":
        init_weights(model, seed)
    return model


def available_bytes(device: torch.device) -> int:
    """Free memory where the weights would go."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return psutil.virtual_memory().available


def _allocate(arch: Architecture, device, dtype: torch.dtype, name: str) -> OPT:
    """An uninitialised model on device, after checking that its weights fit there.

    The size comes from the architecture's numbers, before any module exists: building
    even on the meta device takes time in proportion to the layers.
    """
    device = target_device(device)
    if device.type != "meta":
        needed, free = arch.param_count() * dtype.itemsize, available_bytes(device)
        if needed > free:
            raise ModelTooLargeError(
                f"{name} needs {needed / GB:.1f} GB of weights in {str(dtype).removeprefix('torch.')}"
                f" but {device} has {free / GB:.1f} GB free"
            )
    with torch.device("meta"):
        model = OPT(arch).to(dtype)
    return model if device.type == "meta" else model.to_empty(device=device)


def target_device(device) -> torch.device:
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device {device} requested but CUDA is not available")
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
    return device


def _from_checkpoint(directory: Path, card_arch: Architecture | None, name: str, device, dtype: torch.dtype) -> OPT:
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: checkpoint directory not found (named by card {name})")
    config = directory / "config.json"
    if not os.path.lexists(config):  # a pipe or a link out is refused when read, not passed over
        raise CheckpointError(f"{directory}: no config.json, so not a Hugging Face checkpoint")
    arch = arch_from_hf_config(config)
    if card_arch is not None and arch != card_arch:
        diffs = [
            f"{f.name} {getattr(card_arch, f.name)} vs {getattr(arch, f.name)}"
            for f in dataclasses.fields(Architecture)
            if getattr(card_arch, f.name) != getattr(arch, f.name)
        ]
        raise CheckpointError(f"{config}: does not match card {name} (card vs config: {', '.join(diffs)})")
    model = _allocate(arch, device, dtype, name)
    load_into(model, read_state_dict(directory), directory)
    return model
