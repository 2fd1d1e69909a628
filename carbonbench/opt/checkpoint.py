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
import json
import os
import pickle
import warnings
import zipfile
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import Tensor, nn

from carbonbench.config import FieldError
from carbonbench.errors import CheckpointError
from carbonbench.opt.card import Architecture
from carbonbench.opt.model import OPT
from carbonbench.reading import MAX_CONFIG, JSONContentError, UnreadableFile, check_regular, parse_json, read_text

# config.json key -> Architecture field
HF_KEYS = {
    "num_hidden_layers": "n_layers",
    "num_attention_heads": "n_heads",
    "hidden_size": "d_model",
    "ffn_dim": "ffn_dim",
    "vocab_size": "vocab_size",
    "max_position_embeddings": "max_positions",
    "word_embed_proj_dim": "word_embed_proj_dim",
}
# config.json switches -> (Architecture field, OPTConfig's default)
HF_SWITCHES = {
    "enable_bias": ("bias", True),
    "layer_norm_elementwise_affine": ("layer_norm_affine", True),
    "_remove_final_layer_norm": ("remove_final_layer_norm", False),
    "tie_word_embeddings": ("tie_word_embeddings", True),
}
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


def arch_from_hf_config(path: str | Path) -> Architecture:
    """The Architecture described by an OPT config.json."""
    path = Path(path)
    config = _read_json(inside(path, path.parent))
    if config.get("model_type", "opt") != "opt":
        raise CheckpointError(f"{path}: model_type is {config['model_type']!r}, not 'opt'")
    fields = {"activation": _activation(path, config.get("activation_function", "relu"))}
    for key, (name, default) in {**HF_SWITCHES, "do_layer_norm_before": ("pre_ln", True)}.items():
        value = config.get(key, default)
        if not isinstance(value, bool):
            raise CheckpointError(f"{path}: {key} = {value!r} must be true or false")
        fields[name] = value
    fields["layer_norm"] = "pre" if fields.pop("pre_ln") else "post"
    pad = config.get("pad_token_id", 1)
    if pad is not None and (isinstance(pad, bool) or not isinstance(pad, int)):
        raise CheckpointError(f"{path}: pad_token_id = {pad!r} must be a token id or null")
    fields["pad_token_id"] = pad
    for key, name in HF_KEYS.items():
        value = config.get(key)
        if value is None and key == "word_embed_proj_dim":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            what = "is missing" if key not in config else f"= {value!r} is not a positive integer"
            raise CheckpointError(f"{path}: {key} {what}")
        fields[name] = value
    try:
        return Architecture(**fields)
    except FieldError as exc:
        key = next((k for k, name in HF_KEYS.items() if name == exc.key), exc.key)
        raise CheckpointError(f"{path}: {key} = {exc.value!r} {exc.why}") from None


def _activation(path: Path, name) -> str:
    """config.json's activation_function, if our model implements it as transformers does."""
    from carbonbench.opt.activations import LEARNED
    from carbonbench.opt.card import ACTIVATIONS

    if name in ACTIVATIONS:
        return name
    if name in LEARNED:
        why = "has learned parameters, which carbonbench's OPT does not implement"
    else:
        why = "is not an activation transformers knows (ACT2FN) either"
    raise CheckpointError(f"{path}: activation_function = {name!r} {why}; supported: {', '.join(ACTIVATIONS)}")


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


def checkpoint_root(directory: Path) -> Path:
    """The directory a checkpoint's files must resolve into: the directory itself, or for
    a snapshot in the Hugging Face cache (models--org--name/snapshots/<commit>), the
    repository folder, whose blobs/ the snapshot's files link to."""
    real = Path(directory).resolve()
    if real.parent.name == "snapshots" and real.parent.parent.name.startswith("models--"):
        return real.parent.parent
    return real


def inside(path: Path, directory: Path) -> Path:
    """path, if it resolves (symlinks followed) inside directory's checkpoint_root; else one line saying so."""
    root = checkpoint_root(directory)
    try:
        real = Path(path).resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop on older Pythons
        raise CheckpointError(f"{path}: cannot resolve ({_one_line(exc)})") from None
    if not real.is_relative_to(root):
        raise CheckpointError(
            f"{path}: resolves to {real}, outside the checkpoint directory {root}; "
            "refused (a checkpoint's files must lie inside it)"
        )
    return Path(path)


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


def _read_json(path: Path) -> dict:
    try:
        data = parse_json(read_text(path, MAX_CONFIG), finite=False)
    except UnreadableFile as exc:
        raise CheckpointError(str(exc)) from None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
    except JSONContentError as exc:
        raise CheckpointError(f"{path}: {exc.why}" + (f" (in {exc.where})" if exc.where else "")) from None
    except RecursionError:
        raise CheckpointError(f"{path}: invalid JSON (nested too deeply)") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


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


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."
