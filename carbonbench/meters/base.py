"""The measurement window API shared by every meter.

A meter turns a window (a start and an end) into the energy of the components it can
see. ``begin()`` returns an opaque snapshot and ``end(snapshot)`` the energies, so any
number of windows can be open at once and windows nest freely.
"""

from __future__ import annotations

import contextlib
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Literal, Optional

from carbonbench.errors import MeterError

Method = Literal["counter", "integrated", "estimated", "none"]
Kind = Literal["gpu", "cpu", "dram"]

# Weakest first: a total is only as good as its weakest part.
METHOD_RANK = {"none": 0, "estimated": 1, "integrated": 2, "counter": 3}


@dataclass(frozen=True)
class ComponentEnergy:
    component: str  # unique within a run, e.g. "gpu0", "cpu-package0", "dram0", "cpu"
    kind: Kind
    energy_j: Optional[float]  # None: this meter could not say (null meter, failure)
    method: Method
    meter: str  # the meter that produced it, e.g. "nvml", "rapl", "cpu-estimate"
    # Sampled power integrated over the same window, kept next to a counter figure so the
    # two can be compared (they agree within ~1% on steady loads, not on bursty ones).
    integrated_j: Optional[float] = None


@dataclass(frozen=True)
class Measurement:
    label: str
    start_unix_s: float
    duration_s: float
    components: tuple[ComponentEnergy, ...] = ()
    flags: tuple[str, ...] = ()  # e.g. "short-window": shorter than a meter's resolution

    @property
    def energy_j(self) -> Optional[float]:
        known = [c.energy_j for c in self.components if c.energy_j is not None]
        return sum(known) if known else None

    @property
    def method(self) -> Method:
        """The weakest method among the components that reported energy."""
        methods = [c.method for c in self.components if c.energy_j is not None]
        return min(methods, key=METHOD_RANK.__getitem__) if methods else "none"

    def energy_by_kind(self, kind: Kind) -> Optional[float]:
        known = [c.energy_j for c in self.components if c.kind == kind and c.energy_j is not None]
        return sum(known) if known else None

    def component(self, name: str) -> Optional[ComponentEnergy]:
        return next((c for c in self.components if c.component == name), None)

    def as_dict(self) -> dict[str, Any]:
        components = {}
        for c in self.components:
            entry = {"kind": c.kind, "energy_j": c.energy_j, "method": c.method, "meter": c.meter}
            if c.integrated_j is not None:
                entry["integrated_j"] = c.integrated_j
            components[c.component] = entry
        return {
            "label": self.label,
            "start_unix_s": self.start_unix_s,
            "duration_s": self.duration_s,
            "energy_j": self.energy_j,
            "method": self.method,
            "flags": list(self.flags),
            "components": components,
        }


class Meter(ABC):
    """One source of energy readings. Subclasses map vendor errors to MeterError."""

    name: str = "meter"
    #: the smallest window this meter resolves; shorter windows are flagged
    resolution_s: float = 0.0

    def start(self) -> None:
        """Begin background work (samplers). Called once before the first window."""

    def close(self) -> None:
        """Stop background work. Must be safe to call twice."""

    @abstractmethod
    def begin(self) -> Any:
        """Snapshot whatever ``end`` needs. Must be cheap: it sits at a window edge."""

    @abstractmethod
    def end(self, snapshot: Any, start_unix_s: float, end_unix_s: float) -> list[ComponentEnergy]:
        """The energy of each component since ``snapshot``."""

    def describe(self) -> dict[str, Any]:
        """What this meter is and how it measures, for the result file."""
        return {"name": self.name}

    def timeline(self) -> list[dict[str, Any]]:
        """Samples taken so far (rows with at least unix_s, component, power_w)."""
        return []

    def drain_timeline(self, before_unix_s: float) -> list[dict[str, Any]]:
        """The samples taken so far, handed over and no longer kept (see Sampler.drain)."""
        return []

    def flags(self) -> tuple[str, ...]:
        """Problems that make this meter's figures less trustworthy (e.g. a dead sampler)."""
        return ()


