"""Scenario files: what to run, how to measure it, under which grid and prices.

Each component reads only its own section (``measurement``, ``carbon``, ``cost``...).
Loading is strict: an unknown key, a wrong type, a non-positive size or an unknown model
card is one ConfigError naming the file, the key path and the value.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

from carbonbench.carbon import CarbonConfig, CostConfig
from carbonbench.config import FieldError, build, positive, read_yaml, to_plain
from carbonbench.errors import ConfigError
from carbonbench.opt.card import Card, find_card

WorkloadName = Literal["prefill", "decode", "train"]


@dataclass(frozen=True)
class PrefillConfig:
    """One forward pass over a batch of prompts (filling the KV cache)."""

    prompt_tokens: list[int] = field(metadata=positive())
    batch_sizes: Optional[list[int]] = field(default=None, metadata=positive())  # default: the scenario's


@dataclass(frozen=True)
class DecodeConfig:
    """Greedy generation of new_tokens after a prompt; tokens counted are the new ones."""

    prompt_tokens: list[int] = field(metadata=positive())
    new_tokens: list[int] = field(metadata=positive())
    batch_sizes: Optional[list[int]] = field(default=None, metadata=positive())


@dataclass(frozen=True)
class TrainConfig:
    """Forward, backward and an AdamW step over sequences of seq_len tokens."""

    seq_len: list[int] = field(metadata=positive())
    batch_sizes: Optional[list[int]] = field(default=None, metadata=positive())
    activation_checkpointing: bool = False
    lr: float = field(default=1e-4, metadata=positive())


@dataclass(frozen=True)
class WorkloadsConfig:
    prefill: Optional[PrefillConfig] = None
    decode: Optional[DecodeConfig] = None
    train: Optional[TrainConfig] = None
    prompts: Optional[str] = None  # .txt or .jsonl of text prompts; used when the model has a tokenizer

    def __post_init__(self):
        if self.prefill is None and self.decode is None and self.train is None:
            raise FieldError("prefill", None, "give at least one workload: prefill, decode or train")


@dataclass(frozen=True)
class MeasurementConfig:
    warmup_steps: int = field(default=2, metadata={"min": 1})
    warmup_s: float = field(default=1.0, metadata={"min": 0})
    min_seconds: float = field(default=5.0, metadata=positive())  # per measured window
    repeats: int = field(default=3, metadata={"min": 1})
    sample_interval_s: float = field(default=0.1, metadata={"gt": 0, "min": 0.005})
    idle_baseline_s: float = field(default=5.0, metadata={"min": 0})
    cooldown_s: float = field(default=0.0, metadata={"min": 0})  # between points
    cpu_tdp_w: Optional[float] = field(default=None, metadata=positive())
    codecarbon: bool = True


@dataclass(frozen=True)
class Scenario:
    name: str
    models: list[str]
    workloads: WorkloadsConfig
    batch_sizes: list[int] = field(default_factory=lambda: [1], metadata=positive())
    description: str = ""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    engine: Literal["native", "transformers"] = "native"
    seed: int = field(default=0, metadata={"min": 0})
    measurement: MeasurementConfig = field(default_factory=MeasurementConfig)
    carbon: CarbonConfig = field(default_factory=CarbonConfig)
    cost: CostConfig = field(default_factory=CostConfig)

    def __post_init__(self):
        if not self.name.strip():
            raise FieldError("name", self.name, "must not be empty")

    def to_dict(self) -> dict[str, Any]:
        return to_plain(self)

    def replace(self, **changes) -> "Scenario":
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Point:
    """One measured configuration: a model, a workload and its sizes."""

    model: str
    workload: WorkloadName
    batch_size: int
    prompt_tokens: int = 0
    new_tokens: int = 0
    seq_len: int = 0

    @property
    def key(self) -> str:
        sizes = {
            "prefill": f"p{self.prompt_tokens}",
            "decode": f"p{self.prompt_tokens}-n{self.new_tokens}",
            "train": f"s{self.seq_len}",
        }[self.workload]
        return f"{self.model}/{self.workload}/b{self.batch_size}/{sizes}"

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load(path: str | Path) -> Scenario:
    path = Path(path)
    data = read_yaml(path)
    if data is None:
        raise ConfigError(f"{path}: the file is empty")
    return from_dict(data, source=str(path), base_dir=path.parent)


def from_dict(data: Any, *, source: str, base_dir: Path | None = None) -> Scenario:
    """Validate plain data (a parsed YAML file or a result file's copy) into a Scenario."""
    scenario = build(Scenario, data, source=source)
    base_dir = base_dir or Path.cwd()
    models = [_resolve_model(m, base_dir, source, i) for i, m in enumerate(scenario.models)]
    labels = [model_label(m) for m in models]
    for i, label in enumerate(labels):
        if labels.index(label) != i:
            raise ConfigError(f"{source}: models[{i}]: '{label}' is listed twice (got '{scenario.models[i]}')")
    scenario = scenario.replace(models=models)
    _check_lengths(scenario, source)
    prompts = scenario.workloads.prompts
    if prompts:
        path = Path(prompts).expanduser()
        path = path if path.is_absolute() else base_dir / path
        if not path.is_file():
            raise ConfigError(f"{source}: workloads.prompts: file not found (got '{prompts}')")
        scenario = scenario.replace(workloads=dataclasses.replace(scenario.workloads, prompts=str(path)))
    return scenario


def _resolve_model(model: str, base_dir: Path, source: str, index: int) -> str:
    """Card names stay names; paths (card files, checkpoint dirs) become absolute."""
    looks_like_path = model.endswith((".yaml", ".yml")) or "/" in model or model.startswith(".")
    if looks_like_path:
        p = Path(model).expanduser()
        p = p if p.is_absolute() else (base_dir / p)
        if not p.exists():
            raise ConfigError(f"{source}: models[{index}]: no such card file or checkpoint directory (got '{model}')")
        model = str(p.resolve())
    try:
        model_card(model)
    except ConfigError as exc:
        raise ConfigError(f"{source}: models[{index}]: {exc}") from None
    return model


def model_card(model: str):
    """The card for a scenario's model entry: a name, a card file or a checkpoint dir."""
    p = Path(model)
    if p.is_dir():
        from carbonbench.opt.checkpoint import arch_from_hf_config

        config = p / "config.json"
        if not config.is_file():
            raise ConfigError(f"{p}: not a checkpoint directory (no config.json)")
        return Card(name=p.name, architecture=arch_from_hf_config(config), checkpoint=str(p), path=str(config))
    return find_card(model)


def _check_lengths(scenario: Scenario, source: str) -> None:
    w = scenario.workloads
    longest = {
        "workloads.prefill.prompt_tokens": max(w.prefill.prompt_tokens) if w.prefill else 0,
        "workloads.decode": max(w.decode.prompt_tokens) + max(w.decode.new_tokens) if w.decode else 0,
        "workloads.train.seq_len": max(w.train.seq_len) if w.train else 0,
    }
    for i, model in enumerate(scenario.models):
        limit = model_card(model).architecture.max_positions
        for key, length in longest.items():
            if length > limit:
                what = "prompt_tokens + new_tokens reaches" if key == "workloads.decode" else "longest is"
                raise ConfigError(
                    f"{source}: {key}: {what} {length}, more than {model_label(model)}'s "
                    f"{limit} positions (models[{i}])"
                )


def model_label(model: str) -> str:
    """A short display name for a model entry (card name, or the directory/file stem)."""
    p = Path(model)
    return p.name if p.is_dir() else (p.stem if model.endswith((".yaml", ".yml")) else model)


def expand(scenario: Scenario) -> list[Point]:
    """Every point of the sweep, grouped by model so each model is built once."""
    w = scenario.workloads
    points: list[Point] = []
    for model in scenario.models:
        name = model_label(model)
        if w.prefill:
            for batch in w.prefill.batch_sizes or scenario.batch_sizes:
                for prompt in w.prefill.prompt_tokens:
                    points.append(Point(name, "prefill", batch, prompt_tokens=prompt))
        if w.decode:
            for batch in w.decode.batch_sizes or scenario.batch_sizes:
                for prompt in w.decode.prompt_tokens:
                    for new in w.decode.new_tokens:
                        points.append(Point(name, "decode", batch, prompt_tokens=prompt, new_tokens=new))
        if w.train:
            for batch in w.train.batch_sizes or scenario.batch_sizes:
                for seq in w.train.seq_len:
                    points.append(Point(name, "train", batch, seq_len=seq))
    seen, unique = set(), []
    for p in points:  # a size listed twice would measure the same point twice
        if p.key not in seen:
            seen.add(p.key)
            unique.append(p)
    return unique
