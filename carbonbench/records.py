"""The run-file schema as types: a point, its repeats, their components.

The runner builds these records, the run file stores their ``to_dict()``, and readers
get them back through ``from_dict``, which is also the validation: a hand-edited or
damaged file is refused here, by file and key path, never with a TypeError later.
Keys this version does not know are kept in ``extra`` and written back unchanged, so
a file passes through any reader intact.

The run itself (``RunRecord``, its schema versions) is in carbonbench.run_record.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

from carbonbench import stats
from carbonbench.meters.base import Measurement
from carbonbench.plain import (
    LIST,
    MAPPING,
    NUMBER,
    STRING,
    Damaged,
    Record,
    check,
    numbers,
    omit,
    summary_figures,
)
from carbonbench.scenario import Point
from carbonbench.serve_records import check_serve

# What identifies a point within a run (the fields of scenario.Point) and, with the run
# and how it ran, across runs: the one definition behind every grouping of result rows.
SIZE_FIELDS = ("batch_size", "prompt_tokens", "new_tokens", "seq_len", "rate_rps", "concurrency")
POINT_FIELDS = ("model", "workload", *SIZE_FIELDS)
SERVE_LOAD = ("rate_rps", "concurrency")
POINT_KEYS = ("run_id", "model", "engine", "dtype", "workload", *SIZE_FIELDS)
# Where a run ran: fixed by its run_id, so they never split a group, but tables show them.
MACHINE_COLUMNS = ("hostname", "device_type", "device_name", "n_devices")
POINT_KEYS_WITH_MACHINE = ("run_id", *MACHINE_COLUMNS, *POINT_KEYS[1:])
assert POINT_FIELDS == tuple(f.name for f in dataclasses.fields(Point))


# -- one measured window ----------------------------------------------------------------
@dataclass
class ComponentRecord(Record):
    """One component's energy in one window, as its meter gave it."""

    kind: Optional[str] = None
    energy_j: Optional[float] = None
    method: Optional[str] = None
    meter: Optional[str] = None
    integrated_j: Optional[float] = omit()
    extra: dict[str, Any] = field(default_factory=dict)

    KINDS = {"kind": STRING, "energy_j": NUMBER, "method": STRING, "meter": STRING, "integrated_j": NUMBER}

    @classmethod
    def from_dict(cls, data: Any, where: str) -> "ComponentRecord":
        record = cls(**cls.fields_of(data, where))
        if record.energy_j is not None and record.method is None:
            raise Damaged(f"{where}.method", STRING)
        return record


