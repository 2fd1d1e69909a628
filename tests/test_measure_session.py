"""carbonbench.measure_session: windows of the user's code as an ordinary run file,
read by results.load, the report, compare and export like a benchmark run."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import carbonbench
import carbonbench.results as results
from carbonbench.report import build_report
from carbonbench.runfile import read_run


def busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        sum(i * i for i in range(1000))


@pytest.fixture
def session_run(tmp_path):
    """A finished session: five steps with tokens inside an epoch, and one failed step."""
    out = tmp_path / "results"
    steps = []
    with carbonbench.measure_session(
        "my-training", out=out, device="cpu", country="FRA", idle_baseline_s=0.3, sample_interval_s=0.05, save_every_s=0
    ) as s:
        with s.measure("epoch") as epoch:
            for _ in range(5):
                with s.measure("step", tokens=256, batch_size=8) as m:
                    busy(0.06)
                steps.append(m.result)
        with pytest.raises(ValueError):
            with s.measure("step", tokens=256, batch_size=8):
                busy(0.02)
                raise ValueError("bad batch")
    return out, s, steps, epoch.result


def test_the_session_is_a_normal_run_file(session_run):
    out, s, steps, epoch = session_run
    run = read_run(s.path)  # the schema's own validation
    assert run.status == "complete" and run.scenario["kind"] == "session" and run.scenario_name == "my-training"
    assert run.engine_name == "custom" and run.device.type == "cpu"
    assert run.carbon == {"country": "FRA", "region": None, "grid_g_per_kwh": None, "pue": 1.0}
    assert run.idle is not None and run.idle.duration_s >= 0.3
    by_key = {p.key: p for p in run.points}
    assert set(by_key) == {"epoch/custom", "step/custom/b8"}
    step = by_key["step/custom/b8"]
    assert (step.model, step.workload, step.batch_size) == ("step", "custom", 8)
    assert [r.status for r in step.repeats] == ["ok"] * 5 + ["error"]
    assert step.status == "error" and step.error == "ValueError: bad batch"
    assert step.repeats[-1].energy_j is not None  # the failed window is still measured
    assert step.summary["joules_per_token"]["n"] == 5
    for rep, res in zip(step.repeats, steps):
        assert rep.energy_j == res.energy_j and rep.energy_method == res.method == "estimated"
        assert rep.tokens == 256 and rep.joules_per_token == pytest.approx(res.joules_per_token)
        assert rep.active_energy_j == pytest.approx(res.active_energy_j)
        assert rep.components.keys() == res.components.keys()
    # No tokens given: energy, but no J/token.
    assert by_key["epoch/custom"].repeats[0].tokens == 0 and by_key["epoch/custom"].repeats[0].joules_per_token is None
    assert epoch.energy_j > sum(r.energy_j for r in steps) * 0.5


def test_results_load_prices_the_windows_as_the_window_results_did(session_run):
    out, s, steps, epoch = session_run
    df = results.load([out])
    ok = df[(df.model == "step") & (df.status == "ok")].sort_values("repeat")
    assert list(ok.workload.unique()) == ["custom"] and len(ok) == 5
    assert ok.co2e_g.tolist() == pytest.approx([r.co2e_g for r in steps])
    assert ok.cost_usd.tolist() == pytest.approx([r.usd for r in steps])
    assert ok.joules_per_token.tolist() == pytest.approx([r.joules_per_token for r in steps])
    # Active energy is left out, and flagged, where another process kept the host busy.
    busy = ok["flags"].fillna("").str.contains("busy-")
    active = ok.active_energy_j[~busy].astype(float)
    assert (active <= ok.energy_j[~busy]).all() and ok.active_energy_j[busy].isna().all()
    assert ok.idle_power_w.notna().all()
    row = df[df.model == "epoch"].iloc[0]
    assert row.energy_j == pytest.approx(epoch.energy_j) and row.joules_per_token != row.joules_per_token  # NaN
    assert set(df.status) == {"ok", "error"}


def test_the_power_timeline_is_beside_the_file_with_the_windows_marked(session_run):
    out, s, steps, epoch = session_run
    tl = (out / read_run(s.path).timeline_file).read_text().splitlines()
    header = tl[0].split(",")
    windows = {line.split(",")[header.index("window")] for line in tl[1:]}
    # Each sample is labelled with the outermost window it fell in: the epoch, and the failed step after it.
    assert len(tl) > 10 and "epoch/custom#r0" in windows
    assert windows <= {"", "epoch/custom#r0", "step/custom/b8#r5"}


def test_report_compare_and_export_read_a_session(invoke_cli, session_run, tmp_path):
    out, s, steps, epoch = session_run
    html = build_report([out], tmp_path / "r.html").read_text()
    assert "my-training" in html and "step" in html and "custom" in html
    res = invoke_cli("compare", str(out), str(out), "--format", "json")
    assert res.exit_code == 0, res.output
    compared = json.loads(res.output)
    assert compared  # the epoch point is matched with itself; the failed step is listed as failed
    res = invoke_cli("export", str(out), "--what", "points")
    assert res.exit_code == 0 and "step" in res.output and "estimated" in res.output
    res = invoke_cli("run", str(s.path))
    assert res.exit_code == 2 and "measure_session run" in res.output


def test_an_exception_or_ctrl_c_leaves_a_closed_valid_file(tmp_path):
    with pytest.raises(RuntimeError):
        with carbonbench.measure_session("crash", out=tmp_path / "a", device="cpu") as s:
            with s.measure("step"):
                raise RuntimeError("diverged")
    run = read_run(s.path)
    assert run.status == "failed" and run.finished_utc is not None
    assert run.points[0].repeats[0].status == "error"
    assert any("RuntimeError: diverged" in w for w in run.warnings)

    with pytest.raises(KeyboardInterrupt):
        with carbonbench.measure_session("ctrl-c", out=tmp_path / "b", device="cpu") as s:
            with s.measure("step"):
                pass
            with s.measure("step"):
                raise KeyboardInterrupt
    run = read_run(s.path)
    assert run.status == "interrupted" and [r.status for r in run.points[0].repeats] == ["ok", "interrupted"]
    assert len(results.load([tmp_path / "b"])) == 2


def test_a_killed_process_leaves_a_readable_file_with_what_was_saved(tmp_path):
    script = textwrap.dedent(f"""
        import os, signal, sys, carbonbench
        with carbonbench.measure_session("killed", out={str(tmp_path)!r}, device="cpu", save_every_s=0) as s:
            for i in range(3):
                with s.measure("step", tokens=10):
                    sum(j * j for j in range(10000))
            print(s.path, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180)
    assert proc.returncode == -signal.SIGKILL
    run = read_run(proc.stdout.strip())
    assert run.status == "running" and len(run.points[0].repeats) == 3
    assert len(results.load([tmp_path])) == 3


