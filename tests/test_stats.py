"""Repeat statistics: Student's t without scipy, ci95, and the per-point summary."""

import math

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from carbonbench.results import summarise
from carbonbench.stats import Z_975, ci95, t_quantile_975

# Reference t_{0.975} values (R: qt(0.975, df)).
EXACT = {
    1: 12.7062047,
    2: 4.3026527,
    5: 2.5705818,
    10: 2.2281389,
    29: 2.0452296,
    30: 2.0422725,
    31: 2.0395134,
    40: 2.0210754,
    60: 2.0002978,
    120: 1.9799304,
    1000: 1.9623391,
}


@pytest.mark.parametrize("df, exact", sorted(EXACT.items()))
def test_t_quantile_matches_reference_values(df, exact):
    assert t_quantile_975(df) == pytest.approx(exact, abs=2e-7)


def test_t_quantile_is_decreasing_and_tends_to_the_normal():
    values = [t_quantile_975(df) for df in range(1, 400)]
    assert all(a > b for a, b in zip(values, values[1:]))
    assert t_quantile_975(10**7) == pytest.approx(Z_975, abs=1e-6)
    with pytest.raises(ValueError):
        t_quantile_975(0)


def test_ci95_of_three_values():
    mean, std, half = ci95([1.0, 2.0, 3.0])
    assert (mean, std) == (2.0, 1.0)
    assert half == pytest.approx(4.3026527 / math.sqrt(3))


def test_ci95_of_one_value_has_no_spread_and_of_none_has_nothing():
    mean, std, half = ci95([5.0])
    assert mean == 5.0 and math.isnan(std) and math.isnan(half)
    assert all(math.isnan(x) for x in ci95([]))


def test_ci95_drops_missing_and_non_finite_values():
    assert ci95([1.0, None, float("nan"), 3.0])[:2] == (2.0, pytest.approx(math.sqrt(2)))


@given(
    xs=st.lists(st.floats(min_value=-1e3, max_value=1e3), min_size=2, max_size=20),
    shift=st.floats(min_value=-1e3, max_value=1e3),
    scale=st.floats(min_value=0.01, max_value=100),
)
def test_ci95_moves_with_shift_and_scales_with_scale(xs, shift, scale):
    mean, std, half = ci95(xs)
    mean2, std2, half2 = ci95([x * scale + shift for x in xs])
    assert mean2 == pytest.approx(mean * scale + shift, abs=1e-6)
    assert std2 == pytest.approx(std * scale, rel=1e-6, abs=1e-6)
    assert half2 == pytest.approx(half * scale, rel=1e-6, abs=1e-6)


def _rows():
    base = dict(
        run_id="r1",
        model="opt-tiny",
        engine="native",
        dtype="float32",
        workload="decode",
        batch_size=1,
        prompt_tokens=16,
        new_tokens=32,
        seq_len=0,
    )
    rows = []
    for rep, (jpt, tps, status, method) in enumerate(
        [
            (1.0, 100.0, "ok", "counter"),
            (2.0, 110.0, "ok", "estimated"),
            (3.0, 120.0, "ok", "counter"),
            (99.0, 1.0, "oom", "counter"),
        ]
    ):
        rows.append(
            {
                **base,
                "repeat": rep,
                "status": status,
                "joules_per_token": jpt,
                "tokens_per_s": tps,
                "energy_method": method,
            }
        )
    rows.append(
        {
            **base,
            "batch_size": 4,
            "repeat": 0,
            "status": "ok",
            "joules_per_token": 0.5,
            "tokens_per_s": 400.0,
            "energy_method": "counter",
        }
    )
    return pd.DataFrame(rows)


def test_summarise_groups_ok_repeats_by_point():
    out = summarise(_rows())
    assert list(out["batch_size"]) == [1, 4]
    b1 = out.iloc[0]
    assert b1["n_repeats"] == 3  # the OOM repeat is left out
    assert b1["joules_per_token_mean"] == pytest.approx(2.0)
    assert b1["joules_per_token_std"] == pytest.approx(1.0)
    assert b1["joules_per_token_ci95"] == pytest.approx(4.3026527 / math.sqrt(3))
    assert b1["tokens_per_s_mean"] == pytest.approx(110.0)
    assert b1["tokens_per_s_ci95"] == pytest.approx(10.0 * 4.3026527 / math.sqrt(3))
    assert b1["energy_method"] == "estimated"  # the weakest among the repeats
    b4 = out.iloc[1]
    assert b4["n_repeats"] == 1 and math.isnan(b4["joules_per_token_std"]) and math.isnan(b4["tokens_per_s_ci95"])


def test_summarise_columns():
    out = summarise(_rows())
    assert list(out.columns) == [
        "run_id",
        "model",
        "engine",
        "dtype",
        "workload",
        "batch_size",
        "prompt_tokens",
        "new_tokens",
        "seq_len",
        "n_repeats",
        "joules_per_token_mean",
        "joules_per_token_std",
        "joules_per_token_ci95",
        "tokens_per_s_mean",
        "tokens_per_s_std",
        "tokens_per_s_ci95",
        "energy_method",
    ]


def test_summarise_keeps_points_whose_keys_are_missing_and_energy_unknown():
    df = _rows()
    df["seq_len"] = None  # e.g. a column absent for inference points
    df.loc[df["batch_size"] == 4, "joules_per_token"] = None  # a null GPU meter
    out = summarise(df)
    assert len(out) == 2
    assert math.isnan(out.iloc[1]["joules_per_token_mean"]) and out.iloc[1]["tokens_per_s_mean"] == 400.0


def test_summarise_with_no_ok_rows_is_empty_with_the_columns():
    df = _rows()
    df["status"] = "error"
    out = summarise(df)
    assert out.empty and "joules_per_token_ci95" in out.columns
