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


def test_probe_shapes_follow_the_step():
    from carbonbench.forecast import MAX_PROBE_WEIGHT, probe_shape
    from carbonbench.opt.card import find_card

    arch = find_card("opt-125m").arch
    assert probe_shape(arch, 512, "cpu") == (256, 768, 3072)  # rows capped where the rate stops growing
    rows, k, n = probe_shape(arch, 1, "cpu")  # a decode step: one row against an out-of-cache weight
    assert (rows, k) == (1, 768) and k * n > arch.d_model * arch.ffn_dim and k * n <= MAX_PROBE_WEIGHT
    big = find_card("opt-175b").arch
    assert probe_shape(big, 4096, "cuda")[0] == 4096
    assert probe_shape(big, 1, "cpu")[1] * probe_shape(big, 1, "cpu")[2] <= MAX_PROBE_WEIGHT


def test_training_points_are_planned_at_the_backward_rate(tiny_scenario):
    s = sc.load(tiny_scenario())
    asked = []

    def rate(arch, rows, backward=False):
        asked.append((rows, backward))
        return 1e9

    plan(s, sc.expand(s), rate)
    assert (32, True) in asked and (2, False) in asked and (32, False) in asked  # train; decode step; prefill


def test_the_backward_probe_measures_a_positive_rate():
    assert probe_flops(torch.device("cpu"), torch.float32, seconds=0.01, shape=(8, 16, 32), backward=True) > 1e5


def test_a_serve_point_lasts_at_least_its_arrivals_and_its_batches():
    s = sc.load(ROOT / "scenarios" / "opt-125m-serve.yaml")
    serve, m = s.workloads.serve, s.measurement
    # An infinitely fast machine still waits for the arrivals: requests / rate per repeat.
    for p in plan(s, sc.expand(s), 1e30):
        assert p.total_s >= m.repeats * serve.requests / p.point.rate_rps
    # A slow one is bound by the work: one full decode batch per max_batch requests.
    for p in plan(s, sc.expand(s), 1e6):
        assert p.total_s >= m.repeats * (serve.requests / p.point.batch_size) * p.step_s
