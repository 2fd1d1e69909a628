"""Read a local Hugging Face-format OPT checkpoint directory. Never touches the network.

Weights come from safetensors when there are any, else from pytorch_model.bin files
loaded with ``weights_only=True`` (no arbitrary pickles). Every problem becomes one
CheckpointError line that names the file or the directory.

Nothing outside the checkpoint directory is read: every file (config.json, the shard
index and each shard it names, the weights, the tokenizer) must resolve, symlinks
followed, inside it, and be a regular file. A snapshot in the Hugging Face cache may
link into its own repository's blobs/, as huggingface_hub lays it out.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import warnings
import zipfile
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import Tensor, nn

from carbonbench.errors import CheckpointError
from carbonbench.opt.card import Architecture
from carbonbench.opt.hf_config import _one_line, _read_json, arch_from_hf_config, inside
from carbonbench.opt.model import OPT
from carbonbench.reading import UnreadableFile, check_regular

# In order of preference: safetensors first, single files before sharded ones.
WEIGHT_FILES = [
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
]
PREFIXES = ("model.decoder.", "decoder.")
TIED_HEAD = "lm_head.weight"
LISTED = 8  # names shown per kind of problem; the rest are counted


def read_state_dict(directory: str | Path, *, lazy: bool = False) -> dict[str, Tensor]:
    """All tensors of the checkpoint in directory, on the CPU, under their stored names.

    With ``lazy``, the names and shapes only (meta tensors from safetensors headers, or
    memory-mapped .bin files): every file is opened and checked, no weight is read.
    """
    directory = Path(directory)
    for name in WEIGHT_FILES:
        path = directory / name
        if os.path.lexists(path):  # a pipe or a dangling link is refused, not passed over
            if name.endswith(".index.json"):
                return _read_sharded(path, lazy)
            return _read_weights(inside(path, directory), lazy)
    raise CheckpointError(f"{directory}: no weights found (looked for {', '.join(WEIGHT_FILES)})")


def load_into(model: nn.Module, state_dict: dict[str, Tensor], source: str | Path) -> None:
    """Copy a Hugging Face OPT state dict into model, cast to the model's dtype.

    Checks everything before copying anything, and reports every missing, unexpected
    or misshapen tensor in one error.
    """
    expected = model.state_dict()
    tensors = check_tensors({name: t.shape for name, t in expected.items()}, state_dict, source)
    with torch.no_grad():
        for name, tensor in tensors.items():
            expected[name].copy_(tensor)


def check_tensors(
    expected: dict[str, torch.Size], state_dict: dict[str, Tensor], source: str | Path
) -> dict[str, Tensor]:
    """state_dict under the model's names, if it has exactly the expected tensors and shapes."""
    tensors, misshapen = {}, []
    for key, tensor in state_dict.items():
        name = _strip_prefix(key)
        if name == TIED_HEAD and TIED_HEAD not in expected:
            # The LM head is the token embedding: a matching copy carries no information.
            want = expected["embed_tokens.weight"]
            if tensor.shape != want:
                misshapen.append(f"{name} {tuple(tensor.shape)} expected {tuple(want)}")
            continue
        tensors[name] = tensor
        if name in expected and tensor.shape != expected[name]:
            misshapen.append(f"{name} {tuple(tensor.shape)} expected {tuple(expected[name])}")
    problems = [
        _listing("missing tensors", [n for n in expected if n not in tensors]),
        _listing("unexpected", [n for n in tensors if n not in expected]),
        _listing("misshapen", misshapen),
    ]
    problems = [p for p in problems if p]
    if problems:
        raise CheckpointError(f"{source}: " + "; ".join(problems))
    return tensors


def expected_shapes(arch: Architecture) -> dict[str, torch.Size]:
    """Every tensor name and shape the model of arch has, without building its layers.

    One layer is built on the meta device and its names repeated for every layer: a
    whole model, even on the meta device, costs time in proportion to its layers.
    """
    with torch.device("meta"):
        one = list(OPT(dataclasses.replace(arch, n_layers=1)).state_dict().items())
    layer = [(name.removeprefix("layers.0."), t.shape) for name, t in one if name.startswith("layers.0.")]
    shapes: dict[str, torch.Size] = {}
    for name, tensor in one:  # in the model's own order, every layer where the first one was
        if not name.startswith("layers."):
            shapes[name] = tensor.shape
        elif name == f"layers.0.{layer[0][0]}":
            for i in range(arch.n_layers):
                shapes.update({f"layers.{i}.{rest}": shape for rest, shape in layer})
    return shapes


