"""measurement.threads / run --threads: validated, applied before the run's torch work,
recorded in the environment block; and the forecast probing at the run's threads and dtype."""

import json
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from carbonbench import scenario as sc
from carbonbench.cli import cli
from carbonbench.runner import Hooks, Runner
from carbonbench.threads import MAX_THREADS, auto_threads, parse


@pytest.fixture(autouse=True)
def keep_torch_threads():
    """A run sets torch's threads for the whole process: put them back for the other tests."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("value, expected", [("auto", "auto"), (1, 1), ("3", 3), (MAX_THREADS, MAX_THREADS)])
def test_parse_accepts_auto_and_positive_counts(value, expected):
    assert parse(value) == expected


@pytest.mark.parametrize("value", [0, -1, "0", "fast", "", 2.5, True, MAX_THREADS + 1])
def test_parse_refuses_anything_else(value):
    with pytest.raises(ValueError, match="'auto' or"):
        parse(value)


def test_auto_takes_one_thread_per_free_physical_core():
    host = dict(physical=4, logical=8, usable=8, environ={})
    assert auto_threads(**host, busy_cpus=0.0).threads == 4  # SMT: one thread per core, not per CPU
    assert auto_threads(**host, busy_cpus=4.1).threads == 2  # 4 busy logical CPUs = 2 cores
    assert auto_threads(**host, busy_cpus=40.0).threads == 1  # never fewer than one
    assert auto_threads(physical=4, logical=8, usable=2, busy_cpus=0.0, environ={}).threads == 1  # affinity
    # A 2-core VM with its neighbours busy: the case benchmarks/threads.py measured.
    assert auto_threads(physical=2, logical=2, usable=2, busy_cpus=1.4, environ={}).threads == 1
    assert auto_threads(physical=2, logical=2, usable=2, busy_cpus=0.2, environ={}).threads == 2


def test_auto_follows_omp_num_threads():
    choice = auto_threads(physical=8, logical=8, usable=8, busy_cpus=0.0, environ={"OMP_NUM_THREADS": "3"})
    assert (choice.threads, choice.reason) == (3, "OMP_NUM_THREADS=3")
    odd = auto_threads(physical=2, logical=2, usable=2, busy_cpus=0.0, environ={"OMP_NUM_THREADS": "lots"})
    assert odd.threads == 2  # a value torch cannot use either: the host's rule


@pytest.mark.parametrize("value, why", [("0", "must be >= 1"), ("fast", "expected one of 'auto' or an integer")])
def test_a_bad_scenario_value_is_one_line_naming_the_key(tiny_scenario, tmp_path, value, why):
    path = tiny_scenario(f"  threads: {value}\n")
    result = CliRunner().invoke(cli, ["run", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "measurement.threads" in result.output and why in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("value", ["0", "-2", "many", "1.5"])
def test_a_bad_flag_is_one_line_exit_2(tiny_scenario, tmp_path, value):
    result = CliRunner().invoke(cli, ["run", str(tiny_scenario()), "--threads", value, "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "--threads" in result.output and "'auto' or" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not list(tmp_path.glob("*.json"))


def test_the_flag_sets_torch_threads_for_the_run_and_is_recorded(tiny_scenario, tmp_path, monkeypatch):
    import carbonbench.runner

    seen = []
    real = carbonbench.runner.measure_window

    def watched(*args, **kwargs):  # every measured window: torch's threads while it runs
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(carbonbench.runner, "measure_window", watched)
    torch.set_num_threads(2)
    result = CliRunner().invoke(cli, ["run", str(tiny_scenario()), "--threads", "1", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert len(seen) == 6 and set(seen) == {1}  # 3 points x 2 repeats, at the run's count
    assert "1 torch thread(s): set" in result.output
    data = json.loads(next(tmp_path.glob("*.json")).read_text())
    env = data["environment"]
    assert env["threads_setting"] == 1 and env["torch_threads"] == 1
    assert env["torch_interop_threads"] >= 1 and "torch_interop_note" in env
    assert data["scenario"]["measurement"]["threads"] == 1  # a re-run of the file uses it too


def test_auto_is_recorded_with_its_reason(tiny_scenario, tmp_path):
    runner = Runner(sc.load(tiny_scenario()), tmp_path / "out")
    outcome = runner.run()
    env = outcome.run.environment
    assert env["threads_setting"] == "auto"
    assert env["torch_threads"] == auto_threads_now_or(env) and "physical core" in env["threads_reason"]


def auto_threads_now_or(env):
    """auto's count depends on the load when the run started; it must be one the rule can give."""
    cores = env["cpu_physical_cores"] or 1
    assert 1 <= env["torch_threads"] <= cores
    return env["torch_threads"]


def test_interop_threads_are_set_once_and_a_late_change_is_said():
    code = (
        "import json; from carbonbench.threads import apply;"
        "first = apply(1); second = apply(3); print(json.dumps([first, second]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    first, second = json.loads(out)
    assert first["torch_interop_threads"] == 1 and first["torch_interop_note"] is None
    assert second["torch_threads"] == 3
    assert second["torch_interop_threads"] == 1 and second["torch_interop_note"].startswith("not changed")


def test_the_forecast_probes_at_the_runs_threads_and_dtype(tiny_scenario, tmp_path, monkeypatch):
    import carbonbench.forecast as forecast

    probes, messages = [], []
    real = forecast.probe_flops

    def probe(device, dtype, seconds=forecast.PROBE_S, shape=None, backward=False):
        probes.append((dtype, torch.get_num_threads(), shape))
        return real(device, dtype, 0.001, shape, backward)

    monkeypatch.setattr(forecast, "probe_flops", probe)
    torch.set_num_threads(2)
    path = tiny_scenario("  threads: 1\n")
    path.write_text(path.read_text() + "dtype: bfloat16\n")
    Runner(sc.load(path), tmp_path / "out", hooks=Hooks(log=messages.append)).run()
    assert probes and {(d, t) for d, t, _ in probes} == {(torch.bfloat16, 1)}
    # Shaped like the sweep: opt-tiny's FFN, with a forward's rows (prefill 2x16, decode 2, train 2x16).
    rows = sorted({shape[0] for _, _, shape in probes})
    assert rows == [2, 16, 32] or rows == [2, 32], rows
    assert any("(bfloat16, 1 thread(s))" in m for m in messages)


def test_the_report_line_says_the_count_and_the_setting():
    from carbonbench.threads import threads_text

    env = {"torch_threads": 1, "torch_interop_threads": 1, "threads_setting": "auto", "threads_reason": "why"}
    assert threads_text(env) == "1, interop 1 (measurement.threads auto: why)"
    assert threads_text({"torch_threads": 2}) == "2"  # a run from before the setting
    assert threads_text({}) == ""


def test_torchrun_workers_get_the_flag():
    from pathlib import Path

    from carbonbench.distributed.launch import worker_args

    assert worker_args(Path("s.yaml"), Path("out"), None, False, False, threads=2) == [
        *("run", "s.yaml", "--out", "out", "--threads", "2")
    ]
    assert "--threads" not in worker_args(Path("s.yaml"), Path("out"), None, False, False)
