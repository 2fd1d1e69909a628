"""`carbonbench compare`: points matched across machines, ratios, winners, and nothing dropped."""

import json
import math

import pytest
from support import DATA
from support.cli import invoke_cli

from carbonbench.report.compare import winner

FIXTURE = DATA / "results" / "opt-125m-h100-fixture-20260901T120000000000Z.json"


@pytest.fixture
def a100(tmp_path):
    """The H100 fixture relabelled as an A100 that is 1.5x slower and uses 2x the energy.

    One point is dropped (only on B) and one added (only on A), so both lists are exercised.
    """
    run = json.loads(FIXTURE.read_text())
    run.update(run_id="a100-copy", timeline_file=None, note="derived from the synthetic H100 fixture")
    run["device"]["name"] = run["environment"]["device_name"] = "NVIDIA A100-SXM4-80GB"
    run["environment"]["hostname"] = "a100-copy"
    for point in run["points"]:
        for rep in point["repeats"]:
            rep["duration_s"] *= 1.5
            rep["energy_j"] *= 2.0
            for comp in rep["components"].values():
                comp["energy_j"] *= 2.0
    run["points"] = [p for p in run["points"] if p["key"] != "opt-125m/prefill/b16/p128"]
    extra = json.loads(json.dumps(run["points"][0]))
    extra.update(key="opt-tiny/prefill/b64/p16", batch_size=64)
    run["points"].append(extra)
    path = tmp_path / "a100" / "a100.json"
    path.parent.mkdir()
    path.write_text(json.dumps(run))
    return path


def invoke(*args):
    return invoke_cli("compare", *map(str, args))


def test_json_gives_exact_ratios_and_lists_unmatched_points(a100):
    result = invoke(a100, FIXTURE, "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["a"]["label"] == "A: NVIDIA A100-SXM4-80GB (a100-copy)"
    assert data["b"]["label"] == "B: NVIDIA H100 80GB HBM3 (h100-fixture)"
    matched = {m["label"]: m for m in data["matched"]}
    assert len(matched) == 10  # 12 fixture points, minus the dropped one and the failed one
    for m in matched.values():
        assert m["tokens_per_s_ratio"] == pytest.approx(1.5)
        assert m["joules_per_token_ratio"] == pytest.approx(0.5)
        assert m["co2e_g_per_million_tokens_ratio"] == pytest.approx(0.5)  # same grid and PUE
        assert m["tokens_per_s_winner"] == "B" and m["joules_per_token_winner"] == "B"
        assert m["a_dtype"] == m["b_dtype"] == "bfloat16"
    assert [p["label"] for p in data["only_a"]] == ["opt-tiny prefill b64 p16"]
    assert [p["label"] for p in data["only_b"]] == ["opt-125m prefill b16 p128"]
    assert [(f["label"], f["a_status"], f["b_status"]) for f in data["failed"]] == [
        ("opt-125m train b4 s128", "meter-error", "meter-error")
    ]
    prefill = next(s for s in data["summary"] if s["workload"] == "prefill")
    assert prefill["tokens_per_s_ratio_geomean"] == pytest.approx(1.5)


def test_text_table_names_the_winner_and_every_unmatched_point(a100):
    result = invoke(a100, FIXTURE)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "Matched points: 10" in out
    assert "B x1.5" in out and "B x2" in out
    assert "Only in A: NVIDIA A100-SXM4-80GB (a100-copy): 1 point(s)" in out
    assert "opt-tiny prefill b64 p16" in out
    assert "Only in B: NVIDIA H100 80GB HBM3 (h100-fixture): 1 point(s)" in out
    assert "opt-125m prefill b16 p128" in out
    assert "opt-125m train b4 s128: A meter-error" in out
    assert "each side's own grid" in out


def test_a_side_with_two_machines_is_refused(a100, tmp_path):
    both = tmp_path / "both"
    both.mkdir()
    (both / "a.json").write_text(a100.read_text())
    (both / "b.json").write_text(FIXTURE.read_text())
    result = invoke(both, FIXTURE)
    assert result.exit_code == 2
    assert "2 machines" in result.output and "Traceback" not in result.output


def test_damaged_side_is_a_one_line_error(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2")
    result = invoke(FIXTURE, bad)
    assert result.exit_code == 2
    assert "bad.json" in result.output and len(result.output.strip().splitlines()) == 1


def test_winner_flags_overlapping_intervals():
    assert winner(10.0, 20.0, 1.0, 1.0, True) == ("B", 2.0, False)
    assert winner(10.0, 20.0, 6.0, 6.0, True) == ("B", 2.0, True)
    assert winner(1.0, 0.5, math.nan, math.nan, False) == ("B", 2.0, False)
    assert winner(1.0, 1.0, 0.1, 0.1, False)[0] == "tie"
    assert winner(math.nan, 1.0, 0.1, 0.1, False)[0] == ""
