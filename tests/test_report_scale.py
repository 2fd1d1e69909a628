"""Big sweeps (issue 18): thinning keeps spikes, a big report stays bounded, compare pools each
table once, decode-only figures beside the generate-inclusive ones, long steps flagged.

The synthetic run files come from benchmarks/report_scale.py (made-up numbers shaped like a
real sweep: 3 repeats, components, codecarbon, a timeline with spikes)."""

import contextlib
import importlib.util
import json
import math
import re
import time

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import ROOT

from carbonbench import windows
from carbonbench.cli import cli
from carbonbench.meters.base import ComponentEnergy, Measurement
from carbonbench.report import compare as report_compare
from carbonbench.report import data as report_data
from carbonbench.report import load, render
from carbonbench.report.timeline_figure import MAX_TIMELINE_POINTS, minmax_thin
from carbonbench.results import load as load_rows
from carbonbench.scenario import MeasurementConfig


def _scale():
    spec = importlib.util.spec_from_file_location("report_scale", ROOT / "benchmarks" / "report_scale.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    """Run files of two machines: 300 points each, and 24 points each."""
    scale, base = _scale(), tmp_path_factory.mktemp("sweeps")
    out = {}
    for n in (300, 24):
        for side in ("A", "B"):
            folder = base / f"{side}{n}"
            folder.mkdir()
            scale.write_run(folder, side, n)
            out[side, n] = folder
    return out


def test_minmax_thinning_keeps_a_one_sample_spike_and_dip():
    samples = pd.DataFrame({"unix_s": np.arange(200_000) * 0.1, "power_w": 50.0 + np.sin(np.arange(200_000) / 500)})
    samples.loc[123_457, "power_w"] = 700.0
    samples.loc[54_321, "power_w"] = 3.0
    thin = minmax_thin(samples)
    assert len(thin) <= MAX_TIMELINE_POINTS + 2
    assert thin["power_w"].max() == 700.0 and thin["power_w"].min() == 3.0
    assert thin["unix_s"].is_monotonic_increasing
    # Every n-th sample, as the report did before, loses both.
    stride = samples.iloc[:: math.ceil(len(samples) / MAX_TIMELINE_POINTS)]
    assert stride["power_w"].max() < 700.0 and stride["power_w"].min() > 3.0
    assert minmax_thin(samples.iloc[:100]) is not None and len(minmax_thin(samples.iloc[:100])) == 100


def _figures(html):
    specs = re.findall(r'<script type="application/json" id="cb-fig-\d+-data">(.*?)</script>', html, re.S)
    return [json.loads(s) for s in specs]


def test_a_big_report_has_bounded_traces_height_and_one_shape_layer(sweeps):
    data = load([sweeps["A", 300]])
    assert len(data.points) == 300
    figures = _figures(render(data))
    traces = sum(len(f["data"]) for f in figures)
    heights = [f["layout"].get("height", 0) for f in figures]
    assert traces <= 250, traces  # one trace per line would be several per point
    assert max(heights) <= 2000, heights  # the breakdown at 30 px a bar would be 9,000 px
    (timeline,) = [f for f in figures if "Power timeline" in f["layout"]["title"]["text"]]
    shapes = timeline["layout"]["shapes"]
    assert len(shapes) <= 2 and all(s["type"] == "path" for s in shapes)
    windows_drawn = sum(s["path"].count("Z") for s in shapes)
    assert windows_drawn == sum(len(p.repeats) for p in data.runs[0].record.points) == 900
    assert all(len(tr.get("x") or []) <= MAX_TIMELINE_POINTS + 2 for tr in timeline["data"][:-1])
    titles = " ".join(f["layout"]["title"]["text"] for f in figures)
    assert "pooled per model and workload" in titles and "shows points" in titles  # said, not silently dropped


def test_compare_builds_each_side_s_table_once(sweeps, monkeypatch):
    calls = []
    real = report_compare.point_table

    def counted(rows):
        calls.append(len(rows))
        return real(rows)

    monkeypatch.setattr(report_compare, "point_table", counted)
    monkeypatch.setattr(report_data, "point_table", counted)
    result = CliRunner().invoke(cli, ["compare", str(sweeps["A", 24]), str(sweeps["B", 24]), "--format", "json"])
    assert result.exit_code == 0, result.output
    assert len(calls) == 2  # one per side, where it was four
    assert len(json.loads(result.output)["matched"]) == 24


def test_decode_only_columns_leave_the_prefill_out(sweeps):
    rows = load_rows([sweeps["A", 24]])
    dec = rows[(rows["workload"] == "decode") & (rows["new_tokens"] > 1)]
    assert len(dec)
    for r in dec.to_dict("records"):
        share = 1 - r["steps"] * r["ttft_s"] / r["duration_s"]
        tokens = r["tokens"] * (r["new_tokens"] - 1) / r["new_tokens"]
        assert r["decode_only_tokens"] == tokens == r["steps"] * r["batch_size"] * (r["new_tokens"] - 1)
        assert r["decode_only_energy_j"] == pytest.approx(r["energy_j"] * share)
        assert r["decode_only_joules_per_token"] == pytest.approx(r["energy_j"] * share / tokens)
        assert r["decode_only_tokens_per_s"] == pytest.approx(tokens / (r["duration_s"] * share))
        assert r["decode_only_energy_method"] == "attributed from counter"  # never "counter"
        assert r["joules_per_token"] == pytest.approx(r["energy_j"] / r["tokens"])  # unchanged beside it
    others = rows[rows["workload"] != "decode"]
    assert others["decode_only_joules_per_token"].isna().all() and others["decode_only_energy_method"].isna().all()

    points = load([sweeps["A", 24]]).points
    p = points[points["workload"] == "decode"].iloc[0]
    mine = dec[(dec["batch_size"] == p["batch_size"]) & (dec["prompt_tokens"] == p["prompt_tokens"])]
    mine = mine[mine["new_tokens"] == p["new_tokens"]]
    assert p["decode_only_joules_per_token_mean"] == pytest.approx(mine["decode_only_joules_per_token"].mean())
    assert p["decode_only_energy_method"] == "attributed from counter"

    html = render(load([sweeps["A", 24], sweeps["B", 24]]))
    assert "decode-only J/token ± 95% CI" in html and "decode-only J/token" in html
    out = CliRunner().invoke(cli, ["compare", str(sweeps["A", 24]), str(sweeps["B", 24])]).output
    assert "Decode only, prefill left out" in out
    js = json.loads(
        CliRunner().invoke(cli, ["compare", str(sweeps["A", 24]), str(sweeps["B", 24]), "--format", "json"]).output
    )
    decode = [m for m in js["matched"] if m["workload"] == "decode" and m["new_tokens"] > 1]
    assert decode and all(m["a_decode_only_joules_per_token"] > 0 for m in decode)
    assert all(m["decode_only_joules_per_token_ratio"] > 0 for m in decode)


class _Work:
    """A workload whose step takes ``step_s`` (the model is not what is tested here)."""

    tokens_per_step, flops_per_step, model_flops_per_step = 4, 1.0, 1.0

    def __init__(self, step_s):
        self.step_s = step_s

    def step(self):
        time.sleep(self.step_s)
        return {}

    def check(self):
        pass


class _Window:
    def __init__(self):
        self.extra, self.detail = {}, {}
        self.t0 = time.time()

    @property
    def measurement(self):
        energy = ComponentEnergy("cpu", "cpu", 1.0, "counter", "rapl")
        return Measurement("w", self.t0, time.time() - self.t0, (energy,))


class _Session:
    """The session's meters stand in for RAPL, which this machine may lack."""

    resolution_s = 0.001

    def begin_task(self, label):
        pass

    def end_task(self):
        return None

    @contextlib.contextmanager
    def window(self, label, span=True):
        yield _Window()


class _Job:
    def all_done(self, done):
        return done


@pytest.mark.parametrize("step_s, flagged", [(0.06, True), (0.002, False)])
def test_a_step_long_against_min_seconds_is_flagged(step_s, flagged):
    m = MeasurementConfig(min_seconds=0.1)
    rep = windows.measure_window(_Work(step_s), "p", 0, _Session(), m, lambda: None, _Job(), None)
    assert (windows.LONG_STEP in rep.flags) is flagged