@dataclass
class RepeatRecord(Record):
    """One measured window of a point: its work, time, energy and their sources."""

    repeat: Optional[int] = 0
    steps: Optional[int] = 0
    tokens: Optional[int] = 0
    flops: Optional[float] = None  # hardware FLOPs: what the engine executed (behind HFU)
    model_flops: Optional[float] = omit()  # the published convention (behind MFU); absent in older files
    start_unix_s: Optional[float] = None
    duration_s: Optional[float] = None
    energy_j: Optional[float] = None
    method: Optional[str] = None
    flags: list[str] = field(default_factory=list)
    components: dict[str, ComponentRecord] = field(default_factory=dict)
    energy_method: Optional[str] = None
    latency_s: dict[str, float] = field(default_factory=dict)
    active_energy_j: Optional[float] = None
    # Timings measured inside a step (decode: time to first token, time per output token).
    ttft_s: Optional[float] = omit()
    tpot_s: Optional[float] = omit()
    # serve: the steady-state window's requests, latencies and attributed energy (carbonbench.serve_records)
    serve: Optional[dict[str, Any]] = omit()
    codecarbon: Optional[dict[str, Any]] = None
    # Absent in files written before failed points marked their repeats: the point's status.
    status: Optional[str] = omit("ok")
    # Under torchrun: every rank's share of this window (carbonbench.distributed.aggregate).
    world_size: Optional[int] = omit()
    ranks: Optional[list[dict]] = omit()
    nodes: Optional[list[dict]] = omit()
    extra: dict[str, Any] = field(default_factory=dict)

    KINDS = {
        "repeat": NUMBER,
        "steps": NUMBER,
        "tokens": NUMBER,
        "flops": NUMBER,
        "model_flops": NUMBER,
        "start_unix_s": NUMBER,
        "duration_s": NUMBER,
        "energy_j": NUMBER,
        "method": STRING,
        "energy_method": STRING,
        "active_energy_j": NUMBER,
        "ttft_s": NUMBER,
        "tpot_s": NUMBER,
        "serve": MAPPING,
        "codecarbon": MAPPING,
        "status": STRING,
        "world_size": NUMBER,
        "ranks": LIST,
        "nodes": LIST,
    }
    CODECARBON_NUMBERS: ClassVar[tuple[str, ...]] = (
        "duration_s",
        "energy_j",
        "cpu_energy_j",
        "gpu_energy_j",
        "ram_energy_j",
        "emissions_g",
    )

    @classmethod
    def from_measurement(cls, repeat: int, meas: Measurement, **fields: Any) -> "RepeatRecord":
        components = {
            c.component: ComponentRecord(c.kind, c.energy_j, c.method, c.meter, c.integrated_j) for c in meas.components
        }
        return cls(
            repeat=repeat,
            start_unix_s=meas.start_unix_s,
            duration_s=meas.duration_s,
            energy_j=meas.energy_j,
            method=meas.method,
            energy_method=meas.method,
            components=components,
            flags=list(meas.flags),
            **fields,
        )

    @classmethod
    def from_dict(cls, data: Any, where: str) -> "RepeatRecord":
        plain = cls.fields_of(data, where)
        plain.setdefault("status", None)
        components = check((data or {}).get("components"), MAPPING, f"{where}.components") or {}
        plain["components"] = {
            str(name): ComponentRecord.from_dict(c, f"{where}.components.{name}") for name, c in components.items()
        }
        plain["latency_s"] = numbers(data.get("latency_s"), f"{where}.latency_s")
        flags = data.get("flags")
        if flags is not None and not (isinstance(flags, list) and all(isinstance(f, str) for f in flags)):
            raise Damaged(f"{where}.flags", "a list of strings")
        plain["flags"] = list(flags or [])
        plain["serve"] = check_serve(plain.get("serve"), f"{where}.serve")
        if plain.get("codecarbon") is not None:
            cc = plain["codecarbon"]
            for key in cls.CODECARBON_NUMBERS:
                check(cc.get(key), NUMBER, f"{where}.codecarbon.{key}")
        return cls(**plain)

    @property
    def ok(self) -> bool:
        return self.status in (None, "ok")

    @property
    def joules_per_token(self) -> Optional[float]:
        return self.energy_j / self.tokens if self.energy_j is not None and self.tokens else None

    @property
    def tokens_per_s(self) -> Optional[float]:
        return self.tokens / self.duration_s if self.tokens and self.duration_s else None

    def components_of(self, kind: str) -> list[ComponentRecord]:
        return [c for c in self.components.values() if c.kind == kind]


