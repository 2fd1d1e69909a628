"""The window API: nesting, null meters, flags, sync at edges, and the idle baseline."""

import time

import pytest
from support.meters import ConstantMeter

from carbonbench.errors import MeterError
from carbonbench.meters.base import ComponentEnergy, Measurement, MeterSet, NullMeter
from carbonbench.meters.idle import IdleBaseline, measure_idle


def approx(x):
    return pytest.approx(x, rel=1e-4)


def test_window_yields_duration_energy_and_method_per_component():
    ms = MeterSet([ConstantMeter("gpu0", "gpu", 200.0, "counter"), ConstantMeter("cpu", "cpu", 20.0, "estimated")])
    with ms.window("w") as w:
        time.sleep(0.02)
    m = w.measurement
    assert m.label == "w" and m.duration_s >= 0.02
    assert m.component("gpu0").energy_j == approx(200.0 * m.duration_s)
    assert m.energy_by_kind("gpu") == approx(200.0 * m.duration_s)
    assert m.energy_j == approx(220.0 * m.duration_s)
    assert m.method == "estimated"  # a total is as good as its weakest part
    d = m.as_dict()
    assert d["components"]["gpu0"] == {
        "kind": "gpu",
        "energy_j": approx(200.0 * m.duration_s),
        "method": "counter",
        "meter": "const-gpu0",
    }
    assert d["method"] == "estimated" and d["flags"] == []


def test_windows_nest_and_each_measures_its_own_span():
    ms = MeterSet([ConstantMeter(power_w=100.0)])
    with ms.window("outer") as outer:
        time.sleep(0.01)
        with ms.window("inner") as inner:
            time.sleep(0.02)
        time.sleep(0.01)
    o, i = outer.measurement, inner.measurement
    assert o.duration_s > i.duration_s >= 0.02
    assert o.start_unix_s <= i.start_unix_s
    assert i.start_unix_s + i.duration_s <= o.start_unix_s + o.duration_s + 1e-3
    assert o.energy_j > i.energy_j


def test_overlapping_windows_can_end_in_any_order():
    ms = MeterSet([ConstantMeter()])
    ms.begin_window("a")
    ms.begin_window("b")
    a = ms.end_window("a")
    b = ms.end_window("b")
    assert a.label == "a" and b.label == "b"


def test_null_meter_says_what_is_missing_and_contributes_no_energy():
    ms = MeterSet([ConstantMeter(), NullMeter("gpu", "no NVIDIA driver")])
    with ms.window("w") as w:
        pass
    gpu = w.measurement.component("gpu")
    assert gpu.energy_j is None and gpu.method == "none" and gpu.meter == "null-gpu"
    assert w.measurement.method == "counter"  # unknown parts don't drag the method down
    assert w.measurement.energy_by_kind("gpu") is None
    assert ms.describe()[1] == {"name": "null-gpu", "kind": "gpu", "method": "none", "reason": "no NVIDIA driver"}


def test_all_null_measurement_has_no_energy_and_method_none():
    m = Measurement("x", 0.0, 1.0, (ComponentEnergy("gpu", "gpu", None, "none", "null-gpu"),))
    assert m.energy_j is None and m.method == "none"


def test_windows_shorter_than_the_coarsest_meter_are_flagged():
    ms = MeterSet([ConstantMeter(resolution_s=0.0), ConstantMeter("gpu0", "gpu", resolution_s=0.1)])
    assert ms.resolution_s == 0.1
    with ms.window("short") as w:
        pass
    assert "short-window" in w.measurement.flags
    with ms.window("long") as w:
        time.sleep(0.11)
    assert "short-window" not in w.measurement.flags


def test_meter_problems_are_flagged_on_every_window():
    meter = ConstantMeter()
    meter.problems = ("sampler-stopped:const",)
    ms = MeterSet([meter])
    with ms.window("w") as w:
        pass
    assert w.measurement.flags == ("sampler-stopped:const",)


def test_sync_runs_before_both_edges():
    calls = []
    ms = MeterSet([ConstantMeter()], sync=lambda: calls.append(time.perf_counter()))
    with ms.window("w"):
        assert len(calls) == 1
    assert len(calls) == 2


def test_an_exception_in_the_block_cancels_the_window_and_propagates():
    ms = MeterSet([ConstantMeter()])
    with pytest.raises(ZeroDivisionError):
        with ms.window("w") as w:
            raise ZeroDivisionError
    assert w.measurement is None
    with ms.window("w"):  # the label is free again
        pass


def test_window_label_misuse_is_a_meter_error():
    ms = MeterSet([ConstantMeter()])
    ms.begin_window("w")
    with pytest.raises(MeterError, match="already open"):
        ms.begin_window("w")
    with pytest.raises(MeterError, match="not open"):
        ms.end_window("nope")