def test_saves_are_throttled_between_windows_and_always_made_at_the_end(tmp_path):
    with carbonbench.measure_session("throttled", out=tmp_path, device="cpu", save_every_s=3600) as s:
        with s.measure("step"):
            pass
        assert len(read_run(s.path).points[0].repeats) == 1  # a new point is saved at once
        for _ in range(3):
            with s.measure("step"):
                pass
        assert len(read_run(s.path).points[0].repeats) == 1  # the next save is an hour away
        s.save()
        assert len(read_run(s.path).points[0].repeats) == 4
        with s.measure("step"):
            pass
    assert len(read_run(s.path).points[0].repeats) == 5


def test_windows_need_an_open_session(tmp_path):
    s = carbonbench.measure_session("closed", out=tmp_path, device="cpu")
    with pytest.raises(RuntimeError, match="not open"):
        with s.measure("step"):
            pass
    assert not list(tmp_path.iterdir())  # nothing written before the session opens


def test_codecarbon_alongside_measures_the_outermost_windows(tmp_path, hostile_codecarbon_config):
    with carbonbench.measure_session("with-cc", out=tmp_path, device="cpu", country="FRA", codecarbon=True) as s:
        with s.measure("outer"):
            with s.measure("inner"):
                busy(0.1)
    run = read_run(s.path)
    outer, inner = (next(p for p in run.points if p.model == name).repeats[0] for name in ("outer", "inner"))
    assert outer.codecarbon is not None and outer.codecarbon["energy_j"] > 0
    assert inner.codecarbon is None  # codecarbon's tasks do not nest
    assert run.codecarbon is not None and run.codecarbon_meter["enabled"] is True
    assert run.codecarbon_meter["isolated"] is True and run.codecarbon_meter["errors"] == []
    assert (tmp_path / "codecarbon").is_dir()  # its CSVs beside the run file, in a folder of their own
    df = results.load([tmp_path])
    assert df.loc[df.model == "outer", "codecarbon_energy_diff_j"].notna().all()
