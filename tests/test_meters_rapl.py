"""RAPL on a fake /sys/class/powercap tree: domains, wrap-around, permission denied."""

import os
import time
import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from carbonbench import timeline
from carbonbench.errors import MeterError
from carbonbench.meters import rapl, select
from carbonbench.meters.base import MeterSet
from carbonbench.meters.cpu import CpuEstimateMeter, DramEstimateMeter
from carbonbench.meters.host import HostLoadMeter
from carbonbench.meters.rapl import RaplMeter, discover, wrapped_delta
from carbonbench.meters.select import RaplPermissionWarning, build_meter_set
from carbonbench.scenario import MeasurementConfig

MAX_UJ = 262143328850  # a typical package max_energy_range_uj


def domain(root: Path, dirname: str, name: str, energy_uj: int = 0, max_uj: int = MAX_UJ) -> Path:
    d = root / dirname
    d.mkdir(parents=True)
    (d / "name").write_text(name + "\n")
    (d / "energy_uj").write_text(f"{energy_uj}\n")
    (d / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return d


def set_energy(d: Path, energy_uj: int) -> None:
    # Replaced, not rewritten in place: sysfs reads are atomic, and a sampler thread reading
    # a half-written fake would see an empty file that real hardware never shows.
    tmp = d / ".energy_uj.tmp"
    tmp.write_text(f"{energy_uj}\n")
    os.replace(tmp, d / "energy_uj")


@pytest.fixture
def tree(tmp_path):
    """Two packages with core/uncore/dram sub-domains, a psys domain and an mmio twin."""
    root = tmp_path / "powercap"
    root.mkdir()
    (root / "intel-rapl").mkdir()  # the control type directory, not a domain
    d = {
        "pkg0": domain(root, "intel-rapl:0", "package-0", 1_000_000),
        "core0": domain(root, "intel-rapl:0:0", "core", 500_000),
        "uncore0": domain(root, "intel-rapl:0:1", "uncore", 10_000),
        "dram0": domain(root, "intel-rapl:0:2", "dram", 2_000_000, max_uj=65532610987),
        "pkg1": domain(root, "intel-rapl:1", "package-1", 3_000_000),
        "dram1": domain(root, "intel-rapl:1:0", "dram", 4_000_000, max_uj=65532610987),
        "psys": domain(root, "intel-rapl:2", "psys", 9_000_000),
        "mmio": domain(root, "intel-rapl-mmio:0", "package-0", 7_000_000),
    }
    return root, d


def test_discover_keeps_packages_and_dram_only(tree):
    root, _ = tree
    found = discover(root)
    assert [(x.component, x.kind, x.name) for x in found.domains] == [
        ("cpu-package0", "cpu", "package-0"),
        ("dram0", "dram", "dram"),
        ("cpu-package1", "cpu", "package-1"),
        ("dram1", "dram", "dram"),
    ]
    assert found.domains[1].max_energy_range_uj == 65532610987
    assert found.problems == () and not found.permission_denied


def test_amd_rapl_naming_is_accepted(tmp_path):
    domain(tmp_path, "amd-rapl:0", "package-0", 5)
    assert [d.component for d in discover(tmp_path).domains] == ["cpu-package0"]


def test_missing_powercap_means_no_domains_and_no_problem(tmp_path):
    found = discover(tmp_path / "absent")
    assert found.domains == () and found.problems == ()


def test_window_energy_is_the_counter_difference_per_domain(tree):
    root, d = tree
    meter = RaplMeter.discover(root, sample_interval_s=None)
    snap = meter.begin()
    set_energy(d["pkg0"], 1_000_000 + 25_500_000)  # +25.5 J
    set_energy(d["dram0"], 2_000_000 + 3_000_000)  # +3 J
    set_energy(d["pkg1"], 3_000_000 + 10_000_000)  # +10 J
    set_energy(d["core0"], 999_999_999)  # inside package 0: never added
    energies = {c.component: (c.energy_j, c.method, c.kind) for c in meter.end(snap, 0.0, 1.0)}
    assert energies == {
        "cpu-package0": (25.5, "counter", "cpu"),
        "dram0": (3.0, "counter", "dram"),
        "cpu-package1": (10.0, "counter", "cpu"),
        "dram1": (0.0, "counter", "dram"),
    }


def test_a_counter_that_wraps_during_the_window(tree):
    root, d = tree
    set_energy(d["pkg0"], MAX_UJ - 1_000_000)
    meter = RaplMeter.discover(root, sample_interval_s=None)
    snap = meter.begin()
    set_energy(d["pkg0"], 2_000_000)  # 1 J to the top, wrap, 2 J more (+1 uJ for the step to 0)
    pkg0 = meter.end(snap, 0.0, 1.0)[0]
    assert pkg0.energy_j == pytest.approx((1_000_000 + 1 + 2_000_000) / 1e6)


def test_several_wraps_are_counted_when_reads_happen_between_them(tree):
    root, d = tree
    meter = RaplMeter.discover(root, sample_interval_s=None)
    ms = MeterSet([meter])
    ms.begin_window("outer")
    position = 1_000_000
    step = MAX_UJ // 2  # half a lap between reads: each wrap is seen
    for _ in range(6):  # three full laps, read by inner windows' edges
        position = (position + step) % (MAX_UJ + 1)
        set_energy(d["pkg0"], position)
        with ms.window("inner"):
            pass
    m = ms.end_window("outer")
    laps = 6 * step
    assert m.component("cpu-package0").energy_j == pytest.approx(laps / 1e6)


@given(
    max_uj=st.integers(min_value=1, max_value=2**48),
    start=st.integers(min_value=0, max_value=2**48),
    delta=st.integers(min_value=0, max_value=2**48),
)
def test_wrapped_delta_recovers_any_increase_below_one_lap(max_uj, start, delta):
    start %= max_uj + 1
    delta %= max_uj + 1
    end = (start + delta) % (max_uj + 1)
    assert wrapped_delta(start, end, max_uj) == delta


def test_sampler_timeline_gives_power_from_counter_deltas(tree):
    root, d = tree
    meter = RaplMeter.discover(root, sample_interval_s=0.01)
    meter.start()
    energy = 1_000_000
    deadline = time.monotonic() + 0.2
    while time.monotonic() < deadline:
        energy += 50_000  # keep the counter moving
        set_energy(d["pkg0"], energy)
        time.sleep(0.005)
    meter.close()
    rows = [r for r in meter.timeline() if r["component"] == "cpu-package0"]
    assert len(rows) >= 3 and all(r["power_w"] >= 0 for r in rows)
    assert max(r["power_w"] for r in rows) > 0
    assert {r["component"] for r in meter.timeline()} == {"cpu-package0", "dram0", "cpu-package1", "dram1"}
    assert set().union(*meter.timeline()) <= set(timeline.COLUMNS)  # all of it reaches the file


def test_describe_lists_the_domains_and_the_wrap_rule(tree):
    root, _ = tree
    desc = RaplMeter.discover(root, sample_interval_s=None).describe()
    assert desc["name"] == "rapl" and desc["method"] == "counter" and desc["kind"] == "cpu+dram"
    assert [x["component"] for x in desc["domains"]] == ["cpu-package0", "dram0", "cpu-package1", "dram1"]
    assert "max_energy_range_uj + 1" in desc["wrap_handling"]


# -- permission denied (tests run as root, where chmod 000 denies nothing) ------------
@pytest.fixture
def denied(monkeypatch):
    real = rapl._read_text

    def read_text(path):
        if Path(path).name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(rapl, "_read_text", read_text)
    monkeypatch.setattr(select, "_warned_rapl_permission", False)


def test_unreadable_counters_are_reported_as_permission_denied(tree, denied):
    root, _ = tree
    found = discover(root)
    assert found.domains == () and found.permission_denied
    assert any("energy_uj: permission denied" in p for p in found.problems)
    with pytest.raises(MeterError, match="permission denied"):
        RaplMeter.discover(root)


def test_permission_denied_falls_back_to_the_estimate_with_one_warning(tree, denied):
    root, _ = tree
    with pytest.warns(RaplPermissionWarning, match="cannot read them.*ESTIMATED.*chmod"):
        ms = build_meter_set(torch.device("cpu"), MeasurementConfig(), powercap_root=root, sample=False)
    assert [type(m) for m in ms.meters] == [CpuEstimateMeter, DramEstimateMeter, HostLoadMeter]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second build in the same process stays quiet
        build_meter_set(torch.device("cpu"), MeasurementConfig(), powercap_root=root, sample=False)


def test_no_powercap_at_all_falls_back_silently(tmp_path, monkeypatch):
    monkeypatch.setattr(select, "_warned_rapl_permission", False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ms = build_meter_set(torch.device("cpu"), MeasurementConfig(), powercap_root=tmp_path / "none", sample=False)
    assert [m.name for m in ms.meters] == ["cpu-estimate", "dram-estimate", "host-load"]


def test_readable_rapl_is_chosen_over_the_estimate(tree):
    root, _ = tree
    ms = build_meter_set(torch.device("cpu"), MeasurementConfig(sample_interval_s=0.05), powercap_root=root)
    assert [m.name for m in ms.meters] == ["rapl", "host-load"]  # it has DRAM domains: no DRAM estimate
    assert ms.meters[0].sample_interval_s == 0.05
    assert ms.resolution_s == pytest.approx(0.001)


def test_rapl_without_a_dram_domain_gets_the_dram_estimate(tmp_path):
    domain(tmp_path, "intel-rapl:0", "package-0", 5)
    ms = build_meter_set(torch.device("cpu"), MeasurementConfig(), powercap_root=tmp_path, sample=False)
    assert [m.name for m in ms.meters] == ["rapl", "dram-estimate", "host-load"]


def test_losing_read_access_mid_run_is_a_meter_error(tree, monkeypatch):
    root, _ = tree
    meter = RaplMeter.discover(root, sample_interval_s=None)
    snap = meter.begin()

    def read_text(path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(rapl, "_read_text", read_text)
    with pytest.raises(MeterError, match="RAPL: reading .*energy_uj: permission denied"):
        meter.end(snap, 0.0, 1.0)
