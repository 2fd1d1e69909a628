"""Output paths derived from scenario content cannot escape --out.

Scenario names (and a result file's own fields, when a run is resumed) end up in file
names. Whatever they hold, every file a run writes must lie inside the output directory.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.scenarios import scenario_text

from carbonbench import scenario as sc
from carbonbench.files import safe_name
from carbonbench.runner import Hooks, Interrupted, Runner

HOSTILE_NAMES = [
    "../../evil",
    "/abs/x",
    "..",
    "a/b",
    "<script>alert(1)</script>",
    ".hidden",
    "a\\..\\b",
    "~/x",
    "nul\x00l",
]


def write_scenario(directory: Path, name: str) -> Path:
    path = directory / "s.yaml"
    path.write_text(
        scenario_text(
            name=json.dumps(name),  # a JSON string is a valid YAML string, escapes and all
            workloads="{prefill: {prompt_tokens: [4]}}",
            min_seconds=0.01,
            sample_interval_s=0.005,
        )
    )
    return path


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def assert_inside(files: set[Path], out: Path) -> None:
    out = out.resolve()
    for f in files:
        assert f.resolve().is_relative_to(out), f"{f} is outside {out}"
        assert not f.name.startswith("."), f"hidden or temporary file left: {f}"


@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=range(len(HOSTILE_NAMES)))
def test_scenario_names_cannot_escape_the_output_directory(name, tmp_path):
    sandbox = tmp_path / "deep" / "sandbox"
    sandbox.mkdir(parents=True)
    scenario_file = write_scenario(tmp_path, name)
    out = sandbox / "out"
    outcome = Runner(sc.load(scenario_file), out, device="cpu").run()
    assert outcome.run.scenario["name"] == name  # kept as data, only the file name is sanitised
    assert files_under(sandbox) == files_under(out)  # nothing beside out
    assert {p.name for p in tmp_path.iterdir()} == {"deep", "s.yaml"}  # nothing above it
    assert {p.name for p in (tmp_path / "deep").iterdir()} == {"sandbox"}
    assert_inside(files_under(out), out)
    run_files = list(out.glob("*.json"))
    assert run_files == [outcome.path]
    assert re.fullmatch(r"[A-Za-z0-9._-]+", outcome.path.name)
    assert not Path("/abs/x").exists()


def test_a_resumed_result_file_cannot_redirect_the_timeline(tmp_path):
    """On --resume the run file is read back: its timeline_file must not pick where we write."""
    scenario = sc.load(write_scenario(tmp_path, "resume"))
    out = tmp_path / "sandbox" / "out"

    def stop(point, record):
        raise KeyboardInterrupt

    two_points = scenario.replace(
        workloads=scenario.workloads.__class__(prefill=scenario.workloads.prefill.__class__(prompt_tokens=[4, 8]))
    )
    with pytest.raises(Interrupted):
        Runner(two_points, out, device="cpu", hooks=Hooks(point_done=stop)).run()
    (run_file,) = out.glob("*.json")
    run = json.loads(run_file.read_text())
    for hostile in ("../../escaped.csv", "/tmp/carbonbench-escaped.csv"):
        run["timeline_file"] = hostile
        run_file.write_text(json.dumps(run))
        outcome = Runner(two_points, out, device="cpu", resume=True).run()
        assert outcome.path == run_file
        assert outcome.run.status == "complete"
        assert not (tmp_path / "escaped.csv").exists()
        assert not Path("/tmp/carbonbench-escaped.csv").exists()
        assert_inside(files_under(tmp_path / "sandbox"), out)
        assert (out / outcome.run.timeline_file).is_file()
        run = json.loads(run_file.read_text())
        run["status"], run["points"] = "interrupted", run["points"][:1]


@settings(deadline=None, max_examples=300)
@given(text=st.text(max_size=120), max_len=st.integers(1, 100))
def test_safe_name_is_idempotent_and_safe(text, max_len):
    name = safe_name(text, max_len)
    assert safe_name(name, max_len) == name
    assert re.fullmatch(r"[A-Za-z0-9._-]+", name)
    assert ".." not in name and not name.startswith((".", "-")) and len(name) <= max_len
    assert Path(name).name == name and not Path(name).is_absolute()
