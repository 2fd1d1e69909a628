"""The serve workload: continuous batching gives each request the tokens it gets alone,
the stream is seeded, the window is steady state, energy is attributed and adds up,
and recommend answers from the results."""

import json
import math

import pytest
import torch
from click.testing import CliRunner

from carbonbench import opt
from carbonbench import results as res
from carbonbench import scenario as sc
from carbonbench.cli import cli as main
from carbonbench.engines import make_engine
from carbonbench.errors import ConfigError
from carbonbench.opt.model import generate
from carbonbench.recommend import recommend
from carbonbench.request_stream import RequestSpec, longest_request, requests
from carbonbench.runner import Runner
from carbonbench.serve_config import LengthDist, ServeConfig
from carbonbench.serve_measure import attribute, summarise
from carbonbench.serving import ContinuousBatcher, Served, StepSpan, Trace


@pytest.fixture(scope="module")
def tiny():
    return opt.load_card(sc.model_card("opt-tiny"), seed=0).eval()


def _prompts(specs, vocab, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(4, vocab, (s.prompt_tokens,), generator=g) for s in specs]


@pytest.mark.parametrize("concurrency", [0, 2])
def test_continuous_batching_gives_each_request_its_tokens_alone(tiny, concurrency):
    # Mixed lengths, arrivals that overlap, slots reused, holes below the highest slot.
    specs = [RequestSpec(i, 0.002 * i, 3 + (i * 5) % 11, 1 + (i * 7) % 9) for i in range(10)]
    prompts = _prompts(specs, tiny.arch.vocab_size)
    server = ContinuousBatcher(tiny, make_engine(None, "cpu"), 3, 32, lambda: None)
    trace = server.serve(specs, prompts, concurrency=concurrency, keep_tokens=True)
    assert sorted(r.index for r in trace.served) == list(range(10))
    assert max(s.rows for s in trace.steps if s.kind == "decode") > 1  # requests really shared steps
    for r in trace.served:
        alone = generate(tiny, prompts[r.index][None], r.output_tokens)[0].tolist()
        assert r.tokens == alone, r.index
        assert r.arrival_s <= r.admitted_s <= r.first_token_s <= r.finish_s


def test_the_stream_is_seeded_and_a_rate_changes_arrivals_not_lengths():
    cfg = ServeConfig(rate_rps=[2.0], requests=20, seed=3)
    a, b = requests(cfg, 2.0), requests(cfg, 2.0)
    assert a == b
    faster = requests(cfg, 8.0)
    assert [(r.prompt_tokens, r.output_tokens) for r in a] == [(r.prompt_tokens, r.output_tokens) for r in faster]
    assert faster[-1].arrival_s < a[-1].arrival_s and a[0].arrival_s == 0.0
    other = requests(ServeConfig(rate_rps=[2.0], requests=20, seed=4), 2.0)
    assert [r.prompt_tokens for r in other] != [r.prompt_tokens for r in a]
    assert all(16 <= r.prompt_tokens <= 64 for r in a)
    closed = requests(ServeConfig(arrival="closed", concurrency=[2], requests=5))
    assert all(r.arrival_s is None for r in closed)
    lognormal = requests(
        ServeConfig(rate_rps=[1.0], requests=200, output_tokens=LengthDist("lognormal", mean=20, min=2, max=90)), 1.0
    )
    assert all(2 <= r.output_tokens <= 90 for r in lognormal)


def test_a_prompts_file_gives_lengths_and_a_bad_line_is_named(tmp_path):
    good = tmp_path / "req.jsonl"
    good.write_text('{"prompt_tokens": 5, "output_tokens": 7}\n\n{"prompt_tokens": 9}\n')
    cfg = ServeConfig(rate_rps=[1.0], requests=4, prompts=str(good), output_tokens=LengthDist("fixed", mean=3))
    got = [(r.prompt_tokens, r.output_tokens) for r in requests(cfg, 1.0)]
    assert got == [(5, 7), (9, 3), (5, 7), (9, 3)]
    assert longest_request(cfg) == (9, 7)
    for text, why in (
        ('{"prompt_tokens": 5}\n{"prompt_tokens": -1}\n', "line 2: prompt_tokens must be a whole number"),
        ("[1]\n", "line 1: expected a JSON object"),
        ("{oops\n", "line 1: invalid JSON"),
        ('{"output_tokens": 3}\n', 'line 1: give "prompt_tokens"'),
    ):
        bad = tmp_path / f"bad{len(why)}.jsonl"
        bad.write_text(text)
        with pytest.raises(ConfigError, match=why):
            requests(ServeConfig(rate_rps=[1.0], requests=2, prompts=str(bad)), 1.0)


