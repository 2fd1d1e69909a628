"""The run file's journal: each point appended as it finishes, merged back by every reader.

A run writes the run file at its start and end (and at most every SUMMARY_EVERY_S in
between), and each finished point as one line of ``<run-id>.points.jsonl``. A run killed
mid-sweep leaves a stale run file and the journal: every reader must see the journalled
points, ``--resume`` must carry on from them, and nothing may come out twice.
"""

from __future__ import annotations

import json
import os
import signal

import pytest
from support.forked_cli import Launcher
from support.scenarios import scenario_text

from carbonbench import results
from carbonbench import scenario as sc
from carbonbench.errors import ResultsError
from carbonbench.records import PointRecord
from carbonbench.report import load as load_report
from carbonbench.run_record import SCHEMA_VERSION, RunRecord
from carbonbench.runfile import (
    JOURNAL_SUFFIX,
    RunFile,
    journal_line,
    journal_path,
    lock_path,
    merge_points,
    read_journal,
    read_run,
)
from carbonbench.runner import Hooks, Interrupted, Runner

TIMEOUT_S = 240


def point(key: str, status: str = "ok", energy_j: float = 1.0) -> PointRecord:
    model, workload, batch, size = key.split("/")
    return PointRecord(
        key=key,
        model=model,
        workload=workload,
        batch_size=int(batch[1:]),
        prompt_tokens=int(size[1:]),
        status=status,
        error=None if status == "ok" else "boom",
        summary={"joules_per_token": {"mean": energy_j, "std": 0.0, "ci95": 0.0, "n": 1}},
    )


def record(**fields) -> RunRecord:
    return RunRecord(
        run_id="r", scenario={"name": "s", "carbon": {"grid_g_per_kwh": 400.0}}, environment={"hostname": "h"}, **fields
    )


def keys(points) -> list[str]:
    return [p.key for p in points]


# -- reading a journal --------------------------------------------------------------------
def test_a_partial_last_line_is_cut_off_and_blank_lines_are_skipped(tmp_path):
    path = tmp_path / "r.points.jsonl"
    path.write_bytes(
        journal_line(point("m/prefill/b1/p8"))
        + b"\n"
        + journal_line(point("m/prefill/b1/p16"))
        + journal_line(point("m/prefill/b1/p32"))[:40]
    )  # the write a kill cut short
    assert keys(read_journal(path)) == ["m/prefill/b1/p8", "m/prefill/b1/p16"]
    assert read_journal(tmp_path / "none.points.jsonl") == []


@pytest.mark.parametrize(
    "line, message",
    [
        (b"{not json\n", "line 2 is not a point (not valid JSON)"),
        (b"[1, 2]\n", "line 2: not a JSON object"),
        (b'{"key": "k", "batch_size": "two"}\n', "line 2: 'point.batch_size' is damaged (expected a number)"),
    ],
)
def test_a_damaged_line_is_refused_by_file_and_line(tmp_path, line, message):
    path = tmp_path / "r.points.jsonl"
    path.write_bytes(journal_line(point("m/prefill/b1/p8")) + line + journal_line(point("m/prefill/b1/p16")))
    with pytest.raises(ResultsError) as info:
        read_journal(path)
    assert str(info.value) == f"{path}: {message}"


def test_duplicates_keep_the_last_ok_record_and_never_two():
    merged = merge_points(
        [
            point("m/prefill/b1/p8", "error"),
            point("m/prefill/b1/p16", energy_j=1.0),
            point("m/prefill/b1/p8", energy_j=2.0),  # measured again, ok: replaces the failure
            point("m/prefill/b1/p16", "oom"),  # a later failure never replaces an ok point
            point("m/prefill/b1/p16", energy_j=3.0),  # a later ok one does
            point("m/prefill/b1/p32", "error"),
            point("m/prefill/b1/p32", "nan"),  # failed twice: the last
        ]
    )
    assert [(p.key, p.status, p.summary["joules_per_token"]["mean"]) for p in merged] == [
        ("m/prefill/b1/p8", "ok", 2.0),
        ("m/prefill/b1/p16", "ok", 3.0),
        ("m/prefill/b1/p32", "nan", 1.0),
    ]


def test_read_run_merges_the_journal_beside_a_stale_run_file(tmp_path):
    path = tmp_path / "r.json"
    run_file = RunFile(path, record(points=[point("m/prefill/b1/p8")]))
    run_file.save(status="running")
    run_file.add_point(point("m/prefill/b1/p16"))
    run_file.add_point(point("m/prefill/b1/p8", energy_j=5.0))
    assert json.loads(path.read_text())["points"][0]["summary"]["joules_per_token"]["mean"] == 1.0  # stale
    run = read_run(path)
    assert run.status == "running" and run.schema_version == SCHEMA_VERSION == 2
    assert [(p.key, p.summary["joules_per_token"]["mean"]) for p in run.points] == [
        ("m/prefill/b1/p16", 1.0),
        ("m/prefill/b1/p8", 5.0),
    ]
    with pytest.raises(ResultsError, match=r"the point journal of a run, not a run file; read r.json beside it"):
        read_run(journal_path(path))


