"""A whole run as a type: where and how it was measured, and every point (carbonbench.records).

Schema versions (docs/results.md): 1 holds every point inside the run file; 2, while a
run is going on or after it was killed, holds only some and journals the rest beside it
(``<run-id>.points.jsonl``), which carbonbench.runfile.read_run merges in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from carbonbench import grid
from carbonbench.errors import ConfigError, ResultsError
from carbonbench.meters.idle import IdleBaseline
from carbonbench.plain import (
    BOOL,
    LIST,
    MAPPING,
    NUMBER,
    STRING,
    Damaged,
    Record,
    check,
    idle_baseline,
    omit,
    sane_numbers,
)
from carbonbench.records import PointRecord

SCHEMA = "carbonbench.run"
SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)


# -- one run ------------------------------------------------------------------------------
@dataclass
class DeviceRecord(Record):
    type: Optional[str] = None
    name: Optional[str] = None
    count: int = 1  # one device per rank
    dtype: Optional[str] = None
    extra: dict[str, Any] = field(default_factory=dict)

    KINDS = {"type": STRING, "name": STRING, "count": NUMBER, "dtype": STRING}

    @classmethod
    def from_dict(cls, data: Any, where: str) -> "DeviceRecord":
        plain = cls.fields_of(data if data is not None else {}, where)
        if plain.get("count") is None:
            plain.pop("count", None)
        return cls(**plain)


# The recorded scenario stays the plain mapping it was written as (re-running validates
# it fully); these are the fields readers compute with, checked here.
_SCENARIO_FIELDS = {
    "scenario": {"name": STRING},
    "scenario.carbon": {"grid_g_per_kwh": NUMBER, "pue": NUMBER, "country": STRING, "region": STRING},
    "scenario.cost": {"usd_per_kwh": NUMBER, "usd_per_device_hour": NUMBER},
}


@dataclass
class RunRecord(Record):
    """A whole run: where and how it was measured, and every point."""

    schema: str = SCHEMA
    schema_version: int = SCHEMA_VERSION
    run_id: str = ""
    status: str = "starting"
    started_utc: Optional[str] = None
    finished_utc: Optional[str] = None
    carbonbench_version: Optional[str] = None
    fingerprint: Optional[str] = None
    quick: bool = False
    note: Optional[str] = omit()  # a free-text note (reference runs, fixtures)
    scenario: dict[str, Any] = field(default_factory=dict)
    scenario_source: Optional[str] = None
    device: DeviceRecord = field(default_factory=DeviceRecord)
    environment: dict[str, Any] = field(default_factory=dict)
    meters: list[dict[str, Any]] = field(default_factory=list)
    idle: Optional[IdleBaseline] = None
    timeline_file: Optional[str] = None
    points: list[PointRecord] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    engine: Optional[Any] = omit()  # the engine in effect: {name, options, notes}; old runs: a name
    codecarbon: Optional[Any] = None  # codecarbon's whole-run total (None when off or failed)
    codecarbon_meter: Optional[dict[str, Any]] = omit()
    # torchrun jobs: the processes and nodes (carbonbench.distributed).
    world_size: Optional[int] = omit()
    nodes: Optional[list[dict]] = omit()
    distributed: Optional[dict[str, Any]] = omit()
    extra: dict[str, Any] = field(default_factory=dict)

    KINDS = {
        "run_id": STRING,
        "status": STRING,
        "started_utc": STRING,
        "finished_utc": STRING,
        "carbonbench_version": STRING,
        "fingerprint": STRING,
        "quick": BOOL,
        "note": STRING,
        "scenario": MAPPING,
        "scenario_source": STRING,
        "environment": MAPPING,
        "meters": LIST,
        "timeline_file": STRING,
        "warnings": LIST,
        "codecarbon_meter": MAPPING,
        "world_size": NUMBER,
        "nodes": LIST,
        "distributed": MAPPING,
    }

    @classmethod
    def from_dict(cls, data: Any, where: str = "") -> "RunRecord":
        """Validate a parsed run file; Damaged or ResultsError (without the file name) if it is not one."""
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise ResultsError(f'not a carbonbench result file (no \'"schema": "{SCHEMA}"\')')
        version = data.get("schema_version")
        if isinstance(version, bool) or version not in READABLE_VERSIONS:
            raise ResultsError(
                f"schema_version {version!r} is not supported (this carbonbench reads "
                f"{', '.join(map(str, READABLE_VERSIONS))})"
            )
        for key, kind in (("run_id", str), ("points", list), ("scenario", dict)):
            if not isinstance(data.get(key), kind):
                raise ResultsError(f"key '{key}' is missing or has the wrong type")
        sane_numbers(data)  # every number, known field or not: no reader may meet a NaN later
        plain = cls.fields_of(data, "")
        plain["schema"], plain["schema_version"] = SCHEMA, version
        for key in ("status", "quick"):
            if plain.get(key) is None:
                plain.pop(key, None)
        plain["warnings"] = [str(w) for w in plain.get("warnings") or []]
        plain["device"] = DeviceRecord.from_dict(data.get("device"), "device")
        _check_scenario(data["scenario"])
        plain["engine"] = _engine(data.get("engine"), "engine")
        _engine(data["scenario"].get("engine"), "scenario.engine")
        plain["idle"] = idle_baseline(data.get("idle"))
        plain["environment"] = plain.get("environment") or {}
        check(plain["environment"].get("hostname"), STRING, "environment.hostname")
        points = data["points"]
        plain["points"] = []
        for i, point in enumerate(points):
            if not isinstance(point, dict):
                raise Damaged(f"points[{i}]", MAPPING)
            plain["points"].append(PointRecord.from_dict(point, f"points[{i}]"))
        return cls(**plain)

    # -- what readers ask of a run ------------------------------------------------------
    @property
    def scenario_name(self) -> Optional[str]:
        return self.scenario.get("name")

    @property
    def carbon(self) -> dict[str, Any]:
        return self.scenario.get("carbon") or {}

    @property
    def cost(self) -> dict[str, Any]:
        return self.scenario.get("cost") or {}

    @property
    def hostname(self) -> Optional[str]:
        return self.environment.get("hostname")

    @property
    def engine_name(self) -> str:
        engine = self.engine or self.scenario.get("engine") or "native"
        return engine if isinstance(engine, str) else engine.get("name") or "native"

    def engine_options(self) -> Optional[dict[str, Any]]:
        """The engine options in effect as the run recorded them; None for old runs (a name only)."""
        engine = self.engine or self.scenario.get("engine") or "native"
        if isinstance(engine, str):
            return None
        return engine.get("options", {k: v for k, v in engine.items() if k != "name"})

    @property
    def done_keys(self) -> set[str]:
        return {p.key for p in self.points if p.ok}


def _check_scenario(scenario: dict) -> None:
    for where, kinds in _SCENARIO_FIELDS.items():
        data: Any = {"scenario": scenario}
        for part in where.split("."):
            data = check(data.get(part), MAPPING, where) or {}
        for key, want in kinds.items():
            check(data.get(key), want, f"{where}.{key}")
    # Rows are priced under their own scenario's grid (runs always record one): one that
    # does not resolve is this file's fault, and would otherwise fail every reader.
    carbon = scenario.get("carbon") or {}
    try:
        grid.resolve(carbon.get("country"), carbon.get("region"), carbon.get("grid_g_per_kwh"), where="scenario")
    except ConfigError as exc:
        raise ResultsError(f"scenario.carbon: {exc}") from None


def _engine(engine: Any, where: str) -> Any:
    if engine is None or isinstance(engine, str):  # old runs: a name; now a mapping
        return engine
    check(engine, MAPPING, where)
    check(engine.get("name"), STRING, f"{where}.name")
    check(engine.get("options"), MAPPING, f"{where}.options")
    return engine
