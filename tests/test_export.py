"""`carbonbench export`: the tidy frame and the per-point summary, as CSV and Parquet."""

import io
import math

import pandas as pd
import pytest
from support import DATA
from support.cli import invoke_cli

from carbonbench.results import load, summarise

RESULTS = DATA / "results"


def export(*args):
    return invoke_cli("export", *map(str, args))


@pytest.fixture(scope="module")
def frame():
    return load([RESULTS])


def test_rows_as_csv_on_stdout_are_the_loaded_frame(frame):
    result = export(RESULTS)
    assert result.exit_code == 0, result.output
    got = pd.read_csv(io.StringIO(result.stdout))
    assert list(got.columns) == list(frame.columns)
    assert len(got) == len(frame) and set(got["status"]) == {"ok", "meter-error"}  # failed points are kept
    assert got["joules_per_token"].tolist() == pytest.approx(frame["joules_per_token"].tolist(), nan_ok=True)


def test_rows_as_parquet_round_trip(frame, tmp_path):
    out = tmp_path / "rows.parquet"
    result = export(RESULTS, "-o", out)  # the suffix picks parquet
    assert result.exit_code == 0, result.output
    assert f"rows: {len(frame)} written to {out} (parquet)" in result.output
    got = pd.read_parquet(out)
    assert list(got.columns) == list(frame.columns) and len(got) == len(frame)
    for column in ("energy_j", "co2e_g_per_million_tokens", "usd_per_million_tokens"):
        assert got[column].tolist() == pytest.approx(frame[column].tolist(), nan_ok=True), column
    assert got["model"].tolist() == frame["model"].tolist()
    assert [p.name for p in tmp_path.iterdir()] == ["rows.parquet"]  # no temporary file left


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_points_have_one_row_per_point_with_intervals(frame, tmp_path, fmt):
    out = tmp_path / f"points.{fmt}"
    result = export(RESULTS, "--what", "points", "--format", fmt, "-o", out)
    assert result.exit_code == 0, result.output
    got = pd.read_parquet(out) if fmt == "parquet" else pd.read_csv(out)
    expected = summarise(frame)
    assert len(got) == len(expected)
    assert {
        "joules_per_token_mean",
        "joules_per_token_ci95",
        "tokens_per_s_std",
        "n_repeats",
        "scenario",
        "device_name",
        "hostname",
    } <= set(got.columns)
    assert set(got["device_name"]) == set(frame["device_name"])
    with_spread = got[got["n_repeats"] > 1]
    assert not with_spread.empty and all(math.isfinite(x) and x > 0 for x in with_spread["joules_per_token_ci95"])
    assert got["joules_per_token_mean"].tolist() == pytest.approx(
        expected["joules_per_token_mean"].tolist(), nan_ok=True
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--format", "parquet"], "--format parquet writes a binary file: give it with -o FILE.parquet"),
        (["--format", "parquet", "-o", "x.csv"], "-o x.csv: the suffix says csv but --format is parquet"),
        (["--what", "everything"], "Invalid value for '--what'"),
    ],
)
def test_bad_export_arguments_are_one_line(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = export(RESULTS, *args)
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


def test_no_results_is_an_error(tmp_path):
    result = export(tmp_path)
    assert result.exit_code == 2 and "no result rows to export" in result.output
