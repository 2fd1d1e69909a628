"""Grid intensity from codecarbon's data, and the derived carbon/cost/efficiency columns."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carbonbench import grid
from carbonbench.carbon import (
    DEFAULT_PLACES,
    DERIVED_COLUMNS,
    EMBODIED_COLUMNS,
    CarbonConfig,
    CostConfig,
    EmbodiedConfig,
    derive,
    where_to_run,
)
from carbonbench.config import build
from carbonbench.errors import ConfigError, ResultsError

# ---- grid ------------------------------------------------------------------------------


def _bundled_country(code: str) -> float:
    with open(grid.data_dir() / "global_energy_mix.json") as f:
        return json.load(f)[code]["carbon_intensity"]


@pytest.mark.parametrize("code", ["FRA", "USA", "DEU", "POL", "IND", "CAN"])
def test_country_intensity_is_codecarbons_figure(code):
    g = grid.country_intensity(code)
    assert g.g_per_kwh == _bundled_country(code)
    assert "global_energy_mix.json" in g.source and code in g.source
    assert grid.country_intensity(code.lower()).g_per_kwh == g.g_per_kwh


def test_country_by_name():
    assert grid.resolve("France").country == "FRA"


@pytest.mark.parametrize(
    "country, region",
    [
        ("CAN", "quebec"),
        ("CAN", "ontario"),
        ("USA", "california"),
        ("USA", "texas"),
        ("CHN", "beijing"),
        ("SWE", "SE3"),
        ("NOR", "NO4"),
        ("FRA", None),
        ("IND", None),
    ],
)
def test_same_number_as_codecarbon_itself(country, region):
    """Our reading of the files agrees with codecarbon's own emission arithmetic."""
    from codecarbon.core.emissions import Emissions
    from codecarbon.core.units import Energy
    from codecarbon.external.geography import GeoMetadata
    from codecarbon.input import DataSource

    theirs_kg = Emissions(DataSource()).get_private_infra_emissions(
        Energy.from_energy(1.0), GeoMetadata(country_iso_code=country, region=region)
    )
    assert grid.resolve(country, region).g_per_kwh == pytest.approx(theirs_kg * 1000, rel=1e-9)


def test_quebec_is_hydro_low_and_sources_differ_by_file():
    quebec = grid.resolve("CAN", "quebec")
    assert 1 < quebec.g_per_kwh < 10
    assert "canada_energy_mix.json: quebec" in quebec.source
    assert "usa_emissions.json: california" in grid.resolve("USA", "CA").source  # state code works


def test_explicit_intensity_wins():
    g = grid.resolve("USA", "california", 123.0, where="scenario")
    assert g.g_per_kwh == 123.0
    assert g.source.startswith("scenario:")


@pytest.mark.parametrize(
    "country, region, needle",
    [
        ("FRAN", None, "did you mean 'FRA'"),
        ("Atlantis", None, "unknown country 'Atlantis'"),
        ("USA", "californa", "did you mean 'california'"),
        ("CAN", "quebek", "did you mean 'quebec'"),
        ("FRA", "paris", "no regional data for FRA"),
        ("CHN", "tibet", "unknown region 'tibet'"),  # codecarbon would quietly use the national figure
        (None, None, "no grid given"),
    ],
)
def test_unknown_places_are_errors_never_the_world_average(country, region, needle):
    with pytest.raises(ConfigError) as err:
        grid.resolve(country, region)
    assert needle in str(err.value)


def test_carbon_config_validates_at_load_with_the_key():
    with pytest.raises(ConfigError) as err:
        build(CarbonConfig, {"country": "USA", "region": "californa"}, source="s.yaml")
    assert "s.yaml: region:" in str(err.value) and "california" in str(err.value)
    with pytest.raises(ConfigError, match="s.yaml: country:"):
        build(CarbonConfig, {"country": "XXX"}, source="s.yaml")
    with pytest.raises(ConfigError, match="pue"):
        build(CarbonConfig, {"pue": 0.9}, source="s.yaml")
    cfg = build(CarbonConfig, {"country": "CAN", "region": "quebec", "embodied": {"enabled": True}}, source="s")
    assert cfg.embodied.enabled and cfg.embodied.lifetime_years == 6.0
    with pytest.raises(ConfigError, match="source"):
        build(CarbonConfig, {"embodied": {"enabled": True, "kgco2e_per_device": 300}}, source="s")


# ---- derive ----------------------------------------------------------------------------


