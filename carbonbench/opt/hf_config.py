"""An OPT config.json read into an Architecture, and the checkpoint directory's bounds.

No torch here: ``plan`` and ``estimate`` size a Hugging Face checkpoint from its
config.json alone (carbonbench.opt.checkpoint reads the weights).
"""

from __future__ import annotations

import json
from pathlib import Path

from carbonbench.config import FieldError
from carbonbench.errors import CheckpointError
from carbonbench.opt.card import ACTIVATIONS, LEARNED_ACTIVATIONS, Architecture
from carbonbench.reading import MAX_CONFIG, JSONContentError, UnreadableFile, parse_json, read_text

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
    if name in ACTIVATIONS:
        return name
    if name in LEARNED_ACTIVATIONS:
        why = "has learned parameters, which carbonbench's OPT does not implement"
    else:
        why = "is not an activation transformers knows (ACT2FN) either"
    raise CheckpointError(f"{path}: activation_function = {name!r} {why}; supported: {', '.join(ACTIVATIONS)}")


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


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."
