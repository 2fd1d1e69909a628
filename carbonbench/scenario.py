"""Scenario files: what to run, how to measure it, under which grid and prices.

Each component reads only its own section (``measurement``, ``carbon``, ``cost``...).
Loading is strict: an unknown key, a wrong type, a non-positive size or an unknown model
card is one ConfigError naming the file, the key path and the value. Every duration and
size also has a ceiling far above any real run, so that a finite but absurd value
(``cooldown_s: 1e308``) is refused here rather than overflowing in the middle of a run.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

from carbonbench.config import FieldError, build, positive, read_yaml, to_plain
from carbonbench.engine_config import CUDA_ONLY_SDPA, EngineConfig, EngineName  # noqa: F401 (imported from here)
from carbonbench.errors import ConfigError
from carbonbench.opt.card import MAX_POSITIONS, Card
from carbonbench.opt.hub import card_for, is_hub_id
from carbonbench.request_stream import longest_request
from carbonbench.serve_config import ServeConfig, check_serve_engine
from carbonbench.settings import CarbonConfig, CostConfig
from carbonbench.threads import MAX_THREADS, ThreadsSetting

WorkloadName = Literal["prefill", "decode", "train", "serve"]

# Ceilings: a day for any one wait or window, a minute between
# samples, a week for a collective; tokens per sequence as a card's positions allow.
DAY_S, WEEK_S = 86400, 7 * 86400
MAX_BATCH = 1 << 20
MAX_STEPS, MAX_REPEATS = 1_000_000, 1000
MAX_SEED = (1 << 63) - 1  # torch.manual_seed takes 64-bit seeds
MAX_CPU_TDP_W = 100_000


def token_count(**extra: Any) -> dict:
    """Metadata for a token count: positive, at most a card's largest position table."""
    return positive(max=MAX_POSITIONS, **extra)


def batch_count(**extra: Any) -> dict:
    """Metadata for a batch size: positive, at most MAX_BATCH sequences."""
    return positive(max=MAX_BATCH, **extra)


@dataclass(frozen=True)
class PrefillConfig:
    """One forward pass over a batch of prompts (filling the KV cache)."""

    prompt_tokens: list[int] = field(metadata=token_count())
    batch_sizes: Optional[list[int]] = field(default=None, metadata=batch_count())  # default: the scenario's


@dataclass(frozen=True)
class DecodeConfig:
    """Greedy generation of new_tokens after a prompt; tokens counted are the new ones."""

    prompt_tokens: list[int] = field(metadata=token_count())
    new_tokens: list[int] = field(metadata=token_count())
    batch_sizes: Optional[list[int]] = field(default=None, metadata=batch_count())


@dataclass(frozen=True)
class TrainConfig:
    """Forward, backward and an AdamW step over sequences of seq_len tokens."""

    seq_len: list[int] = field(metadata=token_count())
    batch_sizes: Optional[list[int]] = field(default=None, metadata=batch_count())
    activation_checkpointing: bool = False
    lr: float = field(default=1e-4, metadata=positive())


@dataclass(frozen=True)
class WorkloadsConfig:
    prefill: Optional[PrefillConfig] = None
    decode: Optional[DecodeConfig] = None
    train: Optional[TrainConfig] = None
    serve: Optional[ServeConfig] = None  # a request stream under continuous batching (docs/serve.md)
    prompts: Optional[str] = None  # .txt or .jsonl of text prompts; used when the model has a tokenizer

    def __post_init__(self):
        if self.prefill is None and self.decode is None and self.train is None and self.serve is None:
            raise FieldError("prefill", None, "give at least one workload: prefill, decode, train or serve")


@dataclass(frozen=True)
class MeasurementConfig:
    warmup_steps: int = field(default=2, metadata={"min": 1, "max": MAX_STEPS})
    warmup_s: float = field(default=1.0, metadata={"min": 0, "max": DAY_S})
    min_seconds: float = field(default=5.0, metadata=positive(max=DAY_S))  # per measured window
    repeats: int = field(default=3, metadata={"min": 1, "max": MAX_REPEATS})
    sample_interval_s: float = field(default=0.1, metadata={"gt": 0, "min": 0.005, "max": 60})
    idle_baseline_s: float = field(default=5.0, metadata={"min": 0, "max": DAY_S})
    cooldown_s: float = field(default=0.0, metadata={"min": 0, "max": DAY_S})  # between points
    cpu_tdp_w: Optional[float] = field(default=None, metadata=positive(max=MAX_CPU_TDP_W))
    # The CPU estimate's share: the whole package (what a socket meter would see), or this
    # process tree's share of the host's busy CPU time (a shared or busy host).
    cpu_attribution: Literal["machine", "process"] = "machine"
    codecarbon: bool = True
    # torch's CPU threads (intra-op and interop): a count, or auto (carbonbench.threads)
    threads: ThreadsSetting = field(default="auto", metadata={"min": 1, "max": MAX_THREADS})