def _row(**changes):
    row = dict(
        run_id="r1",
        hostname="h",
        device_type="cuda",
        device_name="NVIDIA A100-SXM4-80GB",
        n_devices=2,
        model="opt-1.3b",
        params=1_315_758_080,
        engine="native",
        dtype="bfloat16",
        workload="train",
        batch_size=8,
        prompt_tokens=0,
        new_tokens=0,
        seq_len=2048,
        repeat=0,
        status="ok",
        tokens=16384,
        duration_s=2.0,
        flops=3.0e14,
        model_flops=2.4e14,
        energy_j=1800.0,
        grid_country="FRA",
        grid_region=None,
        grid_g_per_kwh=np.nan,
        pue=1.2,
        usd_per_kwh=0.2,
        usd_per_device_hour=3.0,
    )
    row.update(changes)
    return row


def test_derived_columns_by_hand():
    d = derive(pd.DataFrame([_row()])).iloc[0]
    for col in DERIVED_COLUMNS:
        assert col in d.index
    fra = _bundled_country("FRA")
    kwh = 1800.0 / 3.6e6
    assert d.grid_g_per_kwh == fra
    assert "global_energy_mix.json: FRA" in d.grid_source
    assert d.joules_per_token == pytest.approx(1800 / 16384)
    assert d.tokens_per_joule == pytest.approx(16384 / 1800)
    assert d.kwh_per_million_tokens == pytest.approx(kwh / 16384 * 1e6)
    assert d.facility_kwh_per_million_tokens == pytest.approx(kwh * 1.2 / 16384 * 1e6)
    assert d.co2e_g == pytest.approx(kwh * 1.2 * fra)
    assert d.co2e_g_per_million_tokens == pytest.approx(kwh * 1.2 * fra / 16384 * 1e6)
    device_hours = 2.0 * 2 / 3600
    assert d.device_hours == pytest.approx(device_hours)
    assert d.usd_per_million_tokens == pytest.approx((kwh * 1.2 * 0.2 + device_hours * 3.0) / 16384 * 1e6)
    assert d.usd_electricity_per_million_tokens + d.usd_rental_per_million_tokens == pytest.approx(
        d.usd_per_million_tokens
    )
    assert d.achieved_flops_per_s == pytest.approx(1.5e14)
    assert d.hardware == "a100-80gb"
    assert d.peak_flops_per_s == pytest.approx(2 * 312e12)  # both devices
    assert d.achieved_model_flops_per_s == pytest.approx(1.2e14)
    assert d.mfu == pytest.approx(1.2e14 / (2 * 312e12))  # model FLOPs
    assert d.hfu == pytest.approx(1.5e14 / (2 * 312e12))  # hardware FLOPs, recomputation included
    for col in EMBODIED_COLUMNS:
        assert col not in d.index  # off by default


def test_mfu_only_for_sixteen_bit_runs_on_known_hardware():
    df = pd.DataFrame(
        [
            _row(dtype="float32"),
            _row(device_type="cpu", device_name="Intel(R) Xeon(R)", dtype="bfloat16"),
            _row(device_name="Some Future GPU"),
            _row(dtype="torch.float16"),
        ]
    )
    d = derive(df)
    assert d.mfu.isna().tolist() == [True, True, True, False]
    assert d.hfu.isna().tolist() == [True, True, True, False]
    assert d.hardware.isna().tolist() == [False, True, True, False]
    assert d.peak_flops_per_s.isna().tolist()[1:3] == [True, True]


def test_files_without_model_flops_get_no_mfu_but_an_hfu():
    row = _row()
    del row["model_flops"]
    d = derive(pd.DataFrame([row])).iloc[0]
    assert np.isnan(d.mfu) and np.isnan(d.achieved_model_flops_per_s)
    assert d.hfu == pytest.approx(1.5e14 / (2 * 312e12))


def test_failed_rows_and_zero_tokens_give_nan_not_inf():
    df = pd.DataFrame(
        [
            _row(status="oom", tokens=None, duration_s=None, flops=None, energy_j=None),
            _row(tokens=0, energy_j=0.0),
        ]
    )
    d = derive(df)
    numeric = d[[c for c in DERIVED_COLUMNS if c not in ("grid_source", "hardware")]].astype(float)
    assert not np.isinf(numeric.to_numpy()).any()
    assert d.co2e_g_per_million_tokens.isna().all()
    assert d.tokens_per_joule.isna().all()


def test_empty_dataframe():
    d = derive(pd.DataFrame())
    assert d.empty
    assert set(DERIVED_COLUMNS) <= set(d.columns)
    d = derive(pd.DataFrame(columns=list(_row())), embodied=EmbodiedConfig(enabled=True))
    assert d.empty and set(EMBODIED_COLUMNS) <= set(d.columns)
    assert where_to_run(pd.DataFrame()).empty


