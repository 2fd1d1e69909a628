"""CPU package and DRAM energy from RAPL counters under /sys/class/powercap.

Each domain directory (``intel-rapl:N`` for package N, ``intel-rapl:N:M`` for its
sub-domains; ``amd-rapl`` where a kernel names them so) holds ``name``, ``energy_uj``
and ``max_energy_range_uj``. Components are the packages and the ``dram`` domains only:
``core`` and ``uncore`` are parts of their package, and ``psys`` covers the whole
platform, so adding any of them would count joules twice. ``intel-rapl-mmio`` repeats
the package domain through another interface and is skipped for the same reason.

The counters wrap at ``max_energy_range_uj``. Every read (window edges and the sampler)
adds ``(raw - last_raw) mod (max + 1)`` to a running total, so a window may span any
number of wraps as long as some read happens at least once per wrap period (minutes at
full load; the sampler reads every ``sample_interval_s``).
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from carbonbench.errors import MeterError
from carbonbench.meters.base import ComponentEnergy, Kind
from carbonbench.meters.sampler import SampledMeter

POWERCAP_ROOT = Path("/sys/class/powercap")
_DOMAIN_DIR = re.compile(r"^(intel|amd)-rapl:(\d+)(?::(\d+))?$")


@dataclass(frozen=True)
class RaplDomain:
    path: Path
    name: str  # the kernel's: "package-0", "dram"...
    component: str  # ours: "cpu-package0", "dram0"
    kind: Kind
    max_energy_range_uj: int


@dataclass(frozen=True)
class RaplDiscovery:
    root: Path
    domains: tuple[RaplDomain, ...]
    problems: tuple[str, ...]  # why domains that exist could not be used

    @property
    def permission_denied(self) -> bool:
        return any("permission denied" in p for p in self.problems)


def _read_text(path: Path) -> str:
    """Every sysfs read goes through here, so tests can fail it at one place."""
    with open(path) as f:
        return f.read()


def _read_int(path: Path) -> int:
    return int(_read_text(path).strip())


def discover(root: Path = POWERCAP_ROOT) -> RaplDiscovery:
    """The package and DRAM domains under ``root`` whose counters can be read now."""
    root = Path(root)
    domains: list[RaplDomain] = []
    problems: list[str] = []
    try:
        entries = sorted(root.iterdir()) if root.is_dir() else []
    except OSError as exc:
        return RaplDiscovery(root, (), (f"{root}: {_why(exc)}",))
    seen: set[str] = set()
    for d in entries:
        m = _DOMAIN_DIR.match(d.name)
        if not m:
            continue
        package, sub = int(m.group(2)), m.group(3)
        try:
            name = _read_text(d / "name").strip()
        except OSError as exc:
            problems.append(f"{d / 'name'}: {_why(exc)}")
            continue
        if sub is None and name.startswith("package"):
            index = name.split("-", 1)[1] if "-" in name else str(package)
            component, kind = f"cpu-package{index}", "cpu"
        elif name == "dram":
            parent = _package_index(d.parent / f"{m.group(1)}-rapl:{package}") if sub is not None else None
            component, kind = f"dram{parent if parent is not None else package}", "dram"
        else:
            continue  # core, uncore (inside a package) and psys (the whole platform)
        if component in seen:  # the same domain exposed under two prefixes
            continue
        try:
            max_uj = _read_int(d / "max_energy_range_uj")
            _read_int(d / "energy_uj")
        except (OSError, ValueError) as exc:
            problems.append(f"{d / 'energy_uj'}: {_why(exc)}")
            continue
        seen.add(component)
        domains.append(RaplDomain(d, name, component, kind, max_uj))
    return RaplDiscovery(root, tuple(domains), tuple(problems))


def _package_index(parent: Path) -> Optional[str]:
    try:
        name = _read_text(parent / "name").strip()
    except OSError:
        return None
    return name.split("-", 1)[1] if name.startswith("package-") else None


def _why(exc: BaseException) -> str:
    if isinstance(exc, PermissionError):
        return "permission denied"
    return f"{type(exc).__name__}: {exc}"


def wrapped_delta(start_uj: int, end_uj: int, max_energy_range_uj: int) -> int:
    """Counter increase from start to end, across at most one wrap."""
    return (end_uj - start_uj) % (max_energy_range_uj + 1)


class RaplMeter(SampledMeter):
    """Counter energy for each CPU package and DRAM domain that RAPL exposes."""

    name = "rapl"
    resolution_s = 0.001  # RAPL updates about every millisecond

    def __init__(
        self,
        domains: tuple[RaplDomain, ...] | list[RaplDomain],
        *,
        sample_interval_s: Optional[float] = 0.1,
        root: Path = POWERCAP_ROOT,
    ):
        if not domains:
            raise MeterError("RAPL: no readable package or DRAM domain")
        self.domains = tuple(domains)
        self.root = Path(root)
        self._lock = threading.Lock()
        self._last_raw: list[Optional[int]] = [None] * len(self.domains)
        self._total_uj = [0] * len(self.domains)
        self._poll()
        self.sample_interval_s = sample_interval_s
        self._init_sampler(self._sample, sample_interval_s)
        self._prev_sample: Optional[tuple[float, list[int]]] = None

    @classmethod
    def discover(cls, root: Path = POWERCAP_ROOT, **kwargs) -> "RaplMeter":
        found = discover(root)
        if not found.domains:
            raise MeterError("RAPL: " + ("; ".join(found.problems) or f"no domains under {root}"))
        return cls(found.domains, root=root, **kwargs)

    def _poll(self) -> tuple[float, list[int]]:
        """Read every counter and fold it into the running (unwrapped) totals."""
        with self._lock:
            now = time.time()
            for i, d in enumerate(self.domains):
                try:
                    raw = _read_int(d.path / "energy_uj")
                except (OSError, ValueError) as exc:
                    raise MeterError(f"RAPL: reading {d.path / 'energy_uj'}: {_why(exc)}") from exc
                last = self._last_raw[i]
                if last is not None:
                    self._total_uj[i] += wrapped_delta(last, raw, d.max_energy_range_uj)
                self._last_raw[i] = raw
            return now, list(self._total_uj)

    def _sample(self) -> list[dict[str, Any]]:
        now, totals = self._poll()
        prev, self._prev_sample = self._prev_sample, (now, totals)
        if prev is None or now <= prev[0]:
            return []
        dt = now - prev[0]
        return [
            {"unix_s": now, "component": d.component, "kind": d.kind, "power_w": (t - p) / 1e6 / dt}
            for d, t, p in zip(self.domains, totals, prev[1])
        ]

    def begin(self) -> Any:
        return self._poll()[1]

    def end(self, snapshot, start_unix_s, end_unix_s) -> list[ComponentEnergy]:
        totals = self._poll()[1]
        return [
            ComponentEnergy(d.component, d.kind, (after - before) / 1e6, "counter", self.name)
            for d, before, after in zip(self.domains, snapshot, totals)
        ]

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": "cpu+dram" if any(d.kind == "dram" for d in self.domains) else "cpu",
            "method": "counter",
            "resolution_s": self.resolution_s,
            "root": str(self.root),
            "domains": [
                {
                    "component": d.component,
                    "name": d.name,
                    "path": str(d.path),
                    "max_energy_range_uj": d.max_energy_range_uj,
                }
                for d in self.domains
            ],
            "wrap_handling": "(end - start) mod (max_energy_range_uj + 1) between consecutive reads",
            "sampler": self.sampler_stats(),
        }