# -- writing ------------------------------------------------------------------------------
def test_a_point_costs_one_appended_line_not_a_rewrite(tmp_path):
    path = tmp_path / "r.json"
    run_file = RunFile(path, record())
    run_file.save(status="running")
    summary = path.read_bytes()
    for i in range(50):
        run_file.add_point(point(f"m/prefill/b1/p{i + 1}"))
        assert path.read_bytes() == summary  # within SUMMARY_EVERY_S: the run file is left alone
    lines = journal_path(path).read_bytes().splitlines(keepends=True)
    assert lines == [journal_line(p) for p in run_file.record.points]
    run_file.summary_every_s = 0  # due now: written, but with the points it started with only
    run_file.warn("something to say")
    run_file.add_point(point("m/prefill/b1/p99"))
    assert json.loads(path.read_text())["points"] == [] and "something to say" in path.read_text()
    run_file.close("complete")
    closed = json.loads(path.read_text())
    assert closed["status"] == "complete" and len(closed["points"]) == 51
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]  # journal gone: the file holds it all


def test_a_new_run_file_is_on_disk_before_anything_is_measured(tiny_scenario, tmp_path):
    seen = []

    def first_point(point, record):
        (path,) = (tmp_path / "out").glob("*.json")
        seen.append(json.loads(path.read_text())["status"])

    outcome = Runner(sc.load(tiny_scenario()), tmp_path / "out", hooks=Hooks(point_done=first_point)).run()
    assert seen[0] == "running" and outcome.run.status == "complete"
    assert sorted(p.suffix for p in (tmp_path / "out").iterdir()) == [".csv", ".json"]


def test_resuming_an_old_layout_file_continues_it_in_the_new_one(tiny_scenario, tmp_path):
    scenario = sc.load(tiny_scenario())

    def stop(point, record):
        raise KeyboardInterrupt

    with pytest.raises(Interrupted):
        Runner(scenario, tmp_path, hooks=Hooks(point_done=stop)).run()
    (path,) = tmp_path.glob("*.json")
    old = json.loads(path.read_text())
    old["schema_version"] = 1  # every point inside, no journal: what carbonbench wrote before
    path.write_text(json.dumps(old))
    outcome = Runner(scenario, tmp_path, resume=True).run()
    assert outcome.path == path and outcome.skipped == 1
    again = json.loads(path.read_text())
    assert again["schema_version"] == 2 and again["status"] == "complete"
    assert len({p["key"] for p in again["points"]}) == len(again["points"]) == 3


# -- a run killed mid-sweep ---------------------------------------------------------------
@pytest.fixture(scope="module")
def killed(tmp_path_factory):
    """A real run SIGKILLed after its first point: no closing write, a stale lock."""
    workdir = tmp_path_factory.mktemp("killed")
    scenario = workdir / "two.yaml"
    scenario.write_text(
        scenario_text(
            name="killed",
            batch_sizes="[2]",
            workloads="{prefill: {prompt_tokens: [8, 16]}, decode: {prompt_tokens: [8], new_tokens: [2]}}",
            sample_interval_s=0.01,
            idle_baseline_s=0.05,
        )
    )
    out = workdir / "out"
    run = Launcher(workdir).start(
        ["run", str(scenario), "--out", str(out), "--device", "cpu"], CARBONBENCH_PAUSE_AT="between-points"
    )
    run.wait_for("carbonbench: paused at between-points", TIMEOUT_S)
    os.kill(run.pid, signal.SIGKILL)
    assert run.wait(TIMEOUT_S) == 137
    return scenario, out


def test_a_killed_run_keeps_its_journalled_point_for_every_reader(invoke_cli, killed):
    _, out = killed
    (path,) = out.glob("*.json")
    assert json.loads(path.read_text())["points"] == []  # the run file alone: stale
    assert len(read_journal(journal_path(path))) == 1 and lock_path(path).exists()
    run = read_run(path)
    assert run.status == "running" and len(run.points) == 1
    assert results.result_files([out]) == [path]  # the journal is no run file
    assert set(results.load([out], derive=False)["model"]) == {"opt-tiny"}
    report = load_report([out])
    assert [len(r.record.points) for r in report.runs] == [1] and len(report.points) == 1
    compared = invoke_cli("compare", str(out), str(out))
    assert compared.exit_code == 0 and "prefill" in compared.output, compared.output


def test_resume_after_a_kill_takes_over_the_lock_and_measures_each_point_once(invoke_cli, killed):
    scenario, out = killed
    (path,) = out.glob("*.json")
    with journal_path(path).open("ab") as f:
        f.write(b'{"key": "opt-tiny/pre')  # as if killed in the middle of an append
    result = invoke_cli("run", str(scenario), "--out", str(out), "--device", "cpu", "--resume")
    assert result.exit_code == 0, result.output
    assert "took over the lock of pid" in result.output and "which is gone" in result.output
    assert "resume: 1 of 3 points already measured" in result.output
    run = json.loads(path.read_text())
    assert run["status"] == "complete"
    assert sorted(p["key"] for p in run["points"]) == sorted({p["key"] for p in run["points"]})
    assert len(run["points"]) == 3
    assert sorted(p.name.removeprefix(path.stem) for p in out.iterdir()) == [".json", ".timeline.csv"]
    assert not list(out.glob(f"*{JOURNAL_SUFFIX}"))
