"""Hostile input, classes 6 and 7: result files whose numbers are not numbers, runs with no
energy at all, and text that would take over the terminal or the report page.

Each damaged file differs from the sound H100 fixture in one value. Every reader (report,
compare, export, estimate --from) must refuse it by file and key path, or, with
--skip-damaged, pass over it with a warning; none may crash or show a NaN.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from support.hostile import (
    FIXTURE,
    assert_ok,
    assert_refused,
    assert_safe_text,
    base_run,
    html_text,
    invoke,
    no_energy_run,
    save_run,
    small_run,
)
from support.scenarios import scenario_text

NAN, INF = math.nan, math.inf


def _set(run: dict, where: str, value: Any) -> None:
    """Set run[where] for a dotted path with [i] indexes, creating mappings on the way."""
    parts = where.replace("[", ".[").split(".")
    node: Any = run
    for part in parts[:-1]:
        if part.startswith("["):
            node = node[int(part[1:-1])]
        else:
            if not isinstance(node.get(part), (dict, list)):
                node[part] = {}
            node = node[part]
    last = parts[-1]
    if last.startswith("["):
        node[int(last[1:-1])] = value
    else:
        node[last] = value


# name -> (key path, value); a str value is spliced in raw (JSON that json.dumps will not write)
DAMAGE = {
    "energy_nan": ("points[0].repeats[0].energy_j", NAN),
    "energy_inf": ("points[0].repeats[0].energy_j", INF),
    "energy_minus_inf": ("points[0].repeats[1].energy_j", -INF),
    "energy_1e400": ("points[0].repeats[0].energy_j", "1e400"),
    "batch_size_nan": ("points[0].batch_size", NAN),
    "pue_nan": ("scenario.carbon.pue", NAN),
    "pue_inf": ("scenario.carbon.pue", INF),
    "usd_per_kwh_nan": ("scenario.cost.usd_per_kwh", NAN),
    "grid_inf": ("scenario.carbon.grid_g_per_kwh", INF),
    "tokens_400_digits": ("points[0].repeats[0].tokens", 10**400),
    "tokens_5000_digits": ("points[0].repeats[0].tokens", "9" * 5000),
    "flops_above_1e30": ("points[1].repeats[0].flops", 1e31),
    "duration_nan": ("points[2].repeats[0].duration_s", NAN),
    "ttft_nan": ("points[3].repeats[0].ttft_s", NAN),
    "idle_power_nan": ("idle.power_w.gpu0", NAN),
    "idle_duration_inf": ("idle.duration_s", INF),
    "component_nan": ("points[0].repeats[0].components.gpu0.energy_j", NAN),
    "codecarbon_nan": ("points[0].repeats[0].codecarbon.energy_j", NAN),
    "run_codecarbon_nan": ("codecarbon.energy_j", NAN),
    "summary_nan": ("points[0].summary.joules_per_token.mean", NAN),
    "latency_inf": ("points[0].repeats[0].latency_s.p50", INF),
    "warmup_nan": ("points[0].warmup.duration_s", NAN),
    "environment_nan": ("environment.ram_bytes", NAN),
    "meter_nan": ("meters[0].tdp_w", NAN),
    "recorded_scenario_nan": ("scenario.measurement.min_seconds", NAN),
}


def damaged(tmp_path: Path, case: str) -> Path:
    where, value = DAMAGE[case]
    run = base_run()
    if isinstance(value, str):
        _set(run, where, "@RAW@")
        return save_run(tmp_path / f"{case}.json", None, raw=json.dumps(run).replace('"@RAW@"', value))
    _set(run, where, value)
    return save_run(tmp_path / f"{case}.json", run)


def readers(path: Path, tmp_path: Path) -> dict[str, list]:
    return {
        "report": ["report", path, "-o", tmp_path / "r.html"],
        "compare": ["compare", path, FIXTURE],
        "export": ["export", path],
        "estimate": [
            "estimate",
            "--from",
            path,
            "--select",
            "model=opt-125m",
            "--select",
            "workload=decode",
            "--requests-per-day",
            "1e6",
            "--tokens-per-request",
            "500",
        ],
    }


@pytest.mark.parametrize("reader", ["report", "compare", "export", "estimate"])
@pytest.mark.parametrize("case", list(DAMAGE))
def test_a_number_that_is_not_a_number(case, reader, tmp_path):
    path = damaged(tmp_path, case)
    where = DAMAGE[case][0]
    assert_refused(invoke(readers(path, tmp_path)[reader]), path, f"'{where}' is damaged (expected a finite number)")
    assert not (tmp_path / "r.html").exists()


@pytest.mark.parametrize("reader", ["report", "compare", "export"])
def test_skip_damaged_passes_over_a_nan(reader, tmp_path):
    results = tmp_path / "results"
    save_run(results / "good.json", small_run())
    bad = damaged(results, "energy_nan")
    args = {
        "report": ["report", results, "-o", tmp_path / "r.html"],
        "compare": ["compare", results, FIXTURE],
        "export": ["export", results, "-o", tmp_path / "x.csv"],
    }[reader]
    assert_refused(invoke(args), bad, "energy_j")
    out = assert_ok(invoke(args + ["--skip-damaged"]))
    assert f"skipped {bad}" in out and "points[0].repeats[0].energy_j" in out


def test_compare_skip_damaged_with_nothing_left_on_a_side(tmp_path):
    bad = damaged(tmp_path, "pue_nan")
    assert_refused(invoke(["compare", bad, FIXTURE, "--skip-damaged"]), "no result files", bad.name)


# -- a run with no energy at all -------------------------------------------------------------
@pytest.fixture
def no_energy(tmp_path) -> Path:
    return save_run(tmp_path / "none" / "run.json", no_energy_run())


def test_report_of_a_run_with_no_energy(no_energy, tmp_path):
    other = save_run(tmp_path / "small.json", small_run())
    assert_ok(invoke(["report", no_energy, other, "-o", tmp_path / "r.html"]))
    page = html_text((tmp_path / "r.html").read_text())
    words = {w.lower() for w in page.replace("<", " ").replace(">", " ").split()}
    assert not words & {"nan", "inf", "-inf", "infinity"}
    assert "none" in words


def test_report_of_a_run_with_no_energy_alone(no_energy, tmp_path):
    """Every energy chart is empty: each says why, none pretends that the points failed."""
    assert_ok(invoke(["report", no_energy, "-o", tmp_path / "r.html"]))
    page = html_text((tmp_path / "r.html").read_text())
    assert "none has an energy figure" in page and "3104 ± 127" in page  # the timings are there


@pytest.mark.parametrize("other", ["itself", "fixture"])
def test_compare_of_a_run_with_no_energy(other, no_energy):
    b = no_energy if other == "itself" else FIXTURE
    out = assert_ok(invoke(["compare", no_energy, b]))
    assert "none" in out  # the energy method, shown for what it is
    data = json.loads(assert_ok(invoke(["compare", no_energy, b, "--format", "json"])))
    assert data["matched"] and all(m["a_joules_per_token"] is None for m in data["matched"])
    assert all(m["a_tokens_per_s"] for m in data["matched"])  # timings stay


@pytest.mark.parametrize("what", ["rows", "points"])
def test_export_of_a_run_with_no_energy(what, no_energy):
    out = assert_ok(invoke(["export", no_energy, "--what", what]))
    assert len(out.splitlines()) > 10


def test_estimate_from_figures_that_overflow(tmp_path):
    """Each number is sane, their ratio is not: 1e30 J over 1e-300 tokens. Refused, not inf."""
    run = base_run()
    for rep in run["points"][9]["repeats"]:  # opt-125m decode b4
        rep.update(tokens=1e-300, energy_j=1e30)
    path = save_run(tmp_path / "run.json", run)
    args = [
        "estimate",
        "--from",
        path,
        "--select",
        "model=opt-125m",
        "--select",
        "workload=decode",
        "--requests-per-day",
        "1e15",
        "--tokens-per-request",
        "1e9",
    ]
    assert_refused(invoke(args), "comes out as inf")


def test_estimate_from_a_run_with_no_energy(no_energy):
    args = ["estimate", "--from", no_energy, "--requests-per-day", "1e6", "--tokens-per-request", "500"]
    assert_refused(invoke(args), "no successful measured point")


# -- text that controls the terminal ----------------------------------------------------------
ESC_TEXT = {
    "environment.hostname": "\x1b]0;pwned\x07host",
    "device.name": "\x1b[2J\x1b[HNVIDIA H100 80GB HBM3",
    "scenario.name": "\x9b2Jname",
    "run_id": "\x1b[1mrun\x1b[0m",
    "points[11].error": "boom\x1b]52;c;cHduZWQ=\x07\u202egnp.exe",
}


@pytest.fixture
def hostile_text(tmp_path) -> Path:
    run = base_run()
    for where, text in ESC_TEXT.items():
        _set(run, where, text)
    for point in run["points"]:
        point["model"] = point["model"] + "\x1b]52;c;ZXZpbA==\x07"
    return save_run(tmp_path / "esc" / "run.json", run)


def test_compare_neutralises_control_sequences(hostile_text):
    out = assert_ok(invoke(["compare", hostile_text, FIXTURE]))
    assert "\\x1b]52;c;ZXZpbA==\\x07" in out  # shown, as text, not obeyed
    out = assert_ok(invoke(["compare", FIXTURE, hostile_text]))
    assert "boom" in out


def test_json_output_escapes_control_characters(hostile_text):
    out = assert_ok(invoke(["compare", hostile_text, FIXTURE, "--format", "json"]))
    assert json.loads(out)["a"]["label"].startswith("A: \x1b[2J")  # kept, JSON-escaped


def test_estimate_neutralises_control_sequences(hostile_text):
    args = [
        "estimate",
        "--from",
        hostile_text,
        "--select",
        "workload=decode",
        "--select",
        "batch_size=4",
        "--requests-per-day",
        "1e6",
        "--tokens-per-request",
        "500",
    ]
    assert_ok(invoke(args))


def test_an_error_quoting_a_hostile_key(tmp_path):
    run = base_run()
    run["points"][0]["repeats"][0]["latency_s"] = {"\x1b[2J\x1b]0;x\x07": "slow"}
    path = save_run(tmp_path / "run.json", run)
    line = assert_refused(invoke(["compare", path, FIXTURE]), path, "is damaged")
    assert "\\x1b[2J" in line
    other = save_run(tmp_path / "other" / "small.json", small_run())
    out = assert_ok(invoke(["report", tmp_path / "run.json", other, "-o", tmp_path / "r.html", "--skip-damaged"]))
    assert "\\x1b[2J" in out


def test_a_result_file_named_with_control_characters(tmp_path):
    bad = damaged(tmp_path, "energy_nan").rename(tmp_path / "\x1b[2Jevil.json")
    assert_refused(invoke(["compare", bad, FIXTURE]), "evil.json")
    out = assert_ok(invoke(["export", tmp_path, FIXTURE, "--skip-damaged", "-o", tmp_path / "x.csv"]))
    assert "evil.json" in out


def test_report_escapes_hostile_text(tmp_path):
    run = small_run()
    payloads = {
        "environment.hostname": "<script>alert(1)</script>",
        "device.name": '"><img src=x onerror=alert(2)>',
        "scenario.name": "</title><script>alert(3)</script>",
        "note": "<iframe src=javascript:alert(4)>",
        "points[2].error": "<svg onload=alert(5)>",
        "warnings": ["<b onmouseover=alert(6)>hi</b>"],
    }
    for where, text in payloads.items():
        _set(run, where, text)
    run["points"][0]["model"] = "<img src=y onerror=alert(7)>"
    path = save_run(tmp_path / "run.json", run)
    other = save_run(tmp_path / "other.json", small_run() | {"run_id": "other"})
    assert_ok(invoke(["report", path, other, "-o", tmp_path / "r.html", "--title", "<script>alert(8)</script>"]))
    page = (tmp_path / "r.html").read_text()
    for raw in ("<script>alert", "<img src=x", "<img src=y", "<iframe", "<svg onload", "<b onmouseover"):
        assert raw not in page, f"ESCAPED: {raw!r} reached the page unescaped"
    assert "&lt;script&gt;alert(1)" in page


def test_plan_and_models_neutralise_what_files_say(tmp_path):
    hw = tmp_path / "hw.yaml"
    hw.write_text(
        'hardware:\n  - {name: evil, description: "\\e]0;owned\\aGPU\\e[2J", memory_gb: 80,\n'
        '     peak_bf16_tflops: 300, memory_bandwidth_gb_per_s: 2000, tdp_w: 400, source: "\\e[5mblink"}\n'
    )
    assert_ok(invoke(["plan", "opt-tiny", "--hardware", "evil", "--hardware-file", hw]))
    args = [
        "estimate",
        "--model",
        "opt-tiny",
        "--tokens",
        "1e9",
        "--hardware",
        "evil",
        "--devices",
        "8",
        "--mfu",
        "0.4",
        "--country",
        "FRA",
        "--hardware-file",
        hw,
    ]
    assert_ok(invoke(args))
    (tmp_path / "cards").mkdir()
    (tmp_path / "cards" / "evil.yaml").write_text(
        'name: "\\e]52;c;ZXZpbA==\\aevil"\narchitecture: {n_layers: 1, n_heads: 2, d_model: 16, ffn_dim: 32}\n'
    )
    out = assert_ok(invoke(["models"], env={"CARBONBENCH_MODEL_DIR": str(tmp_path / "cards")}))
    assert "evil" in out


def test_run_summary_table_neutralises_the_model_label(tmp_path):
    card = tmp_path / "evil\x1b[2J.yaml"
    card.write_text(
        "architecture: {n_layers: 1, n_heads: 2, d_model: 16, ffn_dim: 32, vocab_size: 100, max_positions: 64}\n"
    )
    scenario = tmp_path / "s.yaml"
    scenario.write_text(scenario_text(models='["./evil\\e[2J.yaml"]', min_seconds=0.02))
    result = invoke(["run", scenario, "--out", tmp_path / "out", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    table = result.output[result.output.index("model ") :]
    assert_safe_text(table)
    assert "evil\\x1b[2J" in table