class NullMeter(Meter):
    """Stands in for hardware that is missing, so the results say so explicitly."""

    def __init__(self, kind: Kind, reason: str):
        self.kind = kind
        self.reason = reason
        self.name = f"null-{kind}"

    def begin(self) -> None:
        return None

    def end(self, snapshot, start_unix_s, end_unix_s) -> list[ComponentEnergy]:
        return [ComponentEnergy(self.kind, self.kind, None, "none", self.name)]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "method": "none", "reason": self.reason}


@dataclass
class Window:
    """Handle yielded by ``MeterSet.window``; ``measurement`` is set when the block exits."""

    label: str
    measurement: Optional[Measurement] = None
    _snapshots: list[Any] = field(default_factory=list, repr=False)
    _t0: float = 0.0
    _unix0: float = 0.0


class MeterSet:
    """A set of meters read together at the edges of named windows.

    ``sync`` is called before every edge (e.g. ``torch.cuda.synchronize``) so that work
    queued on a device is counted in the window that launched it.
    """

    def __init__(self, meters: list[Meter], sync: Optional[Callable[[], None]] = None):
        self.meters = list(meters)
        self.sync = sync or (lambda: None)
        self._open: dict[str, Window] = {}
        self._started = False

    def start(self) -> None:
        if self._started:
            return
        started = []
        try:
            for m in self.meters:
                m.start()
                started.append(m)
        except BaseException:
            for m in reversed(started):
                m.close()
            raise
        self._started = True

    def close(self) -> None:
        errors = []
        for m in reversed(self.meters):
            try:
                m.close()
            except Exception as exc:  # close every meter even if one fails
                errors.append(f"{m.name}: {exc}")
        self._started = False
        if errors:
            raise MeterError("closing meters failed: " + "; ".join(errors))

    def __enter__(self) -> "MeterSet":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def resolution_s(self) -> float:
        return max((m.resolution_s for m in self.meters), default=0.0)

    def begin_window(self, label: str) -> Window:
        if label in self._open:
            raise MeterError(f"window '{label}' is already open")
        self.start()
        self.sync()
        w = Window(label)
        w._unix0 = time.time()
        w._t0 = time.perf_counter()
        w._snapshots = [m.begin() for m in self.meters]
        self._open[label] = w
        return w

    def end_window(self, label: str) -> Measurement:
        w = self._open.pop(label, None)
        if w is None:
            raise MeterError(f"window '{label}' is not open")
        self.sync()
        duration_s = time.perf_counter() - w._t0
        end_unix = w._unix0 + duration_s
        components: list[ComponentEnergy] = []
        for meter, snap in zip(self.meters, w._snapshots):
            components.extend(meter.end(snap, w._unix0, end_unix))
        flags = ("short-window",) if duration_s < self.resolution_s else ()
        flags += tuple(f for m in self.meters for f in m.flags())
        w.measurement = Measurement(label, w._unix0, duration_s, tuple(components), flags)
        return w.measurement

    def cancel_window(self, label: str) -> None:
        self._open.pop(label, None)

    @contextlib.contextmanager
    def window(self, label: str) -> Iterator[Window]:
        w = self.begin_window(label)
        try:
            yield w
        except BaseException:
            self.cancel_window(label)
            raise
        self.end_window(label)

    def measure_idle(self, seconds: float):
        """Idle power of every component over ``seconds``; see carbonbench.meters.idle."""
        from carbonbench.meters.idle import measure_idle

        return measure_idle(self, seconds)

    def describe(self) -> list[dict[str, Any]]:
        return [m.describe() for m in self.meters]

    def timeline(self) -> list[dict[str, Any]]:
        rows = [row for m in self.meters for row in m.timeline()]
        return sorted(rows, key=lambda r: r["unix_s"])

    def drain_timeline(self, before_unix_s: Optional[float] = None) -> list[dict[str, Any]]:
        """Every meter's samples so far, time-ordered, handed over so that memory stays flat.

        Only call it between windows: power samples before ``before_unix_s`` (default:
        now) can no longer be integrated afterwards.
        """
        cutoff = time.time() if before_unix_s is None else before_unix_s
        rows = [row for m in self.meters for row in m.drain_timeline(cutoff)]
        return sorted(rows, key=lambda r: r["unix_s"])
