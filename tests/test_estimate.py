"""Whole-job estimates (training, power, inference), the OPT-175B check, and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from carbonbench.carbon import CostConfig, EmbodiedConfig
from carbonbench.cli import cli
from carbonbench.equivalents import FACTORS, equivalents
from carbonbench.errors import UserError
from carbonbench.estimate import (
    Facility,
    estimate_inference,
    estimate_power,
    estimate_training,
    facility_for_point,
    select_point,
    training_flops,
)
from carbonbench.grid import explicit_intensity, resolve
from carbonbench.hardware import HARDWARE_FILE_ENV, get_hardware
from carbonbench.opt.card import find_card

# The grid intensity the published OPT-175B figures imply: 75 tCO2e (Zhang et al. 2022,
# "OPT: Open Pre-trained Transformer Language Models", arXiv 2205.01068, section 6) over
# about 320 MWh (992 A100s at 400 W for about 800 hours) is about 0.23 kgCO2e/kWh.
OPT_IMPLIED_G_PER_KWH = 230.0


@pytest.fixture(autouse=True)
def _no_user_hardware(monkeypatch):
    monkeypatch.delenv(HARDWARE_FILE_ENV, raising=False)


def _invoke(*args: str):
    return CliRunner().invoke(cli, ["estimate", *args])


# ---- training ---------------------------------------------------------------------------

def test_training_flops():
    assert training_flops(1e9, 1e10) == 6e19
    assert training_flops(1e9, 1e10, recompute=True) == 8e19
    with pytest.raises(UserError):
        training_flops(0, 1e10)


def test_opt_175b_lands_near_the_published_75_tco2e():
    """992 A100-80GB at 147 TFLOP/s for 300B tokens with recomputation (OPT paper 2.4, 6).

    Assumed: 400 W per GPU (the A100 SXM4 TDP, datasheet), PUE 1.0, and the grid intensity
    the published figures imply (about 230 gCO2e/kWh). Published: 75 tCO2e, about 33 days.
    """
    card = find_card("opt-175b")
    pub = card.published
    est = estimate_training(
        params=card.param_count(), tokens=pub.training_tokens, hardware=get_hardware(pub.hardware),
        devices=pub.devices, achieved_flops_per_s=pub.achieved_tflops_per_device * 1e12,
        recompute=True, model=card.name,
        facility=Facility(grid=explicit_intensity(OPT_IMPLIED_G_PER_KWH, "OPT check"), pue=1.0),
    )
    assert est.flops == pytest.approx(4.2e23, rel=0.01)  # "about 4.3e23" in the chronicles
    assert est.wall_days == pytest.approx(33, rel=0.02)  # "about 33 days"
    assert est.device_power_w == 400
    assert est.energy_mwh == pytest.approx(320, rel=0.02)
    assert est.mfu == pytest.approx(147 / 312)
    assert est.co2e_t == pytest.approx(pub.emissions_tco2e, rel=0.05)
    assert any("400 W" in a and "TDP" in a for a in est.assumptions)
    assert any("PUE 1.0" in a for a in est.assumptions)
    # Without recomputation the same run would be a quarter shorter.
    est6 = estimate_training(
        params=card.param_count(), tokens=pub.training_tokens, hardware=get_hardware("a100-80gb"),
        devices=992, achieved_flops_per_s=147e12, facility=Facility(grid=explicit_intensity(230)),
    )
    assert est6.co2e_t == pytest.approx(est.co2e_t * 6 / 8)


def test_opt_175b_check_through_the_cli():
    result = _invoke("--model", "opt-175b", "--tokens", "300e9", "--hardware", "a100-80gb", "--devices", "992",
                     "--achieved-tflops", "147", "--recompute", "--grid-g-per-kwh", "230", "--pue", "1.0",
                     "--format", "json")
    assert result.exit_code == 0, result.output
    d = json.loads(result.output)
    for key in ("energy_mwh", "co2e_t", "device_hours", "wall_days", "cost_usd", "flops", "assumptions"):
        assert key in d
    assert d["co2e_t"] == pytest.approx(75, rel=0.05)
    assert d["wall_days"] == pytest.approx(33.3, abs=0.1)
    assert d["energy_mwh"] == pytest.approx(316.7, abs=0.1)
    text = _invoke("--model", "opt-175b", "--hardware", "a100-80gb", "--devices", "992",
                   "--achieved-tflops", "147", "--recompute", "--grid-g-per-kwh", "230")
    assert text.exit_code == 0, text.output
    assert "72.85 tCO2e" in text.output and "33.3 days" in text.output
    assert "from the opt-175b card" in text.output  # tokens defaulted from the card, and said so
    assert "New York to San Francisco" in text.output


def test_mfu_and_achieved_are_the_same_thing():
    hw = get_hardware("h100-sxm")
    f = Facility(grid=resolve("FRA"))
    a = estimate_training(params=1e9, tokens=1e11, hardware=hw, devices=8, facility=f, mfu=0.4)
    b = estimate_training(params=1e9, tokens=1e11, hardware=hw, devices=8, facility=f,
                          achieved_flops_per_s=0.4 * 989e12)
    assert a.wall_hours == pytest.approx(b.wall_hours)
    assert a.device_hours == pytest.approx(6e20 / (0.4 * 989e12) / 3600)
    assert a.energy_mwh == pytest.approx(a.device_hours * 700 / 1e6)  # TDP by default
    with pytest.raises(UserError, match="above"):
        estimate_training(params=1e9, tokens=1e11, hardware=hw, devices=8, facility=f, achieved_flops_per_s=2e15)
    with pytest.raises(UserError, match="exactly one"):
        estimate_training(params=1e9, tokens=1e11, hardware=hw, devices=8, facility=f)


def test_pue_prices_and_embodied_are_applied_and_kept_apart():
    hw = get_hardware("a100-80gb")
    f = Facility(grid=explicit_intensity(100), pue=1.5, cost=CostConfig(0.1, 2.0),
                 embodied=EmbodiedConfig(enabled=True))
    e = estimate_training(params=1e9, tokens=1e10, hardware=hw, devices=4, facility=f, mfu=0.5,
                          device_power_w=300)
    assert e.it_energy_mwh == pytest.approx(e.device_hours * 0.3 / 1e3)
    assert e.energy_mwh == pytest.approx(e.it_energy_mwh * 1.5)
    assert e.co2e_t == pytest.approx(e.energy_mwh * 100 / 1e3)
    assert e.cost_usd == pytest.approx(e.energy_mwh * 1e3 * 0.1 + e.device_hours * 2.0)
    assert e.embodied_co2e_t == pytest.approx(e.device_hours * 150e3 / (6 * 8760 * 0.85) / 1e6)
    assert "BLOOM" in e.embodied_source
    with pytest.raises(UserError, match="no embodied figure for h100-sxm"):
        estimate_training(params=1e9, tokens=1e10, hardware=get_hardware("h100-sxm"), devices=4,
                          facility=f, mfu=0.5)


# ---- power ------------------------------------------------------------------------------

def test_power_mode_from_first_principles():
    p = estimate_power(devices=8, device_power_w=700, hours=24, facility=Facility(grid=resolve("FRA"), pue=1.2))
    assert p.it_energy_mwh == pytest.approx(8 * 700 * 24 / 1e6)
    assert p.energy_mwh == pytest.approx(8 * 700 * 24 * 1.2 / 1e6)
    assert p.co2e_t == pytest.approx(p.energy_mwh * resolve("FRA").g_per_kwh / 1e3)
    assert p.device_hours == 192 and p.wall_days == 1
    by_tdp = estimate_power(devices=2, hours=10, hardware=get_hardware("l4"), facility=Facility(grid=resolve("USA")))
    assert by_tdp.device_power_w == 72


def test_power_mode_through_the_cli():
    r = _invoke("--devices", "8", "--device-power-w", "700", "--hours", "24", "--country", "FRA",
                "--pue", "1.2", "--format", "json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["mode"] == "power" and d["energy_mwh"] == pytest.approx(0.16128)
    assert "global_energy_mix.json: FRA" in d["grid_source"]
    text = _invoke("--devices", "8", "--hardware", "h100-sxm", "--hours", "24")
    assert text.exit_code == 0, text.output
    assert "the default country" in text.output  # a default grid is never silent
    assert "TDP of the NVIDIA H100 SXM5 80GB" in text.output


# ---- inference --------------------------------------------------------------------------

def _results_df() -> pd.DataFrame:
    """Two decode points and a train point on an H100, as carbonbench.results.load gives them."""
    from carbonbench.carbon import derive

    def row(**kw):
        base = dict(run_id="r", hostname="h", device_type="cuda", device_name="NVIDIA H100 80GB HBM3",
                    n_devices=1, model="opt-1.3b", engine="native", dtype="bfloat16", workload="decode",
                    batch_size=8, prompt_tokens=128, new_tokens=64, seq_len=0, repeat=0, status="ok",
                    tokens=512, duration_s=0.5, flops=4e13, energy_j=150.0, grid_country="DEU",
                    grid_region=None, grid_g_per_kwh=np.nan, pue=1.1, usd_per_kwh=0.3, usd_per_device_hour=2.0)
        base.update(kw)
        return base

    return derive(pd.DataFrame([
        row(repeat=0, energy_j=150.0), row(repeat=1, energy_j=170.0),
        row(batch_size=32, tokens=2048, energy_j=300.0),
        row(batch_size=64, status="oom", tokens=None, energy_j=None, duration_s=None),
        row(workload="train", batch_size=4, prompt_tokens=0, new_tokens=0, seq_len=2048, tokens=8192,
            duration_s=0.4, flops=1.6e14, energy_j=240.0),
    ]))


def test_select_point_needs_exactly_one():
    df = _results_df()
    with pytest.raises(UserError) as err:
        select_point(df, workloads=("decode",))
    assert "2 measured points" in str(err.value) and "--select" in str(err.value)
    assert "batch_size=8" in str(err.value) and "batch_size=32" in str(err.value)
    p = select_point(df, workloads=("decode",), select={"batch_size": "8"})
    assert p.repeats == 2 and p.tokens == 1024 and p.energy_j == 320.0
    assert p.joules_per_token == pytest.approx(320 / 1024)
    assert p.hardware.name == "h100-sxm"
    with pytest.raises(UserError, match="no successful measured point"):
        select_point(df, workloads=("decode",), select={"batch_size": "64"})  # only an OOM there
    with pytest.raises(UserError, match="no column 'batch'"):
        select_point(df, select={"batch": "8"})
    train = select_point(df, workloads=("train",))
    assert train.mfu == pytest.approx(1.6e14 / 0.4 / 989e12)


def test_inference_daily_figures():
    df = _results_df()
    point = select_point(df, workloads=("decode",), select={"batch_size": "8"})
    facility = facility_for_point(point)  # the results' own grid, PUE and prices
    assert facility.pue == 1.1 and facility.cost.usd_per_kwh == 0.3
    assert facility.grid.g_per_kwh == resolve("DEU").g_per_kwh
    e = estimate_inference(point, requests_per_day=1e6, tokens_per_request=500, facility=facility)
    tokens = 5e8
    kwh = tokens * (320 / 1024) / 3.6e6 * 1.1
    device_hours = tokens * 1.0 / (1024 / 1.0) / 3600  # 1024 tokens in 1.0 device-second
    assert e.tokens_per_day == tokens
    assert e.energy_kwh_per_day == pytest.approx(kwh)
    assert e.co2e_kg_per_day == pytest.approx(kwh * resolve("DEU").g_per_kwh / 1e3)
    assert e.device_hours_per_day == pytest.approx(device_hours)
    assert e.cost_usd_per_day == pytest.approx(kwh * 0.3 + device_hours * 2.0)
    assert e.co2e_t_per_year == pytest.approx(e.co2e_kg_per_day * 365 / 1e3)
    assert e.embodied_co2e_kg_per_day is None
    quebec = facility_for_point(point, grid=resolve("CAN", "quebec"), pue=1.0)
    assert estimate_inference(point, requests_per_day=1e6, tokens_per_request=500,
                              facility=quebec).co2e_kg_per_day < e.co2e_kg_per_day / 50


@pytest.fixture()
def results_file(tmp_path):
    """A schema-1 result file on an H100 (bf16), read back through carbonbench.results.load."""
    def rep(i, tokens, duration, flops, energy):
        return {"repeat": i, "steps": 1, "tokens": tokens, "flops": flops, "duration_s": duration,
                "energy_j": energy, "energy_method": "counter", "components": {}}

    def point(workload, batch, prompt, new, seq, repeats, status="ok"):
        return {"model": "opt-1.3b", "workload": workload, "batch_size": batch, "prompt_tokens": prompt,
                "new_tokens": new, "seq_len": seq, "status": status, "repeats": repeats}

    run = {
        "schema": "carbonbench.run", "schema_version": 1, "run_id": "fixture", "status": "complete",
        "scenario": {"name": "fixture", "carbon": {"country": "DEU", "pue": 1.1},
                     "cost": {"usd_per_kwh": 0.3, "usd_per_device_hour": 2.0}},
        "device": {"type": "cuda", "name": "NVIDIA H100 80GB HBM3", "count": 1, "dtype": "bfloat16"},
        "environment": {"hostname": "gpu-1"},
        "points": [
            point("decode", 8, 128, 64, 0, [rep(0, 512, 0.5, 4e13, 150.0), rep(1, 512, 0.5, 4e13, 170.0)]),
            point("decode", 64, 128, 64, 0, [], status="oom"),
            point("train", 4, 0, 0, 2048, [rep(0, 8192, 0.4, 1.6e14, 240.0)]),
        ],
    }
    path = tmp_path / "run.json"
    path.write_text(json.dumps(run))
    return path


def test_inference_through_the_cli(results_file):
    r = _invoke("--from", str(results_file), "--requests-per-day", "1e6", "--tokens-per-request", "500",
                "--format", "json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["mode"] == "inference" and d["tokens_per_day"] == 5e8
    assert d["joules_per_token"] == pytest.approx(320 / 1024)
    assert "global_energy_mix.json: DEU" in d["grid_source"]
    r = _invoke("--from", str(results_file), "--requests-per-day", "1e6", "--tokens-per-request", "500",
                "--country", "CAN", "--region", "quebec", "--embodied-kgco2e", "300",
                "--embodied-source", "an LCA")
    assert r.exit_code == 0, r.output
    assert "quebec" in r.output and "separate from operational" in r.output and "an LCA" in r.output


def test_training_mfu_from_results_through_the_cli(results_file):
    r = _invoke("--model", "opt-175b", "--tokens", "300e9", "--devices", "992", "--from", str(results_file),
                "--hardware", "a100-80gb", "--format", "json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    measured_mfu = 1.6e14 / 0.4 / 989e12
    assert d["mfu"] == pytest.approx(measured_mfu)
    assert d["achieved_flops_per_s_per_device"] == pytest.approx(measured_mfu * 312e12)
    assert any("measured on NVIDIA H100" in a for a in d["assumptions"])


# ---- bad input: one clear line, exit status 2 --------------------------------------------

TRAIN = ["--model", "opt-1.3b", "--tokens", "1e9", "--hardware", "h100-sxm", "--devices", "8", "--mfu", "0.4"]


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--model", "opt-1.3b", "--tokens", "1e9", "--hardware", "h100-sxm", "--devices", "0", "--mfu", "0.4"],
         "0 is not in the range"),
        (["--model", "opt-1.3b", "--tokens", "1e9", "--hardware", "h100-sxm", "--devices", "-3", "--mfu", "0.4"],
         "-3 is not in the range"),
        (["--model", "opt-1.3b", "--tokens", "0", "--hardware", "h100-sxm", "--devices", "8", "--mfu", "0.4"],
         "must be a positive number"),
        (["--model", "opt-1.3b", "--tokens", "-1e9", "--hardware", "h100-sxm", "--devices", "8", "--mfu", "0.4"],
         "must be a positive number"),
        (["--model", "opt-1.3b", "--tokens", "lots", "--hardware", "h100-sxm", "--devices", "8", "--mfu", "0.4"],
         "is not a number"),
        (["--devices", "8", "--device-power-w", "0", "--hours", "1"], "--device-power-w"),
        (TRAIN[:5] + ["a100"] + TRAIN[6:], "unknown hardware 'a100'"),
        (TRAIN + ["--country", "Narnia"], "unknown country 'Narnia'"),
        (TRAIN + ["--country", "USA", "--region", "californa"], "did you mean 'california'"),
        (TRAIN + ["--region", "quebec"], "--region needs --country"),
        (TRAIN + ["--achieved-tflops", "100"], "--mfu and --achieved-tflops cannot be used together"),
        (TRAIN + ["--params", "1e9"], "--model and --params cannot be used together"),
        (TRAIN + ["--grid-g-per-kwh", "100", "--country", "FRA"], "--grid-g-per-kwh cannot be used with"),
        (TRAIN + ["--hours", "5"], "cannot be used in power mode"),
        (TRAIN + ["--pue", "0.9"], "--pue"),
        (TRAIN + ["--mfu", "1.5"], "--mfu"),
        (TRAIN + ["--lifetime-years", "4"], "cannot be used without --embodied"),
        (["--requests-per-day", "100", "--tokens-per-request", "10"], "inference mode needs --from"),
        (["--model", "opt-1.3b", "--tokens", "1e9", "--devices", "8", "--mfu", "0.4"], "needs --hardware"),
        (["--model", "opt-1.3b", "--tokens", "1e9", "--hardware", "h100-sxm", "--devices", "8"], "needs a throughput"),
        (["--params", "1e9", "--hardware", "h100-sxm", "--devices", "8", "--mfu", "0.4"], "needs --tokens"),
        (["--model", "opt-9000b"] + TRAIN[2:], "unknown model card 'opt-9000b'"),
        ([], "nothing to estimate"),
        (["--devices", "8", "--hours", "2"], "needs --device-power-w"),
        (TRAIN + ["--select", "batch_size=8"], "--select picks a point"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_2(args, needle):
    r = _invoke(*args)
    assert r.exit_code == 2, r.output
    assert needle in r.output
    assert "Traceback" not in r.output


def test_bad_results_inputs_exit_2(results_file, tmp_path):
    inference = ["--requests-per-day", "1e6", "--tokens-per-request", "500"]
    r = _invoke("--from", str(results_file), *inference, "--devices", "4")
    assert r.exit_code == 2 and "cannot be used in inference mode" in r.output
    r = _invoke("--from", str(results_file), *inference, "--select", "batch_size=64")
    assert r.exit_code == 2 and "no successful measured point" in r.output
    r = _invoke("--from", str(results_file), *inference, "--select", "nonsense")
    assert r.exit_code == 2 and "KEY=VALUE" in r.output
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    r = _invoke("--from", str(broken), *inference)
    assert r.exit_code == 2 and "not valid JSON" in r.output


def test_equivalents_name_their_sources():
    assert all(f.source and f.g_co2e > 0 for f in FACTORS)
    eq = {e.unit: e for e in equivalents(75e6)}
    assert eq["km"].value == pytest.approx(300_000, rel=0.01)  # 75 t / ~249 g/km, 2 s.f.
    assert eq["round trips"].value == 83  # 75 t / ~900 kg
    assert "EPA" in eq["km"].source and "Strubell" in eq["round trips"].source
    assert equivalents(float("nan")) == []