def _strip_prefix(key: str) -> str:
    for prefix in PREFIXES:
        if key.startswith(prefix):
            return key[len(prefix) :]
    return key


def _listing(kind: str, names: list[str]) -> str:
    if not names:
        return ""
    more = f" and {len(names) - LISTED} more" if len(names) > LISTED else ""
    return f"{kind}: {', '.join(names[:LISTED])}{more}"


def _read_sharded(index_path: Path, lazy: bool = False) -> dict[str, Tensor]:
    directory = index_path.parent
    weight_map = _read_json(inside(index_path, directory)).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{index_path}: no weight_map")
    for tensor, shard in weight_map.items():
        if not isinstance(shard, str) or not shard.strip():
            raise CheckpointError(f"{index_path}: weight_map[{tensor!r}] = {_shown(shard)} must be a file name")
    tensors = {}
    for shard in sorted(set(weight_map.values())):
        try:
            # An absolute name replaces the directory when joined: inside() refuses it like '../x'.
            tensors.update(_read_weights(inside(directory / shard, directory), lazy))
        except CheckpointError as exc:
            raise CheckpointError(f"{index_path}: shard {_shown(shard)}: {exc}") from None
    absent = [name for name in weight_map if name not in tensors]
    if absent:
        raise CheckpointError(f"{index_path}: {_listing('listed but not in any shard', absent)}")
    return tensors


def _read_weights(path: Path, lazy: bool = False) -> dict[str, Tensor]:
    try:
        check_regular(path)  # a pipe would block safetensors' open, /dev/zero never end
    except UnreadableFile as exc:
        raise CheckpointError(str(exc)) from None
    try:
        if path.suffix == ".safetensors":
            tensors = _safetensors_shapes(path) if lazy else load_file(path, device="cpu")
        else:
            with warnings.catch_warnings():
                # torch warns about the pickle (its protocol, its globals) before refusing
                # it; the refusal below says all there is to say, in one line.
                warnings.simplefilter("ignore")
                if lazy and zipfile.is_zipfile(path):  # legacy (non-zip) .bin files cannot be mapped
                    tensors = torch.load(path, weights_only=True, mmap=True, map_location="cpu")
                else:
                    tensors = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError:
        # Corrupt, or holds more than tensors. Not torch's message: it advises weights_only=False.
        raise CheckpointError(
            f"{path}: unreadable weights file (torch.load with weights_only=True refused it: "
            "corrupt, or not a plain file of tensors)"
        ) from None
    except (OSError, RuntimeError, ValueError, EOFError, SafetensorError) as exc:
        raise CheckpointError(f"{path}: unreadable weights file ({_one_line(exc)})") from None
    if not isinstance(tensors, dict) or not all(isinstance(t, Tensor) for t in tensors.values()):
        raise CheckpointError(f"{path}: not a flat dictionary of tensors")
    return tensors


def _safetensors_shapes(path: Path) -> dict[str, Tensor]:
    """Meta tensors with the stored shapes; safe_open checks the header covers the file."""
    with safe_open(path, framework="pt") as f:
        return {k: torch.empty(f.get_slice(k).get_shape(), device="meta") for k in f.keys()}


def check_checkpoint(directory: str | Path, card_arch: Architecture | None = None, name: str = "") -> None:
    """Raise the CheckpointError that loading directory would raise, without reading weights.

    The runner calls this for every checkpoint before it writes anything, so a broken
    checkpoint is one error line and leaves no partial result file behind.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(
            f"{directory}: checkpoint directory not found" + (f" (named by card {name})" if name else "")
        )
    config = directory / "config.json"
    if not os.path.lexists(config):
        raise CheckpointError(f"{directory}: no config.json, so not a Hugging Face checkpoint")
    arch = arch_from_hf_config(config)
    if card_arch is not None and arch != card_arch:
        diffs = [f"{k} {v} vs {getattr(arch, k)}" for k, v in vars(card_arch).items() if getattr(arch, k) != v]
        raise CheckpointError(f"{config}: does not match card {name} (card vs config: {', '.join(diffs)})")
    check_tensors(expected_shapes(arch), read_state_dict(directory, lazy=True), directory)


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
