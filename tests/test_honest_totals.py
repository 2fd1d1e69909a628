"""Figures that can't pass for more than they are: partial totals, busy hosts, attribution,
random weights, and codecarbon's differences explained per component."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from support import ROOT
from support.meters import ConstantMeter
from support.scenarios import tiny_scenario_text

from carbonbench import results
from carbonbench import scenario as sc
from carbonbench.meters.base import MeterSet, NullMeter
from carbonbench.meters.cpu import CpuEstimateMeter
from carbonbench.meters.host import BUSY_FLAG, BUSY_OTHERS_CORES, HostLoadMeter, HostShare
from carbonbench.report import load as load_report
from carbonbench.report import render
from carbonbench.runner import Runner

FIXTURE = ROOT / "tests" / "data" / "results"


@pytest.fixture
def spinner():
    """Another program keeping one core busy: not a child of this process (double fork),
    so it is a neighbour, as on a shared host."""
    code = (
        "import os, subprocess, sys\n"
        "p = subprocess.Popen([sys.executable, '-c', 'while True: pass'], start_new_session=True,\n"
        "                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
        "print(p.pid, flush=True)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    pid = int(out.stdout.split()[0])
    time.sleep(0.3)  # let it start spinning
    yield pid
    os.kill(pid, signal.SIGKILL)


# -- partial totals -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def partial_run(tmp_path_factory):
    """The tiny scenario measured with no GPU meter beside a CPU one: every total is partial."""
    root = tmp_path_factory.mktemp("partial")
    path = root / "tiny.yaml"
    path.write_text(tiny_scenario_text())
    meters = MeterSet([NullMeter("gpu", "NVML not available"), ConstantMeter("cpu", "cpu", 20.0)])
    return Runner(sc.load(path), root / "out", device="cpu", meters=meters).run()


def test_a_total_missing_a_component_is_flagged_partial_and_names_it(partial_run):
    meters = MeterSet([NullMeter("gpu", "NVML not available"), ConstantMeter("cpu", "cpu", 20.0)])
    with meters.window("w") as w:
        time.sleep(0.01)
    assert w.measurement.missing == ("gpu",) and "partial" in w.measurement.flags

    outcome = partial_run
    df = results.load([outcome.path])
    assert set(df["energy_missing"]) == {"gpu"}
    assert all("partial" in f.split(",") for f in df["flags"])
    page = render(load_report([outcome.path]))
    assert "Partial totals." in page and "partial: no gpu" in page


def test_the_run_summary_table_marks_a_partial_total(partial_run, monkeypatch):
    from carbonbench.cli import run as run_cli

    rows = []
    monkeypatch.setattr(run_cli, "print_table", lambda header, table: rows.extend(table))
    run_cli._summary(partial_run.run)
    assert len(rows) == 3 and all(row[-1] == "counter, partial: no gpu" for row in rows)


# -- busy hosts and attribution -------------------------------------------------------------
def test_host_share_arithmetic():
    share = HostShare(duration_s=2.0, machine_busy_s=3.0, tree_s=1.0)
    assert share.others_cores == pytest.approx(1.0) and share.tree_share == pytest.approx(1 / 3) and share.busy
    assert not HostShare(2.0, 0.3, 0.2).busy and HostShare(1.0, 0.0, 0.0).tree_share == 0.0


def test_a_busy_neighbour_flags_the_window_and_process_attribution_leaves_it_out(spinner):
    machine = CpuEstimateMeter(100.0, attribution="machine")
    process = CpuEstimateMeter(100.0, attribution="process")
    ms = MeterSet([machine, process, HostLoadMeter()])
    with ms.window("w") as w:
        time.sleep(1.0)  # this process sleeps; the neighbour spins
    m = w.measurement
    energies = [c.energy_j for c in m.components]
    assert BUSY_FLAG in m.flags
    assert energies[1] < 0.25 * energies[0]  # our tree used almost none of the busy time
    assert all(c.method == "estimated" for c in m.components)
    assert "share of the host's busy CPU time" in process.describe()["attribution"]


def test_a_quiet_window_is_not_flagged():
    ms = MeterSet([HostLoadMeter()])
    # Other processes may share this machine: the window is judged against a second clock read
    # around the same span, and the flag must agree with it (our own work is never a neighbour's).
    clock = HostLoadMeter()._clock
    before = clock.snapshot()
    with ms.window("w") as w:
        t_end = time.perf_counter() + 0.5
        while time.perf_counter() < t_end:
            sum(i * i for i in range(20_000))
    share = clock.since(before)
    if share.others_cores < 0.5 * BUSY_OTHERS_CORES:  # clearly quiet over the whole span
        assert BUSY_FLAG not in w.measurement.flags
    elif share.others_cores > 2 * BUSY_OTHERS_CORES:  # clearly busy over the whole span
        assert BUSY_FLAG in w.measurement.flags


def test_a_busy_baseline_leaves_active_energy_out_and_says_so(tiny_run, copy_run):
    path = copy_run(tiny_run)
    data = json.loads(path.read_text())
    data["idle"]["flags"] = [BUSY_FLAG]
    path.write_text(json.dumps(data))
    df = results.load([path])
    assert df["active_energy_j"].isna().all()
    assert all("busy-baseline" in f.split(",") for f in df["flags"])
    page = render(load_report([path]))
    assert "Busy host." in page and "the idle baseline of" in page


def test_the_scenario_chooses_the_attribution_and_the_run_records_it(tiny_scenario, tmp_path):
    scenario = sc.load(tiny_scenario("  cpu_attribution: process\n"))
    outcome = Runner(scenario, tmp_path / "out", device="cpu").run()
    cpu = next(m for m in outcome.run.meters if m.get("kind") == "cpu")
    assert cpu["attribution"].startswith("process")
    assert "process: the package" in render(load_report([outcome.path]))


# -- weights -----------------------------------------------------------------------------
def test_random_weights_are_recorded_and_the_report_says_what_that_means(tiny_run):
    outcome = tiny_run
    assert {p.weights for p in outcome.run.points} == {"random (seed 0)"}
    page = render(load_report([outcome.path]))
    assert "Random weights." in page and "arXiv 2409.18324" in page and "arXiv 2212.08805" in page
    assert "does not depend on the weight values" not in page


def test_no_text_claims_energy_is_independent_of_the_weights():
    texts = (
        [p for p in (ROOT / "carbonbench").rglob("*.py")] + [ROOT / "README.md"] + list((ROOT / "docs").glob("*.md"))
    )
    for path in texts:
        text = " ".join(path.read_text().split())
        assert "does not depend on the weight values" not in text, path
        assert "energy, of a forward or training step does not depend" not in text, path


def test_no_unmeasured_agreement_figure_for_counter_and_integration():
    for path in [ROOT / "carbonbench" / "meters" / "base.py", ROOT / "docs" / "measurement.md"]:
        text = " ".join(path.read_text().split())
        assert "within ~1%" not in text and "agree within" not in text, path


# -- codecarbon ----------------------------------------------------------------------------
def test_the_report_explains_codecarbons_difference_per_component():
    page = render(load_report([FIXTURE]))
    assert "RAM: codecarbon / ours" in page and "CPU: codecarbon / ours" in page
    assert "RAM: codecarbon draws" in page and "5 W per DIMM" in page
    assert "GPU: both read the same NVML energy counter" in page


def test_the_cli_summary_of_a_real_run_is_printed(invoke_cli, tiny_scenario, tmp_path):
    result = invoke_cli("run", str(tiny_scenario()), "--out", str(tmp_path / "o"), "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "estimated" in result.output
