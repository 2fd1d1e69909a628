"""benchmarks/gpu_check.py: every step in its CPU mode, the budget, the output layout,
what a machine without codecarbon, plotly or transformers gets, and the NVML facts
`carbonbench env` reports (NVML is faked at its import site; nothing else is).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from support import ROOT
from support.fake_nvml import FakeGpu, make_fake_nvml
from support.scenarios import scenario_text

from carbonbench.meters import nvml, nvml_facts
from carbonbench.meters.nvml import NvmlMeter

SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
# What comes back from the device tool and what a committed reference holds: at most 8
# files, none in a sub-folder.
OUTPUT_FILES = {"README.md", "summary.json", "env.json", "runs.tar.gz", "report.html", "gpu-check.log"}
# The dry run's own default is 60 s; a shared CI machine gets headroom here so that a
# busy moment is not taken for a broken step (the budget test below checks the skipping).
CI_BUDGET_S = "180"


def _load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module
    spec.loader.exec_module(module)
    return module


gpu_check = _load_script()


def run_check(tmp_path: Path, *args: str, timeout: float = 300) -> tuple[subprocess.CompletedProcess, dict, Path]:
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--dry-run", "--out", str(out), "--work", str(tmp_path / "work"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=tmp_path,
    )
    summary = json.loads((out / "summary.json").read_text())
    return proc, summary, out


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gpu-check")
    t0 = time.monotonic()
    proc, summary, out = run_check(tmp, "--budget-s", CI_BUDGET_S)
    return proc, summary, out, time.monotonic() - t0


# -- the whole check on the CPU -----------------------------------------------------------
def test_the_dry_run_runs_every_step(dry_run):
    proc, summary, out, seconds = dry_run
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [s["name"] for s in summary["steps"]] == list(gpu_check.STEPS)
    assert {s["name"]: s["status"] for s in summary["steps"]} == {name: "ok" for name in gpu_check.STEPS}, summary[
        "steps"
    ]
    assert summary["status"] == "complete" and summary["dry_run"] is True and summary["gpu_slug"] == "dry-run"
    print(f"dry run: {summary['elapsed_s']} s in the script, {seconds:.1f} s in all")


def test_the_output_is_one_flat_folder_the_device_tool_returns_whole(dry_run):
    _, summary, out, _ = dry_run
    files = {p.name for p in out.iterdir()}
    assert files == OUTPUT_FILES
    assert all(p.is_file() and p.stat().st_size < 16 * 2**20 for p in out.iterdir())
    assert sorted(summary["files"]) == sorted(OUTPUT_FILES)
    with tarfile.open(out / "runs.tar.gz") as tar:
        names = tar.getnames()
    runs = [n for n in names if n.startswith("gpu-check/runs/") and n.endswith(".json")]
    assert len(runs) == 3  # one run file per engine, and the served load's
    for expected in (
        "gpu-check/nvml.json",
        "gpu-check/nvml-timeline.csv",
        "gpu-check/roofline.json",
        "gpu-check/scenarios/gpu-check-native.yaml",
        "gpu-check/scenarios/gpu-check-transformers.yaml",
        "gpu-check/scenarios/gpu-check-serve.yaml",
        "gpu-check/logs/run-native.log",
        "gpu-check/logs/run-serve.log",
        "gpu-check/env.json",
    ):
        assert expected in names


def test_the_run_files_inside_are_ordinary_carbonbench_runs(dry_run, tmp_path):
    import carbonbench.results as results

    _, _, out, _ = dry_run
    with tarfile.open(out / "runs.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    df = results.load(tmp_path / "gpu-check" / "runs")
    assert set(df["engine"]) == {"native", "transformers"}
    assert set(df["workload"]) == {"prefill", "decode", "train", "serve"}
    assert set(df[df["workload"] == "serve"]["engine"]) == {"native"}  # the run-serve step's served load
    assert df[df["workload"] == "serve"]["joules_per_request"].notna().all()
    assert (df["status"] == "ok").all()


def test_the_summary_says_where_each_energy_figure_came_from(dry_run):
    _, summary, _, _ = dry_run
    cvi = summary["counter_vs_integrated"]
    assert cvi["power_source"] == "instant" and cvi["energy_source"] == "counter"
    lengths = [w["window_s"] for w in cvi["by_window"]]
    assert lengths == [s for s, _ in gpu_check.DRY.windows]
    assert [w["windows"] for w in cvi["by_window"]] == [n for _, n in gpu_check.DRY.windows]
    for w in cvi["windows"]:
        # both figures come from the same window: the fake draws about 100 W
        assert w["counter_energy_j"] == pytest.approx(w["counter_power_w"] * w["duration_s"])
        assert 0.5 < w["counter_over_integrated"] < 1.5
        assert 60 < w["integrated_power_w"] < 140
    for phase in ("idle_before", "idle_after"):
        idle = summary["idle"][phase]
        assert idle["status"] == "ok" and 60 < idle["counter_power_w"] < 140
    decode = summary["headline"]["decode_b1"]
    for engine in ("native", "transformers"):
        point = decode[engine]
        assert point["tokens_per_s"] > 0 and point["energy_method"] == "estimated"  # the CPU has no counter here
        assert 0 < point["fraction_of_bandwidth_roofline"]
    train = summary["headline"]["train"]
    assert train["native"]["mfu_measured_peak"] > 0
    assert train["native"]["hfu_measured_peak"] == pytest.approx(train["native"]["mfu_measured_peak"])  # no recompute
    assert summary["roofline"]["matmul_flops_per_s"] > 0 and summary["roofline"]["memory_bytes_per_s"] > 0


def test_the_readme_and_every_file_say_it_was_a_dry_run(dry_run):
    _, summary, out, _ = dry_run
    text = (out / "README.md").read_text()
    assert "DRY RUN" in text and "none measures a GPU" in " ".join(summary["notes"])
    assert "## NVML energy counter against integrated power" in text
    assert "native / transformers: tokens/s" in text
    assert "(estimated)" in text  # every J/token names its method
    assert "(DRY RUN)" in (out / "report.html").read_text()[:20000]
    env = json.loads((out / "env.json").read_text())
    assert "fake NVML" in env["nvml"]["devices"][0]["name"]


# -- the budget ---------------------------------------------------------------------------
def test_a_tiny_budget_skips_later_steps_with_notes_and_still_writes_a_valid_summary(tmp_path):
    proc, summary, out = run_check(tmp_path, "--budget-s", "3.5")
    assert proc.returncode == 0, proc.stdout + proc.stderr  # skipping is the budget working, not a failure
    steps = {s["name"]: s for s in summary["steps"]}
    assert list(steps) == list(gpu_check.STEPS)
    assert steps["packages"]["status"] == "ok"  # estimated at 2 s: fits the 2.5 s left after the 1 s reserve
    # every later step that needs a process is estimated at 4 s or more: none may start
    for name in ("env", "nvml", "run-native", "run-transformers", "roofline", "report", "run-serve"):
        assert steps[name]["status"] == "skipped", steps[name]
        assert "out of time" in steps[name]["note"] and "of the 3.5 s budget left" in steps[name]["note"]
    assert steps["headline"]["status"] == "skipped"  # out of time, or nothing to read
    assert summary["status"] == "partial"
    # no process was started (the packages step runs in the check's own process; on a slow
    # machine its first imports can outlast the budget, which nothing after it then gets)
    assert not (tmp_path / "work" / "logs").exists()
    assert summary["finished_utc"] and summary["schema"] == "carbonbench.gpu_check"
    assert {"README.md", "summary.json", "runs.tar.gz", "gpu-check.log"} <= {p.name for p in out.iterdir()}
    assert "out of time" in (out / "README.md").read_text()


def test_a_step_is_skipped_when_its_estimate_does_not_fit_and_a_broken_one_does_not_stop_the_rest(tmp_path):
    now = [0.0]
    check = gpu_check.Check(
        gpu_check.parse(
            ["--dry-run", "--out", str(tmp_path / "o"), "--work", str(tmp_path / "w"), "--budget-s", "100"]
        ),
        [],
    )
    check.budget = gpu_check.Budget(100, reserve_s=10, clock=lambda: now[0])
    ran = []

    def work(name, seconds):
        def fn():
            ran.append(name)
            now[0] += seconds
            return {}

        return fn

    def broken():
        raise RuntimeError("boom")

    check.step("a", 50, work("a", 60))  # 90 s left: fits, and takes 60
    check.step("b", 40, work("b", 1))  # 30 s left: does not fit
    check.step("c", 20, broken)
    check.step("d", 5, work("d", 1))
    steps = {s["name"]: s for s in check.summary["steps"]}
    assert ran == ["a", "d"]
    assert steps["a"]["status"] == "ok"
    assert steps["b"]["status"] == "skipped" and "needs ~40 s, 30 s of the 100 s budget left" in steps["b"]["note"]
    assert steps["c"]["status"] == "failed" and "RuntimeError: boom" in steps["c"]["note"]
    assert steps["d"]["status"] == "ok"
    assert (
        json.loads((tmp_path / "o" / "summary.json").read_text())["steps"][-1]["name"] == "d"
    )  # saved after each step


def test_budget_counts_the_reserve():
    now = [0.0]
    b = gpu_check.Budget(60, reserve_s=5, clock=lambda: now[0])
    assert b.left() == 55 and b.fits(55) and not b.fits(56)
    now[0] = 50
    assert b.left() == 5 and b.elapsed() == 50


def test_the_dry_run_defaults_to_a_one_minute_budget_and_the_gpu_run_to_seven():
    assert gpu_check.parse(["--dry-run"]).budget_s == 60
    assert gpu_check.parse([]).budget_s == 420
    # the GPU check's steps fit its budget as estimated, with the reserve; the optional
    # served-load step (last) needs a longer one
    estimates = gpu_check.GPU.estimates_s
    estimate = sum(v for k, v in estimates.items() if k != "run-serve") + gpu_check.GPU.nvml_estimate_s()
    assert estimate + gpu_check.GPU.finish_reserve_s <= 420
    assert estimate + estimates["run-serve"] + gpu_check.GPU.finish_reserve_s <= 560


def test_unknown_steps_are_refused():
    with pytest.raises(SystemExit):
        gpu_check.parse(["--steps", "env,bogus"])


# -- missing packages ---------------------------------------------------------------------
def test_without_codecarbon_plotly_and_transformers_the_check_degrades_with_notes(tmp_path):
    proc, summary, out = run_check(
        tmp_path,
        "--budget-s",
        CI_BUDGET_S,
        "--without",
        "codecarbon",
        "--without",
        "plotly",
        "--without",
        "transformers",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    steps = {s["name"]: s for s in summary["steps"]}
    assert steps["run-native"]["status"] == "ok"
    assert steps["run-transformers"] == {
        **steps["run-transformers"],
        "status": "skipped",
        "note": "transformers is not installed here",
    }
    assert steps["report"]["status"] == "skipped" and "plotly is missing" in steps["report"]["note"]
    notes = " ".join(summary["notes"])
    assert "codecarbon is missing" in notes and "sidecar off" in notes and "typed-in grid" in notes
    assert "report.html" not in {p.name for p in out.iterdir()}
    with tarfile.open(out / "runs.tar.gz") as tar:
        scenario = tar.extractfile("gpu-check/scenarios/gpu-check-native.yaml").read().decode()
        runs = [n for n in tar.getnames() if n.startswith("gpu-check/runs/") and n.endswith(".json")]
        (run_name,) = [n for n in runs if "-serve-" not in n]  # and the run-serve step's
        run = json.load(tar.extractfile(run_name))
    assert "codecarbon: false" in scenario and f"grid_g_per_kwh: {gpu_check.FALLBACK_GRID_G_PER_KWH}" in scenario
    assert run["codecarbon_meter"] == {"enabled": False}
    assert summary["headline"]["decode_b1"]["transformers"] is None


IMPORT_WITHOUT = r"""
import importlib, pkgutil, sys
for name in ("codecarbon", "plotly"):
    sys.modules[name] = None  # as if not installed