def test_start_is_idempotent_and_close_closes_every_meter():
    a, b = ConstantMeter("a"), ConstantMeter("b")
    with MeterSet([a, b]) as ms:
        ms.start()
        with ms.window("w"):
            pass
    assert (a.started, b.started, a.closed, b.closed) == (1, 1, 1, 1)


def test_a_meter_that_fails_to_start_closes_those_already_started():
    class Broken(ConstantMeter):
        def start(self):
            raise MeterError("no")

    a = ConstantMeter("a")
    with pytest.raises(MeterError):
        MeterSet([a, Broken("b")]).start()
    assert a.closed == 1


def test_close_closes_every_meter_and_reports_all_failures():
    class Broken(ConstantMeter):
        def close(self):
            super().close()
            raise MeterError(f"{self.component} failed")

    a, b, c = Broken("a"), ConstantMeter("b"), Broken("c")
    ms = MeterSet([a, b, c])
    with pytest.raises(MeterError, match="a failed.*|c failed") as info:
        ms.close()
    assert "a failed" in str(info.value) and "c failed" in str(info.value)
    assert (a.closed, b.closed, c.closed) == (1, 1, 1)


def test_timeline_merges_meters_in_time_order():
    class Timed(ConstantMeter):
        def __init__(self, name, times):
            super().__init__(name)
            self.times = times

        def timeline(self):
            return [{"unix_s": t, "component": self.component, "power_w": 1.0} for t in self.times]

    ms = MeterSet([Timed("a", [1.0, 3.0]), Timed("b", [2.0])])
    assert [(r["unix_s"], r["component"]) for r in ms.timeline()] == [(1.0, "a"), (2.0, "b"), (3.0, "a")]


def test_integrated_figure_is_kept_next_to_the_counter_figure():
    m = Measurement("w", 0.0, 1.0, (ComponentEnergy("gpu0", "gpu", 100.0, "counter", "nvml", integrated_j=99.0),))
    assert m.as_dict()["components"]["gpu0"]["integrated_j"] == 99.0


# -- idle baseline -----------------------------------------------------------------
def _measurement(duration_s, **energies):
    comps = tuple(
        ComponentEnergy(
            name, "gpu" if name.startswith("gpu") else "cpu", e, "counter" if e is not None else "none", "m"
        )
        for name, e in energies.items()
    )
    return Measurement("w", 0.0, duration_s, comps)


def test_measure_idle_gives_power_per_component():
    ms = MeterSet([ConstantMeter("gpu0", "gpu", 60.0), NullMeter("dram", "none here")])
    idle = measure_idle(ms, 0.02)
    assert idle.duration_s >= 0.02
    assert idle.power_w["gpu0"] == approx(60.0)
    assert idle.power_w["dram"] is None
    assert idle.method == {"gpu0": "counter", "dram": "none"}
    d = idle.as_dict()
    assert d["total_power_w"] == approx(60.0) and d["power_w"]["dram"] is None
    assert IdleBaseline.from_dict(d).power_w == idle.power_w


def test_a_run_session_measures_idle_with_the_same_routine(tmp_path):
    from carbonbench.distributed import Single
    from carbonbench.run_record import RunRecord
    from carbonbench.runfile import RunFile
    from carbonbench.session import Session

    ms = MeterSet([ConstantMeter("gpu0", "gpu", 60.0)])
    with Session(ms, Single(), RunFile(tmp_path / "run.json", RunRecord(run_id="r"))) as session:
        assert session.idle(0.01).power_w["gpu0"] == approx(60.0)


def test_active_energy_is_total_minus_idle_per_component_never_negative():
    idle = IdleBaseline(5.0, {"gpu0": 50.0, "cpu": 20.0})
    m = _measurement(10.0, gpu0=1500.0, cpu=150.0)  # cpu drew less than idle
    assert idle.active_energy_by_component(m) == {"gpu0": 1000.0, "cpu": 0.0}
    assert idle.active_energy_j(m) == 1000.0


def test_active_energy_is_unknown_when_a_measured_component_has_no_idle_figure():
    idle = IdleBaseline(5.0, {"gpu0": 50.0, "cpu": None})
    m = _measurement(10.0, gpu0=1500.0, cpu=300.0)
    assert idle.active_energy_by_component(m)["cpu"] is None
    assert idle.active_energy_j(m) is None


def test_active_energy_ignores_components_that_measured_nothing():
    idle = IdleBaseline(5.0, {"gpu0": 50.0, "dram": None})
    m = _measurement(10.0, gpu0=1500.0, dram=None)
    assert idle.active_energy_j(m) == 1000.0
    assert idle.active_energy_j(_measurement(10.0, dram=None)) is None


def test_idle_needs_a_positive_duration():
    with pytest.raises(ValueError):
        measure_idle(MeterSet([ConstantMeter()]), 0)
