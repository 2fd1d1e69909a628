"""The CPU and DRAM estimators: utilisation, TDP lookup, the power model, the timeline."""

import time
from collections import namedtuple

import pytest

from carbonbench.meters import cpu
from carbonbench.meters.base import MeterSet
from carbonbench.meters.cpu import (
    CpuEstimateMeter,
    CpuTopology,
    DramEstimateMeter,
    cpu_topology,
    lookup_tdp,
    machine_tdp,
    utilisation,
)

Times = namedtuple("Times", "user nice system idle iowait irq softirq steal guest guest_nice")


def times(user=0.0, system=0.0, idle=0.0, iowait=0.0, steal=0.0, guest=0.0):
    return Times(user, 0.0, system, idle, iowait, 0.0, 0.0, steal, guest, 0.0)


def test_utilisation_is_the_busy_share_between_snapshots():
    assert utilisation(times(), times(user=3.0, system=1.0, idle=4.0)) == pytest.approx(0.5)


def test_iowait_and_steal_are_not_busy_and_guest_is_not_counted_twice():
    # guest time is already inside user; steal is the host running someone else
    assert utilisation(times(), times(user=2.0, guest=2.0, iowait=1.0, steal=1.0)) == pytest.approx(0.5)


def test_utilisation_of_no_elapsed_time_is_zero():
    assert utilisation(times(user=1.0), times(user=1.0)) == 0.0


def test_power_model_spans_a_tenth_of_tdp_to_tdp():
    meter = CpuEstimateMeter(100.0)
    assert meter.power_w(0.0) == pytest.approx(10.0)
    assert meter.power_w(0.5) == pytest.approx(55.0)
    assert meter.power_w(1.0) == pytest.approx(100.0)


def test_window_energy_is_model_power_times_duration(monkeypatch):
    snapshots = iter([times(user=0.0, idle=0.0), times(user=1.0, idle=3.0)])  # 25 % busy
    monkeypatch.setattr(cpu.psutil, "cpu_times", lambda: next(snapshots))
    meter = CpuEstimateMeter(80.0)
    snap = meter.begin()
    (c,) = meter.end(snap, 100.0, 102.0)
    assert (c.component, c.kind, c.method, c.meter) == ("cpu", "cpu", "estimated", "cpu-estimate")
    assert c.energy_j == pytest.approx(2.0 * 80.0 * (0.1 + 0.9 * 0.25))


# -- TDP ---------------------------------------------------------------------------
def test_tdp_from_codecarbons_table_by_cpu_model():
    tdp = lookup_tdp("Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz", 8)
    assert tdp.tdp_w == 300.0 and "cpu_power.csv" in tdp.source
    assert lookup_tdp("AMD EPYC 9654 96-Core Processor", 8).tdp_w == 360.0


def test_the_longest_matching_model_wins():
    assert lookup_tdp("AMD EPYC 9654P 96-Core Processor", 8).source.endswith("amd epyc 9654p")


def test_unknown_cpu_falls_back_to_four_watts_per_thread():
    tdp = lookup_tdp("Intel(R) Xeon(R) Processor", 6)
    assert tdp.tdp_w == 24.0 and tdp.source.startswith("fallback")


def test_scenario_tdp_overrides_everything():
    tdp = lookup_tdp("Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz", 8, override_w=42.0)
    assert tdp == cpu.CpuTdp(42.0, "scenario: measurement.cpu_tdp_w")


def test_bare_metal_multiplies_a_table_tdp_by_its_sockets():
    two_sockets = CpuTopology("AMD EPYC 9654 96-Core Processor", 384, 2, False)
    tdp = machine_tdp(two_sockets)
    assert tdp.tdp_w == 720.0 and "x 2 packages" in tdp.source


def test_in_a_vm_a_table_tdp_is_stated_as_an_upper_bound():
    vm = CpuTopology("AMD EPYC 9654 96-Core Processor", 8, 1, True)
    tdp = machine_tdp(vm)
    assert tdp.tdp_w == 360.0 and "upper bound" in tdp.source


def test_fallback_and_override_are_already_machine_wide():
    assert machine_tdp(CpuTopology("Mystery CPU", 16, 2, False)).tdp_w == 64.0
    assert machine_tdp(CpuTopology("AMD EPYC 9654", 16, 2, False), override_w=150.0).tdp_w == 150.0


def test_topology_is_read_from_cpuinfo():
    info = "\n".join(
        [
            "processor\t: 0",
            "model name\t: AMD EPYC 7R13 Processor",
            "physical id\t: 0",
            "flags\t\t: fpu sse hypervisor",
            "",
            "processor\t: 1",
            "model name\t: AMD EPYC 7R13 Processor",
            "physical id\t: 1",
            "flags\t\t: fpu sse hypervisor",
        ]
    )
    topo = cpu_topology(info)
    assert (topo.model, topo.packages, topo.virtualised) == ("AMD EPYC 7R13 Processor", 2, True)


def test_describe_states_the_model_and_where_the_tdp_came_from():
    d = CpuEstimateMeter(65.0).describe()
    assert d["method"] == "estimated" and d["tdp_w"] == 65.0
    assert d["tdp_source"] == "scenario: measurement.cpu_tdp_w"
    assert d["model"] == "power = TDP x (0.1 + 0.9 x utilisation)"
    assert {"cpu_model", "threads", "packages", "virtualised", "utilisation", "sampler"} <= set(d)


# -- DRAM --------------------------------------------------------------------------
def test_dram_estimate_is_a_constant_power_per_gb():
    meter = DramEstimateMeter(total_bytes=16 * 10**9)
    assert meter.power_w == pytest.approx(6.0)
    (c,) = meter.end(meter.begin(), 10.0, 12.5)
    assert (c.component, c.kind, c.method) == ("dram", "dram", "estimated")
    assert c.energy_j == pytest.approx(15.0)
    d = meter.describe()
    assert d["power_w"] == pytest.approx(6.0) and "3 W per 8 GB" in d["source"]


# -- timeline ----------------------------------------------------------------------
def test_the_cpu_sampler_records_utilisation_power_and_memory():
    meter = CpuEstimateMeter(50.0, sample_interval_s=0.01)
    ms = MeterSet([meter])
    ms.start()
    time.sleep(0.08)
    ms.close()
    rows = meter.timeline()
    assert len(rows) >= 3
    row = rows[-1]
    assert set(row) == {"unix_s", "component", "kind", "power_w", "cpu_util_pct", "memory_used_bytes", "rss_bytes"}
    assert row["component"] == "cpu" and row["kind"] == "cpu" and 5.0 <= row["power_w"] <= 50.0
    assert 0.0 <= row["cpu_util_pct"] <= 100.0 and row["rss_bytes"] > 0
    assert meter.describe()["sampler"]["enabled"] is True


def test_without_a_sampler_there_is_no_thread_and_no_timeline():
    meter = CpuEstimateMeter(50.0)
    meter.start()
    assert not meter.sampler.running and meter.flags() == ()
    meter.close()
    assert meter.timeline() == []
