"""Result files written before the typed records still load, and give the same figures.

tests/data/old_results/schema1/ holds a run written by carbonbench before the redesign
(commit 4728165, schema_version 1, no stored point summaries), with the rows and the
report's point table that carbonbench computed from it then. Today's readers must give
the same figures from the same file.
"""

import json
import math

import pandas as pd
import pytest
from support import DATA

from carbonbench import results
from carbonbench.report import load as load_report
from carbonbench.run_record import RunRecord
from carbonbench.runfile import read_run, write_run

OLD = DATA / "old_results" / "schema1"


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-12, abs=1e-15)
    return a == b


def _compare(actual: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert len(actual) == len(expected)
    for col in expected.columns:
        for i, (a, b) in enumerate(zip(actual[col].tolist(), expected[col].tolist())):
            a = float(a) if isinstance(a, (int, float)) and not isinstance(a, bool) else a
            b = float(b) if isinstance(b, (int, float)) and not isinstance(b, bool) else b
            assert _same(a, b), (col, i, a, b)


def test_the_old_file_gives_the_rows_it_gave_before():
    expected = pd.read_csv(OLD / "expected_rows.csv")
    actual = results.load([OLD])[expected.columns]
    _compare(pd.read_csv(pd.io.common.StringIO(actual.to_csv(index=False))), expected)


def test_the_old_file_gives_the_report_figures_it_gave_before():
    expected = pd.read_csv(OLD / "expected_points.csv")
    actual = load_report([OLD]).points[expected.columns]
    _compare(pd.read_csv(pd.io.common.StringIO(actual.to_csv(index=False))), expected)


def test_an_old_file_reads_into_typed_records_and_writes_back_what_it_read(tmp_path):
    (path,) = OLD.glob("*.json")
    run = read_run(path)
    assert isinstance(run, RunRecord) and run.schema_version == 1 and run.status == "complete"
    assert [p.workload for p in run.points] == ["prefill", "decode", "train"]
    assert all(p.summary is not None for p in run.points)  # computed on reading, as today's runs store it
    original = json.loads(path.read_text())
    write_run(tmp_path / "again.json", run)
    again = json.loads((tmp_path / "again.json").read_text())
    for key in original:
        if key != "points":
            assert again[key] == original[key] or key == "idle", key
    assert again["points"] == original["points"]
