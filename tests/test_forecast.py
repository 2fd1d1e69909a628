import torch
from support import ROOT

from carbonbench import scenario as sc
from carbonbench.forecast import Forecast, plan, probe_flops, sweep_forecast


def test_opt_1_3b_training_on_a_cpu_is_flagged_as_hours():
    s = sc.load(ROOT / "scenarios" / "opt-train.yaml")
    points = [p for p in sc.expand(s) if p.model == "opt-1.3b"]
    # 50 GFLOP/s is generous for a 2-core CPU; the sweep still takes hours.
    forecast = Forecast(tuple(plan(s, points, 50e9)), 50e9)
    assert forecast.long
    assert forecast.total_s > 3 * 3600
    assert "opt-1.3b/train/b16/s2048" in forecast.summary


def test_a_small_sweep_is_not_flagged(tiny_scenario):
    s = sc.load(tiny_scenario())
    forecast = sweep_forecast(s, sc.expand(s), torch.device("cpu"), torch.float32)
    assert not forecast.long
    assert forecast.flops_per_s > 0
    # Each point is predicted to take at least its warm-up plus its windows.
    m = s.measurement
    assert all(p.total_s >= m.repeats * m.min_seconds for p in forecast.points)


def test_probe_measures_a_positive_rate():
    assert probe_flops(torch.device("cpu"), torch.float32, seconds=0.05) > 1e6