def test_each_row_uses_its_own_scenario_and_derive_is_idempotent():
    df = pd.DataFrame(
        [
            _row(),
            _row(grid_country="CAN", grid_region="quebec"),
            _row(grid_country="IND", grid_g_per_kwh=500.0),
        ]
    )
    d = derive(df)
    assert d.grid_g_per_kwh.tolist() == [
        _bundled_country("FRA"),
        pytest.approx(grid.resolve("CAN", "quebec").g_per_kwh),
        500.0,
    ]
    assert d.grid_source.iloc[2].startswith("scenario: 500")
    again = derive(d)
    pd.testing.assert_frame_equal(again, d)


def test_overrides_reprice_every_row():
    df = pd.DataFrame([_row(), _row(grid_country="IND")])
    d = derive(df, carbon=CarbonConfig(country="POL", pue=1.5), cost=CostConfig(usd_per_kwh=0.1, usd_per_device_hour=0))
    pol = _bundled_country("POL")
    assert d.grid_g_per_kwh.tolist() == [pol, pol]
    assert d.pue.tolist() == [1.5, 1.5]
    assert d.grid_country.tolist() == ["POL", "POL"]
    kwh = 1800 / 3.6e6
    assert d.co2e_g.iloc[0] == pytest.approx(kwh * 1.5 * pol)
    assert d.usd_rental_per_million_tokens.iloc[0] == 0
    explicit = derive(df, carbon=CarbonConfig(grid_g_per_kwh=100.0))
    assert explicit.grid_g_per_kwh.tolist() == [100.0, 100.0]
    assert explicit.grid_country.isna().all()


def test_missing_scenario_settings_is_a_results_error_unless_overridden():
    df = pd.DataFrame([_row()]).drop(columns=["grid_country", "pue"])
    with pytest.raises(ResultsError, match="grid_country"):
        derive(df)
    d = derive(df, carbon=CarbonConfig(country="DEU"))
    assert d.grid_g_per_kwh.iloc[0] == _bundled_country("DEU")


def test_embodied_is_separate_and_amortised_as_in_bloom():
    df = pd.DataFrame([_row(), _row(device_name="NVIDIA H100 80GB HBM3")])
    plain = derive(df)
    d = derive(df, embodied=EmbodiedConfig(enabled=True))
    per_hour = 150.0 * 1000 / (6 * 8760 * 0.85)  # gCO2e per A100-hour
    assert d.embodied_co2e_g.iloc[0] == pytest.approx(d.device_hours.iloc[0] * per_hour)
    assert d.embodied_co2e_g_per_million_tokens.iloc[0] == pytest.approx(d.embodied_co2e_g.iloc[0] / 16384 * 1e6)
    assert "BLOOM" in d.embodied_source.iloc[0]
    assert math.isnan(d.embodied_co2e_g.iloc[1])  # no published H100 figure
    assert "no embodied figure for h100-sxm" in d.embodied_source.iloc[1]
    # Operational figures do not change when embodied is switched on.
    pd.testing.assert_series_equal(plain.co2e_g, d.co2e_g)
    given_kg = derive(df, embodied=EmbodiedConfig(enabled=True, kgco2e_per_device=318, source="Chien 2023"))
    assert given_kg.embodied_co2e_g.notna().all()
    via_config = derive(df, carbon=CarbonConfig(country="FRA", embodied=EmbodiedConfig(enabled=True)))
    assert "embodied_co2e_g" in via_config.columns


def test_where_to_run_shows_one_measurement_under_six_grids():
    df = pd.DataFrame([_row(repeat=0), _row(repeat=1, energy_j=2200.0), _row(repeat=2, status="nan_loss")])
    table = where_to_run(df)
    assert table.place.tolist() == ["FRA", "CAN/quebec", "USA", "DEU", "POL", "IND"]
    assert (table.repeats == 2).all()  # the failed repeat is left out
    assert table.grid_source.str.contains("codecarbon").all()
    assert table.kwh_per_million_tokens.nunique() == 1  # same measurement everywhere
    expected_kwh = (1800 + 2200) / 2 / 3.6e6 / 16384 * 1e6
    assert table.kwh_per_million_tokens.iloc[0] == pytest.approx(expected_kwh)
    by_place = table.set_index("place").co2e_g_per_million_tokens
    assert (
        by_place["CAN/quebec"] < by_place["FRA"] < by_place["USA"] < by_place["DEU"] < by_place["POL"] < by_place["IND"]
    )
    assert by_place["USA"] == pytest.approx(expected_kwh * 1.2 * _bundled_country("USA"))
    at_pue_1 = where_to_run(df, [("USA", "california")], pue=1.0)
    assert at_pue_1.co2e_g_per_million_tokens.iloc[0] == pytest.approx(
        expected_kwh * grid.resolve("USA", "california").g_per_kwh
    )
    assert len(where_to_run(df, DEFAULT_PLACES[:2], aggregate=False)) == 6
    with pytest.raises(ConfigError, match="Atlantis"):
        where_to_run(df, [("Atlantis", None)])


