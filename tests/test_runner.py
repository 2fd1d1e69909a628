import json

import pytest
import torch
from support.scenarios import TINY_KEYS

from carbonbench import scenario as sc
from carbonbench.runner import Hooks, Interrupted, Runner
from carbonbench.workloads import Decode, Prefill


def run(path, out, **kwargs):
    return Runner(sc.load(path), out, **kwargs).run()


def test_every_point_has_tokens_duration_and_energy(tiny_run):
    outcome = tiny_run  # measured with constant meters: CPU 20 W and DRAM 5 W, as counters
    data = json.loads(outcome.path.read_text())
    assert data["status"] == "complete"
    assert [p["key"] for p in data["points"]] == TINY_KEYS
    assert data["idle"]["duration_s"] >= 0.1
    for point in data["points"]:
        assert point["status"] == "ok"
        assert len(point["repeats"]) == 2
        for rep in point["repeats"]:
            assert rep["tokens"] == rep["steps"] * point["tokens_per_step"] > 0
            assert rep["duration_s"] >= 0.05
            assert rep["energy_j"] == pytest.approx(25.0 * rep["duration_s"], rel=1e-4)
            assert rep["components"]["cpu"]["energy_j"] == pytest.approx(20.0 * rep["duration_s"], rel=1e-4)
            assert rep["components"]["cpu"]["method"] == rep["method"] == "counter"
            assert rep["latency_s"]["p50"] > 0
        summary = point["summary"]["joules_per_token"]
        values = [rep["energy_j"] / rep["tokens"] for rep in point["repeats"]]
        assert summary["mean"] == pytest.approx(sum(values) / 2)
        assert summary["ci95"] > 0 and summary["n"] == 2
    decode = data["points"][1]["repeats"][0]
    assert 0 < decode["ttft_s"] and 0 < decode["tpot_s"]
    timeline = (outcome.path.parent / data["timeline_file"]).read_text().splitlines()
    assert len(timeline) > 10 and timeline[0].startswith("unix_s,component,kind,power_w")


def test_a_failing_point_is_recorded_and_the_sweep_goes_on(tiny_scenario, tmp_path, monkeypatch):
    def boom(self):
        raise RuntimeError("kernel exploded\nsecond line")

    monkeypatch.setattr(Prefill, "step", boom)
    outcome = run(tiny_scenario(), tmp_path / "out")
    statuses = {p.workload: (p.status, p.error) for p in outcome.run.points}
    assert statuses["prefill"] == ("error", "RuntimeError: kernel exploded")
    assert statuses["decode"][0] == statuses["train"][0] == "ok"
    assert outcome.failed == 1


def test_out_of_memory_is_recorded(tiny_scenario, tmp_path, monkeypatch):
    def oom(self):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(Decode, "step", oom)
    outcome = run(tiny_scenario(), tmp_path / "out")
    decode = [p for p in outcome.run.points if p.workload == "decode"][0]
    assert decode.status == "oom" and "20.00 GiB" in decode.error
    assert [p.status for p in outcome.run.points if p.workload != "decode"] == ["ok", "ok"]


def test_nan_loss_is_recorded(tiny_scenario, tmp_path, monkeypatch):
    import carbonbench.opt

    real = carbonbench.opt.loss_fn
    monkeypatch.setattr(carbonbench.opt, "loss_fn", lambda logits, ids: real(logits, ids) * float("nan"))
    outcome = run(tiny_scenario(), tmp_path / "out")
    train = [p for p in outcome.run.points if p.workload == "train"][0]
    assert train.status == "nan" and "non-finite" in train.error


def test_interrupt_then_resume_gives_the_same_points(tiny_scenario, tiny_run, tmp_path):
    path = tiny_scenario()
    full = tiny_run  # the same scenario, measured without interruption

    def stop_after_first(point, record):
        raise KeyboardInterrupt

    with pytest.raises(Interrupted) as info:
        run(path, tmp_path / "part", hooks=Hooks(point_done=stop_after_first))
    assert info.value.exit_code == 130
    files = list((tmp_path / "part").glob("*.json"))
    assert len(files) == 1
    partial = json.loads(files[0].read_text())
    assert partial["status"] == "interrupted" and len(partial["points"]) == 1

    logs = []
    resumed = run(path, tmp_path / "part", resume=True, hooks=Hooks(log=logs.append))
    assert resumed.path == files[0]
    assert resumed.skipped == 1
    assert any("1 of 3 points already measured" in line for line in logs)
    assert [p.key for p in resumed.run.points] == [p.key for p in full.run.points]
    assert resumed.run.status == "complete"


def test_quick_shortens_windows(tiny_scenario, tmp_path):
    outcome = run(tiny_scenario(), tmp_path / "out", quick_run=True)
    assert outcome.run.quick is True
    # This run has the meters a CPU gets by default: the CPU's energy is an estimate, and says so.
    data = json.loads(outcome.path.read_text())
    assert all(rep["components"]["cpu"]["method"] == "estimated" for p in data["points"] for rep in p["repeats"])
    assert outcome.run.scenario["measurement"]["min_seconds"] == 0.3
