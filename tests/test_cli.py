import json

import pytest
from support import DATA

from carbonbench.cli import cli


@pytest.mark.parametrize("command", [[], *[[name] for name in cli.commands]])
def test_help_everywhere(invoke_cli, command):
    result = invoke_cli(*command, "--help")
    assert result.exit_code == 0
    assert "Usage:" in result.output


def test_models_lists_exact_parameter_counts(invoke_cli):
    result = invoke_cli("models")
    assert result.exit_code == 0, result.output
    assert "174,604,468,224" in result.output  # opt-175b
    assert "125,239,296" in result.output  # opt-125m
    assert "post-LN" in result.output  # opt-350m


def test_env_shows_meters(invoke_cli):
    result = invoke_cli("env", "--device", "cpu", "--format", "json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["device_type"] == "cpu"
    assert any(m["name"] == "cpu-estimate" or m.get("kind") == "cpu" for m in info["meters"])


def test_run_then_rerun_from_the_result_file(invoke_cli, tiny_scenario, tmp_path):
    out = tmp_path / "out"
    result = invoke_cli("run", str(tiny_scenario()), "--out", str(out), "--quick")
    assert result.exit_code == 0, result.output
    assert "J/token" in result.output and "opt-tiny" in result.output
    (first,) = out.glob("*.json")
    again = invoke_cli("run", str(first), "--out", str(tmp_path / "again"), "--device", "cpu", "--quick")
    assert again.exit_code == 0, again.output
    (second,) = (tmp_path / "again").glob("*.json")
    a, b = json.loads(first.read_text()), json.loads(second.read_text())
    assert a["scenario"] == b["scenario"]
    assert [p["key"] for p in a["points"]] == [p["key"] for p in b["points"]]


def test_failed_point_gives_exit_status_1(invoke_cli, tiny_scenario, tmp_path, monkeypatch):
    from carbonbench.workloads import Prefill

    monkeypatch.setattr(Prefill, "step", lambda self: 1 / 0)
    result = invoke_cli("run", str(tiny_scenario()), "--out", str(tmp_path))
    assert result.exit_code == 1
    assert "1 point(s) failed" in result.output


@pytest.mark.parametrize("name", ["unknown_nested_key", "model_typo", "yaml_syntax", "batch_zero"])
def test_bad_scenario_exit_2_one_line_no_traceback(invoke_cli, name, tmp_path):
    path = DATA / "bad_scenarios" / f"{name}.yaml"
    result = invoke_cli("run", str(path), "--out", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and str(path) in lines[0]
    assert not (tmp_path / "out").exists()  # nothing written


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "missing.yaml"], "file not found"),
        (["run", "notes.txt"], "expected a scenario (.yaml), a result file (.json) or the name of a shipped scenario"),
        (["run", "scenarios/opt-125m.yaml", "--device", "tpu"], "Invalid value for '--device'"),
    ],
)
def test_bad_arguments(invoke_cli, args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("hi")
    result = invoke_cli(*args)
    assert result.exit_code == 2
    assert message in result.output
