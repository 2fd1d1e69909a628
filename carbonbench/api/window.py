"""``carbonbench.measure``: the energy, CO2e and cost of any block of Python code.

    with carbonbench.measure("my-step", device="cuda") as m:
        train_step()
    m.energy_j, m.method, m.components, m.co2e_g, m.usd

    @carbonbench.measure("my-step")
    def train_step(): ...
    train_step(); train_step.last.energy_j

It is the window API of ``carbonbench.meters`` (``MeterSet.begin_window``/``end_window``)
behind a small surface: the meters a run would pick for the device, the device
synchronised at both edges, and a frozen ``WindowResult`` whose every energy figure
carries its method. Where nothing could be measured the figures are None and the method
"none", never a made-up number. An exception inside the block propagates; the window is
still closed and recorded, with status "error" (or "interrupted" for Ctrl-C).

Outside a session each window borrows a process-wide meter set, started when the first
window opens and closed when the last one closes, so nested windows share one set of
meters and samplers. ``carbonbench.measure_session`` (carbonbench.api.session) keeps
one set open for many windows and writes them to a run file.
"""

from __future__ import annotations

import functools
import itertools
import threading
import time
import warnings
from typing import Any, Callable, Mapping, Optional, Protocol, TypeVar

import torch

from carbonbench.api.result import ComponentResult, WindowResult, result_of
from carbonbench.api.settings import Settings, meter_set
from carbonbench.errors import MeterError, UserError
from carbonbench.meters.base import MeterSet
from carbonbench.session import Interrupted

F = TypeVar("F", bound=Callable[..., Any])


# -- one window ---------------------------------------------------------------------------
class Owner(Protocol):
    """Who opens and closes a ``Measure``'s windows: the process-wide meters or a session."""

    settings: Settings

    def begin(self, window: "Measure") -> Optional[str]: ...
    def end(self, window: "Measure", label: Optional[str], status: str, error: Optional[str]) -> WindowResult: ...


_labels = itertools.count()


def unique_label(name: str) -> str:
    # MeterSet refuses two open windows of one label: nested windows of one name get their own.
    return f"{name}#{next(_labels)}"


def status_of(exc: Optional[BaseException]) -> tuple[str, Optional[str]]:
    if exc is None:
        return "ok", None
    if isinstance(exc, (KeyboardInterrupt, Interrupted)):
        return "interrupted", type(exc).__name__
    text = str(exc).strip().splitlines()
    return "error", f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


