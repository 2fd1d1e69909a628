"""The HTML report: self-contained, escaped, complete, and its numbers are the results' numbers."""

import json
import math
import re
import shutil
import statistics

import pytest
from support.report_data import FIXTURE, FIXTURE_DIR, HOSTILE, rows_of

from carbonbench.report import load, render
from carbonbench.report.html import check_plot_markup, plot_text, script_json
from carbonbench.report.tradeoff_figures import pareto


@pytest.fixture(scope="module")
def cpu_run(hostile_report):
    return hostile_report[0]


@pytest.fixture(scope="module")
def report_html(hostile_report):
    return hostile_report[1].read_text(encoding="utf-8")


def _ci(values):
    """Mean and 95% half-width, computed here independently (t for 1 and 2 d.o.f.)."""
    t = {2: 12.706204736, 3: 4.302652730}[len(values)]
    return statistics.fmean(values), t * statistics.stdev(values) / math.sqrt(len(values))


def _mean_ci(text):
    mean, _, half = text.replace(",", "").partition("±")
    return float(mean), float(half) if half.strip() else math.nan


# ---- self-contained and safe ---------------------------------------------------------------


def test_plotly_is_embedded_once_and_nothing_is_fetched(report_html):
    assert report_html.count("plotly.js v") == 1
    assert not re.search(r"<script[^>]*\bsrc=", report_html, re.I)
    assert not re.search(r"<link\b", report_html, re.I)
    assert "cdn.plot.ly" not in report_html.split("plotly.js v")[0]
    assert "Content-Security-Policy" in report_html and "connect-src &#x27;none&#x27;" in report_html
    assert len(report_html.encode()) < 10_000_000


def test_hostile_strings_are_escaped_everywhere(report_html):
    for text in (HOSTILE, "<img src=x", "</script><img", "<b onmouseover", "<script>alert(4)"):
        assert text not in report_html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in report_html  # shown, as text
    # In figure JSON the host is entity-escaped for plotly and \\u-escaped for <script>.
    assert r"\u0026lt;script\u0026gt;alert(4)" in report_html
    scripts = re.findall(r"<script\b[^>]*>", report_html)
    # Our own scripts only: template, sort, CSV download, plotly.js, draw, and one JSON block per figure.
    assert len(scripts) == 5 + report_html.count('class="cb-chart"')


def test_script_json_cannot_close_its_script_element():
    text = script_json({"name": "</script><script>alert(1)</script>&"})
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text)["name"] == "</script><script>alert(1)</script>&"


def test_figure_guard_refuses_unescaped_markup():
    with pytest.raises(ValueError, match="unescaped markup <script>"):
        check_plot_markup({"data": [{"name": HOSTILE}]})
    check_plot_markup({"data": [{"name": plot_text(HOSTILE) + "<br><b>ok</b><extra></extra>"}]})


# ---- content -------------------------------------------------------------------------------


def test_every_section_is_there(report_html):
    for anchor in (
        "summary",
        "comparison",
        "cost",
        "tradeoff",
        "breakdown",
        "timeline",
        "carbon",
        "training",
        "tables",
    ):
        assert f'<section id="{anchor}">' in report_html
    assert report_html.count('class="cb-chart"') >= 10
    assert "Some energy here is estimated, not measured" in report_html
    assert "SYNTHETIC TEST FIXTURE" in report_html  # the fixture says what it is
    assert "Smoke run" not in report_html  # neither run is --quick
    assert "Pareto front" in report_html


def test_comparison_matches_points_and_lists_the_rest(report_html):
    section = report_html.split('<section id="comparison">')[1].split("</section>")[0]
    assert "B = NVIDIA H100 80GB HBM3 (h100-fixture)" in section
    # The CPU run's four opt-tiny points all exist on the fixture.
    for label in (
        "opt-tiny prefill b1 p16",
        "opt-tiny prefill b2 p16",
        "opt-tiny decode b1 p8+n4",
        "opt-tiny train b2 s16",
    ):
        assert f"<td>{label}</td>" in section
    only_b = section.split("Only on B")[1]
    assert "opt-tiny prefill b8 p16" in only_b and "opt-125m prefill b16 p128" in only_b
    assert "meter-error" in only_b and "NVMLError_Unknown" in only_b