import carbonbench
needs_plotly = {"carbonbench.report.html", "carbonbench.report.plot", "carbonbench.report.cost_figures",
                "carbonbench.report.tradeoff_figures", "carbonbench.report.breakdown_figure",
                "carbonbench.report.timeline_figure", "carbonbench.report.carbon_figures",
                "carbonbench.report.comparison_figure", "carbonbench.report.summary_section",
                "carbonbench.report.comparison_section", "carbonbench.report.chart_sections",
                "carbonbench.report.training_section", "carbonbench.report.tables_section",
                "carbonbench.report.caveats"}
imported = []
for m in pkgutil.walk_packages(carbonbench.__path__, "carbonbench."):
    if m.name not in needs_plotly:
        importlib.import_module(m.name)
        imported.append(m.name)
print(len(imported))
from carbonbench.cli import main
sys.argv = ["carbonbench", *sys.argv[1:]]
main()
"""


def _without(tmp_path, *args):
    return subprocess.run(
        [sys.executable, "-c", IMPORT_WITHOUT, *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=180,
        env={**__import__("os").environ, "PYTHONPATH": str(ROOT)},
    )


def test_carbonbench_imports_and_runs_without_codecarbon_and_plotly(tmp_path):
    scenario = tmp_path / "s.yaml"
    scenario.write_text(
        scenario_text(
            name="bare",
            device="cpu",
            batch_sizes="[1]",
            idle_baseline_s=0.05,
            codecarbon=True,
            extra="carbon: {grid_g_per_kwh: 300}\n",
        )
    )
    run = _without(tmp_path, "run", str(scenario), "--out", str(tmp_path / "r"))
    assert run.returncode == 0, run.stdout + run.stderr
    assert int(run.stdout.splitlines()[0]) > 40  # every module but the four that draw
    (path,) = (tmp_path / "r").glob("*.json")
    record = json.loads(path.read_text())
    assert record["points"][0]["status"] == "ok"
    assert any("codecarbon" in e for e in record["codecarbon_meter"]["errors"])  # said, not hidden
    report = _without(tmp_path, "report", str(tmp_path / "r"), "-o", str(tmp_path / "r.html"))
    assert report.returncode == 2
    assert (
        report.stderr.strip().splitlines()[-1]
        == "Error: the HTML report needs plotly, which is not installed: pip install plotly"
    )


# -- NVML facts ---------------------------------------------------------------------------
def test_describe_system_reports_what_nvml_offers_and_what_it_refused(monkeypatch):
    gpus = [FakeGpu("GPU-aaaa1111-0000"), FakeGpu("GPU-bbbb2222-0000", counter=False, instant=False)]
    monkeypatch.setattr(nvml, "pynvml", make_fake_nvml(gpus))
    facts = nvml_facts.describe_system()
    assert facts["available"] and facts["driver_version"] == "550.54.15"
    first, second = facts["devices"]
    assert first["name"] == "NVIDIA H100 80GB HBM3" and first["architecture"] == "Hopper"
    assert first["energy_counter"] and first["power_instant_field"] and first["power_instant_w"] == 200.0
    assert first["power_limit_w"] == 700.0 and first["sm_clock_mhz"] == 1980 and first["mem_clock_mhz"] == 2619
    assert first["temperature_c"] == 61 and first["memory_total_bytes"] == 80 * 2**30
    # functions this fake (like an old pynvml) lacks are None and listed, never an error
    assert first["mig_mode"] is None and first["max_sm_clock_mhz"] is None
    assert "nvmlDeviceGetMigMode: not in this pynvml" in first["refused"]
    assert not second["energy_counter"] and not second["power_instant_field"]
    assert any(r.startswith("nvmlDeviceGetTotalEnergyConsumption:") for r in second["refused"])


def test_describe_system_without_a_driver_says_why(monkeypatch):
    import pynvml as real

    monkeypatch.setattr(nvml, "pynvml", make_fake_nvml([], init_error=real.NVMLError_LibraryNotFound))
    facts = nvml_facts.describe_system()
    assert facts == {"available": False, "reason": facts["reason"]} and "libnvidia-ml.so.1" in facts["reason"]


def test_env_shows_the_nvml_facts(invoke_cli, monkeypatch):
    monkeypatch.setattr(nvml, "pynvml", gpu_check.make_fake_nvml())
    info = json.loads(invoke_cli("env", "--device", "cpu", "--format", "json").stdout)
    (dev,) = info["nvml"]["devices"]
    assert dev["energy_counter"] and dev["power_instant_field"] and dev["mig_mode"] == "disabled"
    assert (
        dev["power_limit_default_w"] == 700.0
        and dev["power_limit_min_w"] == 200.0
        and dev["compute_capability"] == "9.0"
    )
    assert info["nvml"]["cuda_driver_version"] == "13.0"
    text = invoke_cli("env", "--device", "cpu").output
    assert "energy counter yes, instantaneous power field" in text and "MIG disabled" in text


def test_the_meter_records_limits_clocks_and_mig_mode(monkeypatch):
    monkeypatch.setattr(nvml, "pynvml", gpu_check.make_fake_nvml())
    dev = NvmlMeter(indices=[0], sample_interval_s=None).describe()["devices"][0]
    assert dev["enforced_power_limit_w"] == 700.0 and dev["max_sm_clock_mhz"] == 1980
    assert dev["max_mem_clock_mhz"] == 3201 and dev["mig_mode"] == "disabled"


def test_the_fake_counter_moves_in_100_ms_steps_like_the_real_one():
    fake = gpu_check.make_fake_nvml()
    h = fake.nvmlDeviceGetHandleByIndex(0)
    reads = set()
    t0 = time.monotonic()
    while time.monotonic() - t0 < 0.25:
        reads.add(fake.nvmlDeviceGetTotalEnergyConsumption(h))
    assert 2 <= len(reads) <= 4  # about one new value per 100 ms


@pytest.mark.parametrize(
    "name, slug",
    [
        ("NVIDIA H100 80GB HBM3", "h100-80gb-hbm3"),
        ("NVIDIA H200", "h200"),
        ("Tesla V100-SXM2-32GB", "v100-sxm2-32gb"),
        ("NVIDIA GeForce RTX 4090", "rtx-4090"),
        (None, "unknown-gpu"),
    ],
)
def test_gpu_slugs_name_the_reference_folder(name, slug):
    assert gpu_check.gpu_slug(name) == slug


def test_window_summary_per_length():
    windows = [{"target_s": 1.0, "counter_over_integrated": r, "counter_power_w": 500.0} for r in (0.98, 1.02, 1.0)]
    windows.append({"target_s": 5.0, "counter_over_integrated": 1.004, "counter_power_w": 510.0})
    one, five = gpu_check.summarise_windows(windows)
    assert one["windows"] == 3 and one["ratio_mean"] == pytest.approx(1.0)
    assert one["ratio_min"] == 0.98 and one["max_abs_difference_pct"] == pytest.approx(2.0)
    assert five["window_s"] == 5.0 and five["max_abs_difference_pct"] == pytest.approx(0.4)


# -- the scenarios it runs ----------------------------------------------------------------
@pytest.mark.parametrize("engine", ["native", "transformers"])
@pytest.mark.parametrize("without", [[], ["--without", "codecarbon"]])
def test_the_gpu_scenarios_are_opt_1_3b_on_cuda_for_each_engine(tmp_path, engine, without):
    from carbonbench import scenario as sc

    check = gpu_check.Check(
        gpu_check.parse(["--out", str(tmp_path / "o"), "--work", str(tmp_path / "w"), *without]), []
    )
    check.packages = gpu_check.probe_packages(check.without)
    s = sc.load(check.scenario_for(engine))
    assert s.device == "cuda" and s.engine.name == engine and not s.engine.compile and not s.engine.cuda_graphs
    assert [p.key for p in sc.expand(s)] == [
        "opt-1.3b/prefill/b1/p512",
        "opt-1.3b/prefill/b16/p512",
        "opt-1.3b/decode/b1/p128-n128",
        "opt-1.3b/decode/b16/p128-n128",
        "opt-1.3b/train/b8/s2048",
    ]
    m = s.measurement
    assert m.min_seconds >= 2.0 and m.warmup_steps == 1 and m.repeats == 2  # --quick's shape, NVML-sized windows
    assert m.codecarbon is not bool(without)
    assert (s.carbon.grid_g_per_kwh == gpu_check.FALLBACK_GRID_G_PER_KWH) is bool(without)


def test_sigterm_stops_the_check_and_keeps_what_finished(tmp_path):
    import signal

    out = tmp_path / "out"
    proc = subprocess.Popen(
        [
            sys.executable,
            str(SCRIPT),
            "--dry-run",
            "--out",
            str(out),
            "--work",
            str(tmp_path / "w"),
            "--budget-s",
            CI_BUDGET_S,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # until the env step is recorded
        try:
            steps = json.loads((out / "summary.json").read_text())["steps"]
        except (OSError, ValueError, KeyError):
            steps = []
        if any(s["name"] == "env" and "status" in s for s in steps):
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1, output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["finished_utc"]
    steps = {s["name"]: s for s in summary["steps"]}
    assert steps["env"]["status"] == "ok"
    assert "SIGTERM" in " ".join(summary["notes"])
    assert {"README.md", "runs.tar.gz", "env.json"} <= {p.name for p in out.iterdir()}


def test_the_wheel_list_names_each_package_once_within_the_projects_bounds():
    import re

    from packaging.requirements import Requirement

    text = (ROOT / "benchmarks" / "gpu_wheels.sh").read_text()
    block = text[text.index("WHEELS=(") + len("WHEELS=(") :]
    pins = [line.strip() for line in block[: block.index(")")].splitlines() if line.strip()]
    names = [re.sub(r"[-_.]+", "-", p.split("==")[0]).lower() for p in pins]
    assert len(names) == len(set(names)) and all("==" in p for p in pins)  # two versions of one stop pip's install
    versions = dict(zip(names, (p.split("==")[1] for p in pins)))
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in map(Requirement, deps):
        if dep.name in ("codecarbon", "plotly"):
            assert dep.specifier.contains(versions[dep.name]), dep