# -- one point ----------------------------------------------------------------------------
@dataclass
class PointRecord(Record):
    """A point of the sweep: what ran, how it went, and its repeats."""

    key: str = ""
    model: str = ""
    workload: str = ""
    batch_size: int = 0
    prompt_tokens: int = 0
    new_tokens: int = 0
    seq_len: int = 0
    # serve: the load; absent (None, read as 0 by ``point``) for static points and older files
    rate_rps: Optional[float] = omit()
    concurrency: Optional[int] = omit()
    status: str = "ok"
    error: Optional[str] = None
    repeats: list[RepeatRecord] = field(default_factory=list)
    started_unix_s: Optional[float] = omit()
    tokens_per_word: Optional[float] = None  # text prompts only: tokens per word of the text
    tokens_per_step: Optional[int] = omit()
    flops_per_step: Optional[float] = omit()
    model_flops_per_step: Optional[float] = omit()
    warmup: Optional[dict[str, Any]] = omit()
    peak_memory_bytes: Optional[int] = omit()
    finished_unix_s: Optional[float] = omit()
    # J/token and tokens/s over the ok repeats: mean, std, 95% CI (carbonbench.stats).
    summary: Optional[dict[str, Any]] = omit()
    params: Optional[int] = omit()
    # "random (seed N)" or "checkpoint <source>": FLOPs and time do not depend on the values, power can.
    weights: Optional[str] = omit()
    parallel: Optional[dict[str, Any]] = omit()  # torchrun: the point's layout over the ranks
    ranks: Optional[list[dict]] = omit()  # torchrun: each rank's status
    extra: dict[str, Any] = field(default_factory=dict)

    KINDS = {
        "key": STRING,
        "model": STRING,
        "workload": STRING,
        "batch_size": NUMBER,
        "prompt_tokens": NUMBER,
        "new_tokens": NUMBER,
        "seq_len": NUMBER,
        "rate_rps": NUMBER,
        "concurrency": NUMBER,
        "status": STRING,
        "error": STRING,
        "started_unix_s": NUMBER,
        "tokens_per_word": NUMBER,
        "tokens_per_step": NUMBER,
        "flops_per_step": NUMBER,
        "model_flops_per_step": NUMBER,
        "warmup": MAPPING,
        "peak_memory_bytes": NUMBER,
        "finished_unix_s": NUMBER,
        "summary": MAPPING,
        "params": NUMBER,
        "weights": STRING,
        "parallel": MAPPING,
        "ranks": LIST,
    }

    @classmethod
    def start(cls, point: Point, **fields: Any) -> "PointRecord":
        plain = point.as_dict()
        for key in ("rate_rps", "concurrency"):  # static points are written as they always were
            plain[key] = plain[key] or None
        return cls(key=point.key, **plain, **fields)

    @classmethod
    def from_dict(cls, data: Any, where: str) -> "PointRecord":
        plain = cls.fields_of(data, where)
        repeats = check(data.get("repeats"), LIST, f"{where}.repeats") or []
        plain["repeats"] = [RepeatRecord.from_dict(r, f"{where}.repeats[{j}]") for j, r in enumerate(repeats)]
        for key in POINT_FIELDS + ("key", "status"):
            if plain.get(key) is None:
                plain.pop(key, None)
        summary_figures(plain.get("summary"), f"{where}.summary")
        record = cls(**plain)
        if record.summary is None and record.repeats:  # files from before summaries were stored
            record.summary = point_summary(record.repeats)
        return record

    @property
    def point(self) -> Point:
        return Point(**{k: (getattr(self, k) or 0) if k in SERVE_LOAD else getattr(self, k) for k in POINT_FIELDS})

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def ok_repeats(self) -> list[RepeatRecord]:
        return [r for r in self.repeats if r.ok]

    def finish(self, peak_memory_bytes: Optional[int]) -> None:
        """The point is done: its end, its peak memory, and its summary, computed once and stored."""
        self.finished_unix_s = time.time()
        self.peak_memory_bytes = peak_memory_bytes
        self.summary = point_summary(self.repeats)


def window_label(point_key: str, repeat: int) -> str:
    return f"{point_key}#r{repeat}"


def point_summary(repeats: list[RepeatRecord]) -> dict[str, Any]:
    """Mean, standard deviation and 95% CI half-width of J/token and tokens/s over the ok repeats."""
    ok = [r for r in repeats if r.ok]
    out = {}
    for name, values in (
        ("joules_per_token", [r.joules_per_token for r in ok]),
        ("tokens_per_s", [r.tokens_per_s for r in ok]),
    ):
        mean, std, half = stats.ci95(values)
        out[name] = {"mean": mean, "std": std, "ci95": half, "n": sum(v is not None for v in values)}
    return out