def test_points_table_shows_the_result_files_numbers(report_html, cpu_run):
    rows = rows_of(report_html, "points")
    run = json.loads(next(cpu_run.glob("*.json")).read_text())
    checked = 0
    for point in run["points"]:
        reps = point["repeats"]
        jpt_mean, jpt_ci = _ci([r["energy_j"] / r["tokens"] for r in reps])
        tps_mean, _ = _ci([r["tokens"] / r["duration_s"] for r in reps])
        row = next(
            r
            for r in rows
            if "h100" not in r["machine"]
            and r["workload"] == point["workload"]
            and r["batch"] == str(point["batch_size"])
        )
        shown_mean, shown_ci = _mean_ci(row["J/token ± 95% CI"])
        assert shown_mean == pytest.approx(jpt_mean, rel=5e-4)
        assert shown_ci == pytest.approx(jpt_ci, rel=5e-2)
        assert _mean_ci(row["tokens/s ± 95% CI"])[0] == pytest.approx(tps_mean, rel=5e-4)
        assert row["energy method"] == "estimated" and row["status"] == "ok"
        checked += 1
    assert checked == 4

    fixture = json.loads(FIXTURE.read_text())
    point = next(p for p in fixture["points"] if p["key"] == "opt-125m/prefill/b4/p128")
    tokens = sum(r["tokens"] for r in point["repeats"])
    cc = next(
        r
        for r in rows_of(report_html, "codecarbon")
        if "h100" in r["machine"] and r["point"] == "opt-125m prefill b4 p128"
    )
    cc_energy = sum(r["codecarbon"]["energy_j"] for r in point["repeats"])
    assert float(cc["codecarbon J/token"]) == pytest.approx(cc_energy / tokens, rel=5e-4)
    row = next(
        r
        for r in rows
        if "h100" in r["machine"] and r["model"] == "opt-125m" and r["batch"] == "4" and r["workload"] == "prefill"
    )
    assert row["energy method"] == "counter"
    # gCO2e per 1M tokens: J/token x 1e6 / 3.6e6 x PUE x grid, with the fixture's PUE of 1.2.
    g_per_kwh = load([FIXTURE]).rows["grid_g_per_kwh"].iloc[0]
    jpt = statistics.fmean(r["energy_j"] / r["tokens"] for r in point["repeats"])
    expected = jpt * 1e6 / 3.6e6 * 1.2 * g_per_kwh
    assert _mean_ci(row["gCO2e / 1M tok"])[0] == pytest.approx(expected, rel=5e-4)


def test_failed_points_are_listed_with_their_errors(report_html):
    failed = rows_of(report_html, "failed")
    assert [(r["point"], r["status"]) for r in failed] == [("opt-125m train b4 s128", "meter-error")]
    assert "nvmlDeviceGetTotalEnergyConsumption failed" in failed[0]["error"]


def test_quick_runs_say_they_are_smoke_runs(tmp_path):
    run = json.loads(FIXTURE.read_text())
    run.update(quick=True, run_id="quick-copy", timeline_file=None)
    (tmp_path / "quick.json").write_text(json.dumps(run))
    html_text = render(load([tmp_path / "quick.json"]))
    assert "Smoke run" in html_text
    assert "nothing to compare" in html_text  # one machine
    assert "no power timeline" in html_text


def test_a_run_whose_points_all_failed_still_reports(tmp_path):
    run = json.loads(FIXTURE.read_text())
    for point in run["points"]:
        point.update(status="oom", error="CUDA out of memory. Tried to allocate 20.00 GiB", repeats=[])
    run["run_id"] = "all-failed"
    (tmp_path / "failed.json").write_text(json.dumps(run))
    html_text = render(load([tmp_path / "failed.json"]))
    assert "12 point(s) failed" in html_text
    assert html_text.count("CUDA out of memory") >= 12
    assert "No point was measured successfully" in html_text


def test_a_point_that_failed_midway_and_a_run_without_points(tmp_path):
    run = json.loads(FIXTURE.read_text())
    run["points"][0].update(status="error", error="RuntimeError: kernel exploded")
    for rep in run["points"][0]["repeats"]:
        rep["status"] = "ok"  # as the runner keeps the repeats measured before a failure
    (tmp_path / "midway.json").write_text(json.dumps(run))
    empty = dict(run, run_id="empty", points=[], timeline_file=None)
    empty["device"] = dict(run["device"], name="NVIDIA A100-SXM4-80GB")
    (tmp_path / "empty.json").write_text(json.dumps(empty))
    data = load([tmp_path / "midway.json", tmp_path / "empty.json"])
    first = data.points.iloc[0]
    assert (first["status"], first["n_repeats"], first["error"]) == ("error", 3, "RuntimeError: kernel exploded")
    html_text = render(data)
    failed = rows_of(html_text, "failed")
    assert {(r["point"], r["status"], r["repeats kept"]) for r in failed} == {
        ("opt-tiny prefill b1 p16", "error", "3"),
        ("opt-125m train b4 s128", "meter-error", "0"),
    }
    assert "No point was measured on both machines" in html_text


def test_pareto_front_keeps_only_undominated_points():
    import pandas as pd

    g = pd.DataFrame({"tokens_per_s_mean": [10, 20, 30, 15], "joules_per_token_mean": [1.0, 0.5, 0.8, 2.0]})
    front = pareto(g)
    assert front["tokens_per_s_mean"].tolist() == [20, 30]


# ---- command line --------------------------------------------------------------------------


def test_cli_writes_under_reports_by_default(invoke_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke_cli("report", str(FIXTURE_DIR))
    assert result.exit_code == 0, result.output
    written = list((tmp_path / "reports").glob("*.html"))
    assert [p.name for p in written] == ["opt-125m.html"]
    assert "opt-125m.html" in result.output


def test_cli_damaged_file_is_one_line_exit_2_or_skipped(invoke_cli, tmp_path):
    bad = tmp_path / "in" / "bad.json"
    bad.parent.mkdir()
    bad.write_text('{"schema": "carbonbench.run", "schema_ver')
    shutil.copy(FIXTURE, tmp_path / "in" / FIXTURE.name)
    out = tmp_path / "r.html"
    result = invoke_cli("report", str(tmp_path / "in"), "-o", str(out))
    assert result.exit_code == 2
    assert "bad.json" in result.output and "Traceback" not in result.output
    result = invoke_cli("report", str(tmp_path / "in"), "-o", str(out), "--skip-damaged")
    assert result.exit_code == 0, result.output
    assert "Skipped damaged result files" in out.read_text()