@dataclass(frozen=True)
class ParallelConfig:
    """How a run on several processes (torchrun) spreads its points; one process ignores it.

    strategy: ``auto`` trains with FSDP2 and runs inference tensor parallel only when the
    model does not fit on one device (else one full copy per rank); ``fsdp`` trains with
    FSDP2 and replicates inference; ``tp`` trains with FSDP2 and runs inference tensor
    parallel over ``tp_size`` ranks; ``none`` refuses more than one process.
    See docs/distributed.md.
    """

    strategy: Literal["auto", "none", "fsdp", "tp"] = "auto"
    # default: the processes per node (all ranks if 1)
    tp_size: Optional[int] = field(default=None, metadata={"min": 1, "max": 1 << 16})
    timeout_s: float = field(default=300.0, metadata=positive(max=WEEK_S))  # a collective waiting longer ends the run

    def __post_init__(self):
        if self.tp_size is not None and self.strategy not in ("auto", "tp"):
            raise FieldError("tp_size", self.tp_size, f"is for strategy tp or auto, not {self.strategy!r}")


# `--quick`: short windows and two repeats, for smoke runs (results are marked quick).
QUICK = dict(warmup_steps=1, warmup_s=0.0, min_seconds=0.3, repeats=2, idle_baseline_s=0.5, cooldown_s=0.0)


@dataclass(frozen=True)
class Scenario:
    name: str
    models: list[str]
    workloads: WorkloadsConfig
    batch_sizes: list[int] = field(default_factory=lambda: [1], metadata=batch_count())
    description: str = ""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    engine: EngineConfig = field(default_factory=EngineConfig)
    seed: int = field(default=0, metadata={"min": 0, "max": MAX_SEED})
    measurement: MeasurementConfig = field(default_factory=MeasurementConfig)
    carbon: CarbonConfig = field(default_factory=CarbonConfig)
    cost: CostConfig = field(default_factory=CostConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)

    def __post_init__(self):
        if not self.name.strip():
            raise FieldError("name", self.name, "must not be empty")
        if isinstance(self.engine, str):  # Scenario(engine="native") in code
            object.__setattr__(self, "engine", EngineConfig(name=self.engine))
        if self.device == "cpu":
            if self.engine.cuda_graphs:
                raise FieldError("engine.cuda_graphs", True, "needs CUDA, but device is 'cpu'")
            if self.engine.sdpa_backend in CUDA_ONLY_SDPA:
                raise FieldError(
                    "engine.sdpa_backend",
                    self.engine.sdpa_backend,
                    "is a CUDA kernel, but device is 'cpu' (use auto, flash or math)",
                )
        if self.workloads.serve is not None:
            check_serve_engine(self.engine)

    def to_dict(self) -> dict[str, Any]:
        return to_plain(self)

    def quick(self) -> "Scenario":
        """The same sweep with short windows: a smoke run, not a measurement to publish."""
        return self.replace(measurement=dataclasses.replace(self.measurement, **QUICK))

    def replace(self, **changes) -> "Scenario":
        out = dataclasses.replace(self, **changes)
        if "models" not in changes and "_entries" in self.__dict__:
            object.__setattr__(out, "_entries", self.__dict__["_entries"])  # same models: no new resolution
        return out

    @property
    def entries(self) -> tuple["ModelEntry", ...]:
        """The models, each resolved to its card once (a card file or checkpoint is read here)."""
        cached = self.__dict__.get("_entries")
        if cached is None:
            cached = tuple(ModelEntry.of(m) for m in self.models)
            object.__setattr__(self, "_entries", cached)
        return cached

    def entry(self, label: str) -> "ModelEntry":
        return next(e for e in self.entries if e.label == label)

    def by_model(self, points: list["Point"]) -> list[tuple["ModelEntry", list["Point"]]]:
        """Points grouped by model, each model once, in the order the points come."""
        order: dict[str, list[Point]] = {}
        for p in points:
            order.setdefault(p.model, []).append(p)
        return [(self.entry(label), group) for label, group in order.items()]


@dataclass(frozen=True)
class ModelEntry:
    """A scenario's model: the name its points carry, what the scenario named, and its card."""

    label: str  # card name, or the checkpoint directory's / card file's stem
    source: str  # as the scenario gives it: a card name, or an absolute card file or checkpoint path
    card: Card

    @classmethod
    def of(cls, source: str) -> "ModelEntry":
        return cls(model_label(source), source, model_card(source))

    def weights(self, seed: int) -> str:
        """Where the weight values come from, as a run records it."""
        return f"checkpoint {self.card.checkpoint}" if self.card.checkpoint else f"random (seed {seed})"