@settings(max_examples=40, deadline=None)
@given(
    energy=st.one_of(st.none(), st.floats(0, 1e9)),
    tokens=st.one_of(st.none(), st.integers(0, 10**9)),
    duration=st.one_of(st.none(), st.floats(0, 1e6)),
    intensity=st.floats(0, 2000),
    pue=st.floats(1.0, 3.0),
)
def test_derive_is_linear_in_grid_and_pue_and_never_infinite(energy, tokens, duration, intensity, pue):
    df = pd.DataFrame([_row(energy_j=energy, tokens=tokens, duration_s=duration)])
    d = derive(df, carbon=CarbonConfig(grid_g_per_kwh=intensity, pue=pue)).iloc[0]
    numeric = d[[c for c in DERIVED_COLUMNS if c not in ("grid_source", "hardware")]].astype(float)
    assert not np.isinf(numeric.to_numpy()).any()
    if energy is not None:
        assert d.co2e_g == pytest.approx(energy / 3.6e6 * pue * intensity)


def test_results_load_carries_the_derived_columns(tmp_path):
    """The contract with carbonbench.results: load() ends by calling derive()."""
    from carbonbench.results import load

    path = tmp_path / "run.json"
    path.write_text(json.dumps(_result_file()))
    df = load(path)
    assert set(DERIVED_COLUMNS) <= set(df.columns)
    ok = df[df.status == "ok"]
    assert ok.mfu.notna().all() and ok.hfu.notna().all() and ok.hardware.eq("h100-sxm").all()
    assert (ok.mfu <= ok.hfu).all()
    assert (ok.grid_g_per_kwh == _bundled_country("DEU")).all()


def _result_file() -> dict:
    """A minimal schema-1 result file: one bf16 decode point on an H100, two repeats."""

    def rep(i, energy):
        return {
            "repeat": i,
            "steps": 1,
            "tokens": 512,
            "flops": 4.0e13,
            "model_flops": 4.0e13,
            "duration_s": 0.5,
            "energy_j": energy,
            "energy_method": "counter",
            "components": {},
        }

    return {
        "schema": "carbonbench.run",
        "schema_version": 1,
        "run_id": "fixture",
        "status": "complete",
        "scenario": {
            "name": "fixture",
            "carbon": {"country": "DEU", "region": None, "grid_g_per_kwh": None, "pue": 1.1},
            "cost": {"usd_per_kwh": 0.3, "usd_per_device_hour": 2.0},
        },
        "device": {"type": "cuda", "name": "NVIDIA H100 80GB HBM3", "count": 1, "dtype": "bfloat16"},
        "environment": {"hostname": "gpu-1"},
        "points": [
            {
                "model": "opt-1.3b",
                "workload": "decode",
                "batch_size": 8,
                "prompt_tokens": 128,
                "new_tokens": 64,
                "seq_len": 0,
                "status": "ok",
                "params": 1315758080,
                "repeats": [rep(0, 150.0), rep(1, 170.0)],
            },
            {
                "model": "opt-1.3b",
                "workload": "train",
                "batch_size": 4,
                "prompt_tokens": 0,
                "new_tokens": 0,
                "seq_len": 2048,
                "status": "ok",
                "params": 1315758080,
                "repeats": [
                    {
                        "repeat": 0,
                        "steps": 2,
                        "tokens": 8192,
                        "flops": 1.6e14,
                        "model_flops": 1.2e14,
                        "duration_s": 0.4,
                        "energy_j": 240.0,
                        "energy_method": "counter",
                        "components": {},
                    }
                ],
            },
            {
                "model": "opt-1.3b",
                "workload": "decode",
                "batch_size": 64,
                "prompt_tokens": 128,
                "new_tokens": 64,
                "seq_len": 0,
                "status": "oom",
                "error": "CUDA out of memory",
                "repeats": [],
            },
        ],
    }