def _scenario(tmp_path, serve: str, extra: str = "") -> str:
    path = tmp_path / "serve.yaml"
    path.write_text(
        "name: tiny-serve\nmodels: [opt-tiny]\ndevice: cpu\n"
        + extra
        + "workloads:\n  serve:\n"
        + serve
        + "measurement:\n"
        "  warmup_steps: 1\n  warmup_s: 0\n  min_seconds: 0.05\n  repeats: 2\n  idle_baseline_s: 0.1\n"
        "  codecarbon: false\n"
    )
    return str(path)


SERVE = (
    "    rate_rps: [400]\n    requests: 16\n    max_batch: [2, 4]\n"
    "    prompt_tokens: {dist: uniform, min: 4, max: 12}\n    output_tokens: {dist: uniform, min: 2, max: 8}\n"
)


@pytest.mark.parametrize(
    "serve, extra, key",
    [
        ("    arrival: poisson\n", "", "workloads.serve.rate_rps"),
        ("    arrival: closed\n    rate_rps: [1]\n", "", "workloads.serve.concurrency"),
        ("    rate_rps: [1]\n    max_batch: [0]\n", "", "workloads.serve.max_batch"),
        ("    rate_rps: [1]\n", "engine: transformers\n", "engine"),
        ("    rate_rps: [1]\n    output_tokens: {dist: uniform, min: 1, max: 4000}\n", "", "workloads.serve"),
    ],
)
def test_bad_serve_settings_are_one_config_error_naming_the_key(tmp_path, serve, extra, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        sc.load(_scenario(tmp_path, serve, extra))


def test_a_served_run_records_steady_state_latencies_and_attributed_energy(tmp_path):
    scenario = sc.load(_scenario(tmp_path, SERVE))
    points = sc.expand(scenario)
    assert [p.key for p in points] == ["opt-tiny/serve/b2/r400-p12-n8", "opt-tiny/serve/b4/r400-p12-n8"]
    outcome = Runner(scenario, tmp_path / "out").run()
    assert outcome.failed == 0
    for point in outcome.run.points:
        assert point.batch_size in (2, 4) and point.rate_rps == 400
        for rep in point.repeats:
            s = rep.serve
            assert s["requests"] >= 1 and rep.tokens == s["output_tokens"] > 0
            assert s["window_start_s"] > 0  # the ramp-up is left out
            e = s["energy"]
            assert e["method"] == "attributed"
            assert e["prefill_j"] + e["decode_j"] + e["idle_j"] == pytest.approx(rep.energy_j)
            for lat in ("ttft_s", "tpot_s", "e2e_s", "queue_s"):
                assert s[lat]["p50"] <= s[lat]["p90"] <= s[lat]["p99"]
            assert s["joules_per_request"] == pytest.approx(rep.energy_j / rep.tokens * s["output_tokens_per_request"])
    df = res.load([outcome.path])
    assert set(df["workload"]) == {"serve"}
    assert df["co2e_g_per_1k_requests"].notna().all() and df["ttft_p90_s"].notna().all()

    best = recommend(df, tpot_ms=1e6)
    assert len(best) == 1 and best.iloc[0]["max_batch"] in (2, 4)
    assert best.iloc[0]["objective"] == pytest.approx(
        min(df[df["batch_size"] == b]["joules_per_request"].mean() for b in (2, 4))
    )
    assert recommend(df, tpot_ms=1e-6).iloc[0]["best"] is None

    cli = CliRunner()
    out = cli.invoke(main, ["recommend", str(outcome.path), "--tpot-ms", "100000", "--format", "json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)[0]["max_batch"] in (2, 4)
    text = cli.invoke(main, ["recommend", str(outcome.path), "--tpot-ms", "100000"])
    assert text.exit_code == 0 and "max_batch" in text.output and "vs fastest" in text.output
    est = cli.invoke(
        main,
        ["estimate", "--from", str(outcome.path), "--requests-per-day", "1e6", "--tpot-ms", "1e5", "--format", "json"],
    )
    assert est.exit_code == 0, est.output
    e = json.loads(est.output)
    assert e["method"] == "estimate" and e["devices"] == math.ceil(1e6 / 86400 / e["requests_per_s_per_device"])
    assert e["facility_kwh_per_day"] == pytest.approx(1e6 * e["joules_per_request"] / 3.6e6 * e["pue"])
    assert e["per_year"]["co2e_t"] == pytest.approx(e["co2e_kg_per_day"] * 365 / 1000)
    both = cli.invoke(
        main,
        [
            "estimate",
            "--from",
            str(outcome.path),
            "--requests-per-day",
            "1e6",
            "--tpot-ms",
            "50",
            "--tokens-per-request",
            "100",
        ],
    )
    assert both.exit_code == 2 and "--tokens-per-request cannot be used" in both.output
    html = tmp_path / "r.html"
    report = cli.invoke(main, ["report", str(outcome.path), "-o", str(html)])
    assert report.exit_code == 0, report.output
    page = html.read_text()
    assert 'id="serve-points"' in page and "Cheapest setting per deadline" in page
    # Every table and figure names a serve point by its load, as its key does.
    from carbonbench.report import load as load_report

    labels = set(load_report([outcome.path]).points["label"])
    assert labels == {"opt-tiny serve b2 r400", "opt-tiny serve b4 r400"}
    assert "opt-tiny serve b2 r400" in page and "serve b2 c0" not in page


def test_recommend_without_serve_points_is_exit_2(tiny_scenario, tmp_path):
    outcome = Runner(sc.load(tiny_scenario()), tmp_path / "out").run()
    out = CliRunner().invoke(main, ["recommend", str(outcome.path), "--tpot-ms", "50"])
    assert out.exit_code == 2 and "no serve points" in out.output and "Traceback" not in out.output


def test_attribution_splits_the_window_by_step_time_and_idle_gaps():
    served = [Served(0, 4, 3, 0.0, 0.0, 1.0, 3.0), Served(1, 4, 2, 0.5, 1.0, 2.0, 3.0)]
    steps = [
        StepSpan(0.0, 1.0, "prefill", (0,), 1, 0.0, 0.0),
        StepSpan(1.0, 2.0, "prefill", (1,), 1, 0.0, 0.0),
        StepSpan(2.0, 3.0, "decode", (0, 1), 2, 0.0, 0.0),
    ]  # then 1 s idle before the window closes at 4 s
    trace = Trace(100.0, served, steps, [0.0, 0.5])
    overlaps = [1.0, 1.0, 1.0]
    even = attribute(trace, overlaps, 0.0, 4.0, 40.0, None)
    assert (even["prefill_j"], even["decode_j"], even["idle_j"]) == pytest.approx((20.0, 10.0, 10.0))
    at_idle = attribute(trace, overlaps, 0.0, 4.0, 40.0, 4.0)
    assert (at_idle["prefill_j"], at_idle["decode_j"], at_idle["idle_j"]) == pytest.approx((24.0, 12.0, 4.0))
    # request 0: prefill 12 + half the decode 6 = 18; request 1 likewise; the idle 4 J shared in proportion
    assert at_idle["per_request_j"]["mean"] == pytest.approx(20.0) and at_idle["per_request_j"]["n"] == 2
    serve, tokens, n_steps, _, _ = summarise(trace, 100.0, 4.0, 40.0, None, ramp=1)
    assert tokens == 1 + 1 + 2 and n_steps == 3
    assert serve["ttft_s"]["p50"] == pytest.approx(1.25) and serve["queue_s"]["p99"] == pytest.approx(0.495)
    assert serve["mean_batch"] == 2.0 and serve["busy_fraction"] == 0.75
    assert math.isclose(serve["joules_per_request"], 40.0 / 4 * 2.5)