@dataclass(frozen=True)
class Point:
    """One measured configuration: a model, a workload and its sizes."""

    model: str
    workload: WorkloadName
    batch_size: int
    prompt_tokens: int = 0
    new_tokens: int = 0
    seq_len: int = 0
    # serve: batch_size is max_batch, prompt/new_tokens the longest request; the load is
    # Poisson arrivals at rate_rps, or concurrency closed-loop clients.
    rate_rps: float = 0.0
    concurrency: int = 0

    @property
    def key(self) -> str:
        load = f"r{self.rate_rps:g}" if self.rate_rps else f"c{self.concurrency}"
        sizes = {
            "prefill": f"p{self.prompt_tokens}",
            "decode": f"p{self.prompt_tokens}-n{self.new_tokens}",
            "train": f"s{self.seq_len}",
            "serve": f"{load}-p{self.prompt_tokens}-n{self.new_tokens}",
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
    if isinstance(data, dict) and isinstance(data.get("engine"), str):
        data = {**data, "engine": {"name": data["engine"]}}  # `engine: native`, the plain form
    scenario = build(Scenario, data, source=source)
    base_dir = base_dir or Path.cwd()
    resolved = [_resolve_model(m, base_dir, source, i) for i, m in enumerate(scenario.models)]
    models, cards = [m for m, _ in resolved], [c for _, c in resolved]
    labels = [model_label(m) for m in models]
    for i, label in enumerate(labels):
        if labels.index(label) != i:
            raise ConfigError(f"{source}: models[{i}]: '{label}' is listed twice (got '{scenario.models[i]}')")
    scenario = scenario.replace(models=models)
    object.__setattr__(
        scenario, "_entries", tuple(ModelEntry(model_label(m), m, card) for m, card in zip(models, cards))
    )
    _check_lengths(scenario, source)
    prompts = scenario.workloads.prompts
    if prompts:
        path = Path(prompts).expanduser()
        path = path if path.is_absolute() else base_dir / path
        if not os.path.lexists(path):  # present but a pipe or a device: refused by name when read
            raise ConfigError(f"{source}: workloads.prompts: file not found (got '{prompts}')")
        scenario = scenario.replace(workloads=dataclasses.replace(scenario.workloads, prompts=str(path)))
    serve = scenario.workloads.serve
    if serve is not None and serve.prompts:
        path = _existing(serve.prompts, base_dir, source, "workloads.serve.prompts")
        serve = dataclasses.replace(serve, prompts=str(path))
        scenario = scenario.replace(workloads=dataclasses.replace(scenario.workloads, serve=serve))
    return scenario


def _existing(name: str, base_dir: Path, source: str, key: str) -> Path:
    path = Path(name).expanduser()
    path = path if path.is_absolute() else base_dir / path
    if not os.path.lexists(path):
        raise ConfigError(f"{source}: {key}: file not found (got '{name}')")
    return path


def _resolve_model(model: str, base_dir: Path, source: str, index: int) -> tuple[str, Card]:
    """The entry and its card. Card names and Hugging Face ids stay as written; paths (card
    files, checkpoint dirs) become absolute. A path that exists (beside the scenario) wins
    over an id (opt.hub)."""
    looks_like_path = model.endswith((".yaml", ".yml")) or "/" in model or model.startswith(".")
    if looks_like_path:
        p = Path(model).expanduser()
        p = p if p.is_absolute() else (base_dir / p)
        if p.exists():
            model = str(p.resolve())
        elif not is_hub_id(model):
            raise ConfigError(f"{source}: models[{index}]: no such card file or checkpoint directory (got '{model}')")
    try:
        return model, model_card(model)
    except ConfigError as exc:
        raise ConfigError(f"{source}: models[{index}]: {exc}") from None


def model_card(model: str):
    """The card for a scenario's model entry: a name, a card file, a checkpoint dir or a Hugging Face id."""
    return card_for(model)


def _check_lengths(scenario: Scenario, source: str) -> None:
    w = scenario.workloads
    longest = {
        "workloads.prefill.prompt_tokens": max(w.prefill.prompt_tokens) if w.prefill else 0,
        "workloads.decode": max(w.decode.prompt_tokens) + max(w.decode.new_tokens) if w.decode else 0,
        "workloads.train.seq_len": max(w.train.seq_len) if w.train else 0,
        "workloads.serve": sum(longest_request(w.serve)) if w.serve else 0,
    }
    for i, entry in enumerate(scenario.entries):
        limit = entry.card.architecture.max_positions
        for key, length in longest.items():
            if length > limit:
                what = {
                    "workloads.decode": "prompt_tokens + new_tokens reaches",
                    "workloads.serve": "prompt + output reach",
                }
                what = what.get(key, "longest is")
                raise ConfigError(
                    f"{source}: {key}: {what} {length}, more than {entry.label}'s {limit} positions (models[{i}])"
                )


def model_label(model: str) -> str:
    """A short display name for a model entry (card name, or the directory/file stem)."""
    p = Path(model)
    return p.name if p.is_dir() else (p.stem if model.endswith((".yaml", ".yml")) else model)


def expand(scenario: Scenario) -> list[Point]:
    """Every point of the sweep, grouped by model so each model is built once."""
    w = scenario.workloads
    points: list[Point] = []
    for name in (model_label(m) for m in scenario.models):
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
        if w.serve:
            prompt, new = longest_request(w.serve)
            for batch in w.serve.max_batch:
                for rate, clients in w.serve.loads:
                    points.append(Point(name, "serve", batch, prompt, new, rate_rps=rate, concurrency=clients))
    seen, unique = set(), []
    for p in points:  # a size listed twice would measure the same point twice
        if p.key not in seen:
            seen.add(p.key)
            unique.append(p)
    return unique
