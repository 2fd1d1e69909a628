import json
import os

import pytest
from support.scenarios import scenario_text

from carbonbench import files, results
from carbonbench import scenario as sc
from carbonbench.errors import ResultsError
from carbonbench.runner import Runner


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("res")
    path = tmp / "tiny.yaml"
    path.write_text(
        scenario_text(
            name="tiny",
            batch_sizes="[1, 2]",
            workloads="{prefill: {prompt_tokens: [8]}, decode: {prompt_tokens: [8], new_tokens: [3]}}",
            repeats=3,
            idle_baseline_s=0.1,
        )
    )
    Runner(sc.load(path), tmp / "out").run()
    return tmp / "out"


def test_round_trip_one_row_per_point_and_repeat(run_dir):
    (run_file,) = run_dir.glob("*.json")
    run = json.loads(run_file.read_text())
    df = results.load(run_dir)
    assert len(df) == 4 * 3
    for col in [
        "model",
        "workload",
        "batch_size",
        "prompt_tokens",
        "new_tokens",
        "seq_len",
        "repeat",
        "status",
        "tokens",
        "duration_s",
        "tokens_per_s",
        "energy_j",
        "joules_per_token",
        "energy_method",
    ]:
        assert col in df.columns
    for point in run["points"]:
        rows = df[(df.workload == point["workload"]) & (df.batch_size == point["batch_size"])]
        assert sorted(rows.repeat) == [0, 1, 2]
        for rep in point["repeats"]:
            row = rows[rows.repeat == rep["repeat"]].iloc[0]
            assert row.tokens == rep["tokens"]
            assert row.energy_j == pytest.approx(rep["energy_j"])
            assert row.joules_per_token == pytest.approx(rep["energy_j"] / rep["tokens"])
            assert row.tokens_per_s == pytest.approx(rep["tokens"] / rep["duration_s"])
            assert row.energy_method == "estimated" and row.energy_cpu_method == "estimated"
    assert set(df.model) == {"opt-tiny"} and set(df.status) == {"ok"}


def test_load_accepts_files_and_directories_from_several_runs(run_dir, tmp_path):
    (run_file,) = run_dir.glob("*.json")
    other = json.loads(run_file.read_text())
    other["run_id"] = "other-machine"
    other["device"]["name"] = "NVIDIA H100 80GB HBM3"
    (tmp_path / "other.json").write_text(json.dumps(other))
    df = results.load([run_file, tmp_path])
    assert set(df.run_id) == {other["run_id"], json.loads(run_file.read_text())["run_id"]}
    assert len(df) == 2 * 12


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"schema": "carbonbench.run", "schema_version": 1, "run_id": "x", "poi', "not valid JSON"),
        ("[1, 2]", "not a carbonbench result file"),
        ('{"schema": "carbonbench.run", "schema_version": 99, "run_id": "x"}', "schema_version 99"),
        ('{"schema": "carbonbench.run", "schema_version": 1, "run_id": "x", "scenario": {}}', "'points'"),
    ],
)
def test_damaged_files_are_named(tmp_path, content, message):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    with pytest.raises(ResultsError, match=message) as info:
        results.load(bad)
    assert str(bad) in str(info.value)


def test_skip_damaged_files_with_a_warning(run_dir, tmp_path):
    (run_file,) = run_dir.glob("*.json")
    (tmp_path / "good.json").write_text(run_file.read_text())
    (tmp_path / "broken.json").write_text(run_file.read_text()[:100])
    with pytest.warns(UserWarning, match="broken.json"):
        df = results.load(tmp_path, on_error="skip")
    assert len(df) == 12


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "r.json"
    files.atomic_write_text(target, "old")

    def fail(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        files.atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["r.json"]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("../../etc/passwd", "etc-passwd"),
        ("/abs/path", "abs-path"),
        ("<script>", "script"),
        ("..", "run"),
        ("ok-name_1.2", "ok-name_1.2"),
    ],
)
def test_safe_name_cannot_escape(text, expected):
    assert files.safe_name(text) == expected