class Measure:
    """A window: ``with`` it (``as m``: the same object), or decorate a function with it.

    After the block, ``result`` is the ``WindowResult`` and its fields read through
    (``m.energy_j``); while the block runs they raise, since nothing is measured yet.
    Used as a decorator, every call is a window of its own, and the wrapper keeps the
    latest in ``.last``.
    """

    def __init__(
        self,
        name: str,
        owner: Owner,
        *,
        tokens: Optional[int] = None,
        steps: int = 1,
        batch_size: int = 0,
        seq_len: int = 0,
    ):
        if not isinstance(name, str) or not name.strip():
            raise UserError(f"carbonbench.measure: a window needs a non-empty name (got {name!r})")
        for key, value in (("tokens", tokens), ("steps", steps), ("batch_size", batch_size), ("seq_len", seq_len)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise UserError(f"carbonbench.measure: {key} must be a whole number >= 0 (got {value!r})")
        self.name, self.owner = name, owner
        self.tokens, self.steps, self.batch_size, self.seq_len = tokens, steps, batch_size, seq_len
        self._result: Optional[WindowResult] = None
        self._label: Optional[str] = None
        self._open = False
        self.t0_unix_s = 0.0
        self.t0 = 0.0

    def __enter__(self) -> "Measure":
        if self._open:
            raise RuntimeError(f"window {self.name!r} is already open: call measure() again for another")
        self._result, self._open = None, True
        self.t0_unix_s, self.t0 = time.time(), time.perf_counter()
        self._label = self.owner.begin(self)
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self._open = False
        self._result = self.owner.end(self, self._label, *status_of(exc))
        return False  # the exception, if any, is the caller's

    def __call__(self, fn: F) -> F:
        @functools.wraps(fn)
        def measured(*args: Any, **kwargs: Any) -> Any:
            window = Measure(
                self.name,
                self.owner,
                tokens=self.tokens,
                steps=self.steps,
                batch_size=self.batch_size,
                seq_len=self.seq_len,
            )
            try:
                with window:
                    return fn(*args, **kwargs)
            finally:
                measured.last = window._result  # type: ignore[attr-defined]

        measured.last = None  # type: ignore[attr-defined]
        return measured  # type: ignore[return-value]

    # -- the result, read through -----------------------------------------------------------
    @property
    def result(self) -> WindowResult:
        if self._result is None:
            raise RuntimeError(f"window {self.name!r} has not closed yet: its figures exist once the block ends")
        return self._result

    @property
    def status(self) -> str:
        return self.result.status

    @property
    def error(self) -> Optional[str]:
        return self.result.error

    @property
    def duration_s(self) -> float:
        return self.result.duration_s

    @property
    def energy_j(self) -> Optional[float]:
        return self.result.energy_j

    @property
    def method(self) -> str:
        return self.result.method

    @property
    def components(self) -> Mapping[str, ComponentResult]:
        return self.result.components

    @property
    def power_w(self) -> Optional[float]:
        return self.result.power_w

    @property
    def co2e_g(self) -> Optional[float]:
        return self.result.co2e_g

    @property
    def usd(self) -> Optional[float]:
        return self.result.usd

    @property
    def grid_g_per_kwh(self) -> float:
        return self.result.grid_g_per_kwh

    @property
    def grid_source(self) -> str:
        return self.result.grid_source

    @property
    def flags(self) -> tuple[str, ...]:
        return self.result.flags

    @property
    def joules_per_token(self) -> Optional[float]:
        return self.result.joules_per_token

    @property
    def active_energy_j(self) -> Optional[float]:
        return self.result.active_energy_j

    def __repr__(self) -> str:
        state = "open" if self._open else (repr(self._result) if self._result else "not started")
        return f"Measure({self.name!r}, {state})"


def meter_failure(what: str, exc: BaseException) -> str:
    # Measuring must never break the code it measures: the window is recorded as unmeasured.
    message = f"{what}: {type(exc).__name__}: {exc}"
    warnings.warn(f"carbonbench.measure: {message}; the window is recorded without energy", stacklevel=4)
    return message


# -- windows outside a session ------------------------------------------------------------
class SharedMeters:
    """One meter set per settings for the whole process, open while any window is."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sets: dict[tuple, list] = {}  # key -> [MeterSet, open windows]

    def acquire(self, settings: Settings) -> MeterSet:
        key = (str(settings.device), settings.measurement)
        with self._lock:
            entry = self._sets.get(key)
            if entry is None:
                meters = meter_set(settings)
                meters.start()
                entry = self._sets[key] = [meters, 0]
            entry[1] += 1
            return entry[0]

    def release(self, settings: Settings) -> None:
        key = (str(settings.device), settings.measurement)
        with self._lock:
            entry = self._sets.get(key)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] <= 0:
                del self._sets[key]
                entry[0].close()  # joins the samplers; raises MeterError if one had failed


SHARED = SharedMeters()


class Standalone:
    """The owner of windows opened by ``carbonbench.measure`` outside any session."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._meters: dict[str, MeterSet] = {}
        self._failed: dict[str, str] = {}

    def begin(self, window: Measure) -> Optional[str]:
        label = unique_label(window.name)
        try:
            meters = SHARED.acquire(self.settings)
        except MeterError as exc:
            self._failed[label] = meter_failure("starting the meters", exc)
            return label
        try:
            meters.begin_window(label)
        except MeterError as exc:
            SHARED.release(self.settings)
            self._failed[label] = meter_failure("opening the window", exc)
            return label
        self._meters[label] = meters
        return label

    def end(self, window: Measure, label: Optional[str], status: str, error: Optional[str]) -> WindowResult:
        meters = self._meters.pop(label or "", None)
        failed = self._failed.pop(label or "", None)
        meas = None
        if meters is not None:
            try:
                meas = meters.end_window(label)
            except MeterError as exc:
                failed = meter_failure("reading the meters", exc)
            finally:
                try:
                    SHARED.release(self.settings)
                except MeterError as exc:
                    failed = failed or meter_failure("closing the meters", exc)
        if failed is not None and status == "ok":
            status, error = "meter-error", failed
        return result_of(window, self.settings, meas, status, error)


def measure(
    name: str,
    *,
    device: "str | torch.device" = "auto",
    tokens: Optional[int] = None,
    steps: int = 1,
    country: Optional[str] = None,
    region: Optional[str] = None,
    grid_g_per_kwh: Optional[float] = None,
    pue: float = 1.0,
    usd_per_kwh: float = 0.15,
    usd_per_device_hour: float = 0.0,
    sample_interval_s: float = 0.1,
    cpu_tdp_w: Optional[float] = None,
) -> Measure:
    """A measured window around a block (``with``) or every call of a function (decorator).

    device: auto (CUDA when torch sees it, else the CPU), cpu, cuda or cuda:N; every GPU
    CUDA can see is metered and synchronised at both edges. Grid: ``grid_g_per_kwh``, else
    ``country`` (ISO alpha-3) and ``region`` from codecarbon's data, else the USA, as a
    scenario's default. ``tokens`` gives J/token. Bad settings raise ``UserError`` here.
    """
    settings = Settings.make(
        device,
        country=country,
        region=region,
        grid_g_per_kwh=grid_g_per_kwh,
        pue=pue,
        usd_per_kwh=usd_per_kwh,
        usd_per_device_hour=usd_per_device_hour,
        sample_interval_s=sample_interval_s,
        cpu_tdp_w=cpu_tdp_w,
    )
    return Measure(name, Standalone(settings), tokens=tokens, steps=steps)
