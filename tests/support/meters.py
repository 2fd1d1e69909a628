"""A meter of constant power, for tests that need known energies from a real window API.

Energy is power x window duration, exactly; with ``sample_interval_s`` the meter also hands
the timeline a sample of that power every interval, as a sampling meter would.
"""

from __future__ import annotations

import time
from typing import Optional

from carbonbench.meters.base import ComponentEnergy, Meter, MeterSet


class ConstantMeter(Meter):
    """A meter whose component draws a fixed power: energy = power x window duration.

    Edge times are unix seconds (~1.8e9), so their difference carries ~1e-7 s of float
    rounding: compare energies with a relative tolerance of 1e-4. ``started`` and
    ``closed`` count the calls, for tests of the meter set's life cycle.
    """

    def __init__(
        self,
        component="cpu",
        kind="cpu",
        power_w=10.0,
        method="counter",
        resolution_s=0.0,
        sample_interval_s: Optional[float] = None,
    ):
        self.component, self.kind, self.power_w, self.method = component, kind, power_w, method
        self.resolution_s, self.sample_interval_s = resolution_s, sample_interval_s
        self.name = f"const-{component}"
        self.started = self.closed = 0
        self.problems = ()
        self._sampled_to: Optional[float] = None  # unix time of the last sample handed over

    def start(self):
        self.started += 1

    def close(self):
        self.closed += 1

    def begin(self):
        if self.sample_interval_s and self._sampled_to is None:
            self._sampled_to = time.time()
        return "snap"

    def end(self, snapshot, start_unix_s, end_unix_s):
        assert snapshot == "snap"
        return [
            ComponentEnergy(
                self.component, self.kind, self.power_w * (end_unix_s - start_unix_s), self.method, self.name
            )
        ]

    def describe(self):
        return {"name": self.name, "kind": self.kind, "method": self.method}

    def drain_timeline(self, before_unix_s):
        if not self.sample_interval_s or self._sampled_to is None:
            return []
        rows = []
        t = self._sampled_to + self.sample_interval_s
        while t < before_unix_s:
            rows.append({"unix_s": t, "component": self.component, "kind": self.kind, "power_w": self.power_w})
            t += self.sample_interval_s
        self._sampled_to = t - self.sample_interval_s
        return rows

    def flags(self):
        return self.problems


def constant_meters(cpu_w: float = 20.0, dram_w: float = 5.0, sample_interval_s: Optional[float] = 0.01) -> MeterSet:
    """A CPU and a DRAM component of constant power, read as counters, sampled for the timeline."""
    return MeterSet(
        [
            ConstantMeter("cpu", "cpu", cpu_w, "counter", sample_interval_s=sample_interval_s),
            ConstantMeter("dram", "dram", dram_w, "counter", sample_interval_s=sample_interval_s),
        ]
    )
