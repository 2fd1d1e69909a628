"""The ``serve:`` workload section of a scenario: a stream of requests, served with
continuous batching (carbonbench.serving), measured in steady state (carbonbench.serve_measure).

    workloads:
      serve:
        arrival: poisson          # or closed: `concurrency` clients, each sending its next
        rate_rps: [2.0]           #   request as soon as its last one is answered
        requests: 40
        prompt_tokens: {dist: uniform, min: 16, max: 96}
        output_tokens: {dist: uniform, min: 16, max: 64}
        max_batch: [2, 4]         # the batch limit, a sweep axis as batch_sizes is
        prompts: requests.jsonl   # optional: lengths per request, instead of the distributions

Each (max_batch, rate or concurrency) pair is one point. The stream is drawn from
``seed`` alone, so every point and every repeat serves the same requests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from carbonbench.config import FieldError, positive

MAX_POSITIONS = 1 << 20  # the card's own limit is checked against the scenario's models
MAX_REQUESTS = 1_000_000
MAX_RATE_RPS = 1e6
MAX_SEED = (1 << 63) - 1


@dataclass(frozen=True)
class LengthDist:
    """Token counts per request: ``fixed`` (every request ``mean``), ``uniform`` over
    [min, max], or ``lognormal`` with median ``mean`` and shape ``sigma``, clipped to
    [min, max] (chat prompts and answers have long right tails)."""

    dist: Literal["fixed", "uniform", "lognormal"] = "fixed"
    mean: Optional[int] = field(default=None, metadata=positive(max=MAX_POSITIONS))
    min: int = field(default=1, metadata=positive(max=MAX_POSITIONS))
    max: Optional[int] = field(default=None, metadata=positive(max=MAX_POSITIONS))
    sigma: float = field(default=0.5, metadata={"gt": 0, "max": 10})

    def __post_init__(self):
        if self.dist in ("fixed", "lognormal") and self.mean is None:
            raise FieldError("mean", None, f"is needed for dist {self.dist!r}")
        if self.dist == "uniform" and self.max is None:
            raise FieldError("max", None, "is needed for dist 'uniform'")
        if self.max is not None and self.max < self.min:
            raise FieldError("max", self.max, f"is below min ({self.min})")
        if (
            self.mean is not None
            and self.dist == "lognormal"
            and not (self.min <= self.mean <= (self.max or self.mean))
        ):
            raise FieldError("mean", self.mean, "must lie within [min, max]")

    @property
    def longest(self) -> int:
        """The most tokens a request can have: what the KV cache slots are sized for."""
        if self.dist == "fixed":
            return int(self.mean)
        return int(self.max) if self.max is not None else int(self.mean * 8)


@dataclass(frozen=True)
class ServeConfig:
    arrival: Literal["poisson", "closed"] = "poisson"
    rate_rps: Optional[list[float]] = field(default=None, metadata={"gt": 0, "max": MAX_RATE_RPS})
    concurrency: Optional[list[int]] = field(default=None, metadata=positive(max=1 << 16))
    requests: int = field(default=40, metadata={"min": 2, "max": MAX_REQUESTS})
    prompt_tokens: LengthDist = field(default_factory=lambda: LengthDist("uniform", min=16, max=64))
    output_tokens: LengthDist = field(default_factory=lambda: LengthDist("uniform", min=16, max=64))
    prompts: Optional[str] = None  # .jsonl: one request per line, lengths (and text) per request
    max_batch: list[int] = field(default_factory=lambda: [4], metadata=positive(max=1 << 16))
    # The window opens once this share of the requests has arrived (the ramp-up) and
    # closes when the last one arrives (then the drain): steady state only.
    ramp_fraction: float = field(default=0.2, metadata={"min": 0, "max": 0.9})
    seed: int = field(default=0, metadata={"min": 0, "max": MAX_SEED})

    def __post_init__(self):
        if self.arrival == "poisson":
            if not self.rate_rps:
                raise FieldError("rate_rps", self.rate_rps, "give at least one rate for arrival 'poisson'")
            if self.concurrency:
                raise FieldError("concurrency", self.concurrency, "is for arrival 'closed', not 'poisson'")
        else:
            if not self.concurrency:
                raise FieldError("concurrency", self.concurrency, "give at least one client count for arrival 'closed'")
            if self.rate_rps:
                raise FieldError("rate_rps", self.rate_rps, "is for arrival 'poisson', not 'closed'")
        if not self.max_batch:
            raise FieldError("max_batch", self.max_batch, "give at least one batch limit")
        if self.prompts is not None and not self.prompts.endswith(".jsonl"):
            raise FieldError("prompts", self.prompts, "must be a .jsonl file (one request per line)")

    @property
    def loads(self) -> list[tuple[float, int]]:
        """(rate_rps, concurrency) of each load point: one of the two is 0."""
        if self.arrival == "poisson":
            return [(float(r), 0) for r in self.rate_rps]
        return [(0.0, int(c)) for c in self.concurrency]


def check_serve_engine(engine) -> None:
    """Continuous batching runs on the native engine's KV-cache slots, eager: FieldError otherwise."""
    if engine.name != "native":
        raise FieldError("engine", engine.name, "serve needs the native engine (transformers runs static batches only)")
    if not engine.static_cache:
        raise FieldError("engine.static_cache", False, "serve keeps requests in slots of a static KV cache")
    for option in ("compile", "cuda_graphs"):
        if getattr(engine, option):
            raise FieldError(f"engine.{option}", True, "is not supported by serve yet (its decode steps are eager)")
