"""Idle baseline: what each component draws doing nothing, to split total from active energy.

Measured once before a sweep, in a window where this process only sleeps (other
processes and the OS keep running, as they do during the sweep). Active energy of a
window is, per component, total minus idle power x duration, never below zero: a
component that happens to draw less than its idle figure did no extra work, it did not
give energy back.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Optional

from carbonbench.meters.base import Measurement


@dataclass(frozen=True)
class IdleBaseline:
    duration_s: float
    power_w: dict[str, Optional[float]]  # per component; None where the meter could not say
    method: dict[str, str] = field(default_factory=dict)
    start_unix_s: float = 0.0
    flags: tuple[str, ...] = ()

    @classmethod
    def from_measurement(cls, m: Measurement) -> "IdleBaseline":
        power = {
            c.component: (c.energy_j / m.duration_s if c.energy_j is not None and m.duration_s > 0 else None)
            for c in m.components
        }
        return cls(m.duration_s, power, {c.component: c.method for c in m.components}, m.start_unix_s, m.flags)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "IdleBaseline":
        return cls(
            d["duration_s"],
            dict(d["power_w"]),
            dict(d.get("method", {})),
            d.get("start_unix_s", 0.0),
            tuple(d.get("flags", ())),
        )

    def active_energy_by_component(self, m: Measurement) -> dict[str, Optional[float]]:
        """Energy above idle for each component that reported energy; None where idle is unknown."""
        out: dict[str, Optional[float]] = {}
        for c in m.components:
            if c.energy_j is None:
                continue
            idle_w = self.power_w.get(c.component)
            if idle_w is None or (isinstance(idle_w, float) and math.isnan(idle_w)):
                out[c.component] = None
            else:
                out[c.component] = max(c.energy_j - idle_w * m.duration_s, 0.0)
        return out

    def active_energy_j(self, m: Measurement) -> Optional[float]:
        """Sum of active energies; None when any measured component lacks an idle figure,
        since a partial sum would pass for the whole."""
        parts = self.active_energy_by_component(m)
        if not parts or any(v is None for v in parts.values()):
            return None
        return sum(parts.values())

    @property
    def total_power_w(self) -> Optional[float]:
        known = [p for p in self.power_w.values() if p is not None]
        return sum(known) if known else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "duration_s": self.duration_s,
            "start_unix_s": self.start_unix_s,
            "power_w": dict(self.power_w),
            "method": dict(self.method),
            "total_power_w": self.total_power_w,
            "flags": list(self.flags),
        }


def measure_idle(meters, seconds: float, label: str = "idle-baseline") -> IdleBaseline:
    """Sleep for ``seconds`` inside a window and return the idle powers.

    ``meters`` is anything with ``window(label)`` whose handle holds the ``measurement``
    after the block: a MeterSet, or a run's Session (which sums the window over ranks).
    """
    if seconds <= 0:
        raise ValueError(f"idle baseline needs a positive duration (got {seconds})")
    with meters.window(label) as w:
        time.sleep(seconds)
    return IdleBaseline.from_measurement(w.measurement)
