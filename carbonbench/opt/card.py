"""Model cards: one YAML per OPT size, with the architecture and the published facts.

Parameter counts are computed from the architecture, exactly as the Hugging Face OPT
implementation lays the tensors out (tests check this against transformers).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Literal, Optional

from carbonbench.config import FieldError, build, check_bounds, closest, positive, read_yaml
from carbonbench.errors import ConfigError

SHIPPED_CARDS = "carbonbench.model"  # the package that pyproject.toml maps model/ to
POSITION_OFFSET = 2  # OPT's learned position table has 2 extra rows in front

# The FFN activations of transformers' ACT2FN that have no learned parameters, by the
# names config.json uses (carbonbench.opt.activations implements each). OPT uses relu.
ACTIVATIONS = (
    "relu",
    "gelu",
    "gelu_10",
    "gelu_accurate",
    "gelu_fast",
    "gelu_new",
    "gelu_python",
    "gelu_python_tanh",
    "gelu_pytorch_tanh",
    "hardswish",
    "laplace",
    "leaky_relu",
    "linear",
    "mish",
    "quick_gelu",
    "relu2",
    "relu6",
    "sigmoid",
    "silu",
    "sqrtsoftplus",
    "swish",
    "tanh",
)
ActivationName = Literal[ACTIVATIONS]
# In ACT2FN but with learned parameters: transformers accepts them, carbonbench does not.
LEARNED_ACTIVATIONS = ("prelu", "xielu")

# Ceilings on an architecture, each far above any published model (OPT-175B: 96 layers,
# d_model 12288; the largest vocabularies are near 2^18), so that a card or config.json
# of 10^8 layers is refused from its numbers, not after minutes spent building it.
MAX_LAYERS = 4096
MAX_HEADS = 1 << 16
MAX_WIDTH = 1 << 20  # d_model and word_embed_proj_dim
MAX_FFN = 1 << 22
MAX_VOCAB = 1 << 24
MAX_POSITIONS = 1 << 24  # also the longest prompt, generation or training sequence a scenario may ask for


@dataclass(frozen=True)
class Architecture:
    n_layers: int = field(metadata=positive(max=MAX_LAYERS))
    n_heads: int = field(metadata=positive(max=MAX_HEADS))
    d_model: int = field(metadata=positive(max=MAX_WIDTH))
    ffn_dim: int = field(metadata=positive(max=MAX_FFN))
    vocab_size: int = field(default=50272, metadata=positive(max=MAX_VOCAB))
    max_positions: int = field(default=2048, metadata=positive(max=MAX_POSITIONS))
    word_embed_proj_dim: Optional[int] = field(default=None, metadata=positive(max=MAX_WIDTH))
    activation: ActivationName = "relu"
    layer_norm: Literal["pre", "post"] = "pre"
    # The rest mirror OPTConfig settings that the published checkpoints leave at these
    # defaults but that other OPT-architecture checkpoints change.
    bias: bool = True  # biases in the attention and FFN linears (enable_bias)
    layer_norm_affine: bool = True  # layer norms with weight and bias (layer_norm_elementwise_affine)
    remove_final_layer_norm: bool = False  # pre-LN without the last norm (_remove_final_layer_norm)
    tie_word_embeddings: bool = True  # LM head shares the token embedding, else its own matrix
    pad_token_id: Optional[int] = 1  # the embedding row that gets no gradient; None for none

    def __post_init__(self):
        check_bounds(self)  # also when built from a checkpoint's config.json, not through config.build
        if self.d_model % self.n_heads:
            raise FieldError("n_heads", self.n_heads, f"must divide d_model ({self.d_model})")
        if self.word_embed_proj_dim is None:
            object.__setattr__(self, "word_embed_proj_dim", self.d_model)
        if self.pad_token_id is not None and not -self.vocab_size <= self.pad_token_id < self.vocab_size:
            raise FieldError(
                "pad_token_id", self.pad_token_id, f"must be a token id below vocab_size ({self.vocab_size})"
            )

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def pre_ln(self) -> bool:
        return self.layer_norm == "pre"

    @property
    def projects_embeddings(self) -> bool:
        return self.word_embed_proj_dim != self.d_model

    @property
    def final_norm(self) -> bool:
        """A layer norm before the LM head: pre-LN only (post-LN OPT, 350m, has none)."""
        return self.pre_ln and not self.remove_final_layer_norm

    def layer_params(self) -> int:
        d, f = self.d_model, self.ffn_dim
        attention = 4 * d * d + (4 * d if self.bias else 0)
        ffn = 2 * d * f + (f + d if self.bias else 0)
        norms = 2 * 2 * d if self.layer_norm_affine else 0
        return attention + ffn + norms

    def param_count(self) -> int:
        """Exact number of parameters (a tied LM head is the embedding, so counted once)."""
        d, e = self.d_model, self.word_embed_proj_dim
        total = self.vocab_size * e + (self.max_positions + POSITION_OFFSET) * d
        if self.projects_embeddings:
            total += 2 * d * e  # project_in and project_out, no bias
        if self.final_norm and self.layer_norm_affine:
            total += 2 * d
        if not self.tie_word_embeddings:
            total += self.vocab_size * e
        return total + self.n_layers * self.layer_params()

    def matmul_params(self) -> int:
        """Weights that take part in a matmul per token: layers, projections, LM head.

        Embedding lookups are not matmuls, so they are left out; the tied LM head is in.
        This is the N in the 2N FLOPs-per-token rule.
        """
        d, f, e = self.d_model, self.ffn_dim, self.word_embed_proj_dim
        per_layer = 4 * d * d + 2 * d * f
        head = self.vocab_size * e
        proj = 2 * d * e if self.projects_embeddings else 0
        return self.n_layers * per_layer + head + proj


@dataclass(frozen=True)
class Published:
    """Published facts about how the checkpoint was trained. None where not published."""

    training_tokens: Optional[float] = field(default=None, metadata=positive())
    batch_tokens: Optional[int] = field(default=None, metadata=positive())
    peak_lr: Optional[float] = field(default=None, metadata=positive())
    hardware: Optional[str] = None
    devices: Optional[int] = field(default=None, metadata=positive())
    achieved_tflops_per_device: Optional[float] = field(default=None, metadata=positive())
    emissions_tco2e: Optional[float] = field(default=None, metadata=positive())
    sources: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Card:
    name: str
    architecture: Architecture
    description: str = ""
    published: Published = field(default_factory=Published)
    checkpoint: Optional[str] = None  # a local Hugging Face-format directory
    path: Optional[str] = field(default=None, compare=False)  # where the card was read from

    @property
    def arch(self) -> Architecture:
        return self.architecture

    def param_count(self) -> int:
        return self.architecture.param_count()


def card_dirs() -> list[Path]:
    """Where card names are looked up, first match wins.

    $CARBONBENCH_MODEL_DIR (os.pathsep-separated), ./model, then the cards shipped with
    carbonbench (the repository's model/, installed as the package carbonbench.model).
    """
    dirs = [Path(p) for p in os.environ.get("CARBONBENCH_MODEL_DIR", "").split(os.pathsep) if p]
    dirs.append(Path.cwd() / "model")
    shipped = shipped_cards_dir()
    if shipped is not None:
        dirs.append(shipped)
    seen, unique = set(), []
    for d in dirs:
        key = d.resolve() if d.exists() else d
        if key not in seen and d.is_dir():
            seen.add(key)
            unique.append(d)
    return unique


def shipped_cards_dir() -> Optional[Path]:
    """The installed model/ folder, wherever the install put it (None if it is missing)."""
    try:
        found = resources.files(SHIPPED_CARDS)
    except ModuleNotFoundError:  # a broken install: `carbonbench models` says none were found
        return None
    # Installs unpack to the file system (a wheel is never imported zipped), so this is a Path.
    return Path(str(found)) if Path(str(found)).is_dir() else None


def known_cards() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in card_dirs():
        for p in sorted(d.glob("*.yaml")):
            found.setdefault(p.stem, p)
    return found


def read_card(path: str | Path) -> Card:
    path = Path(path)
    data = read_yaml(path)
    if data is None:
        raise ConfigError(f"{path}: the file is empty")
    if isinstance(data, dict) and "name" not in data:
        data = {"name": path.stem, **data}
    card = build(Card, data, source=str(path))
    if card.checkpoint:
        ckpt = Path(card.checkpoint).expanduser()
        if not ckpt.is_absolute():
            ckpt = (path.parent / ckpt).resolve()
        card = _replace(card, checkpoint=str(ckpt))
    return _replace(card, path=str(path))


def find_card(name_or_path: str | Path) -> Card:
    """A card by name (looked up in card_dirs()) or by the path of a YAML file."""
    text = str(name_or_path)
    if text.endswith((".yaml", ".yml")) or os.sep in text or Path(text).is_file():
        return read_card(text)
    cards = known_cards()
    if text not in cards:
        raise ConfigError(
            f"unknown model card '{text}'{closest(text, cards)}; known cards: "
            + (", ".join(sorted(cards)) or "none (no model/ directory found)")
        )
    return read_card(cards[text])


def _replace(card: Card, **changes) -> Card:
    from dataclasses import replace

    return replace(card, **changes)
