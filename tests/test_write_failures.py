"""A full disk or a read-only directory, at any write: one line, the data kept, status 1 (or 2).

The faults come from tests/support/faults.py, which stands in for carbonbench.files' ``os``: the
program's own writes fail with the errno a kernel gives (ENOSPC, EROFS), at the moment
the test chooses, and nothing else in the process is touched.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import DATA
from support.cli import invoke_cli
from support.faults import FaultyDisk

from carbonbench import scenario as sc
from carbonbench.files import WriteError, append_bytes, atomic_write_text
from carbonbench.runfile import JOURNAL_SUFFIX, journal_path, read_journal, read_run
from carbonbench.runner import Hooks, Runner


@pytest.fixture
def disk(monkeypatch) -> FaultyDisk:
    return FaultyDisk(monkeypatch)


@pytest.fixture
def rescue(tmp_path, monkeypatch) -> Path:
    """Where a run puts its points when its own directory refuses them (not the real /tmp)."""
    folder = tmp_path / "rescue"
    folder.mkdir()
    monkeypatch.setattr("carbonbench.runfile.rescue_folders", lambda: [folder])
    return folder


def visible(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


# -- the writes themselves ----------------------------------------------------------------
def test_a_refused_whole_file_write_names_the_file_and_errno_and_leaves_the_old_one(disk, tmp_path):
    target = tmp_path / "r.json"
    target.write_text("old")
    disk.fill(tmp_path)
    with pytest.raises(WriteError) as info:
        atomic_write_text(target, "new" * 1000)
    assert str(info.value) == f"cannot write {target}: No space left on device (errno 28, ENOSPC)"
    assert info.value.exit_status == 1
    assert target.read_text() == "old" and visible(tmp_path) == ["r.json"]  # no temporary file left
    disk.free()
    disk.make_read_only(tmp_path)
    with pytest.raises(WriteError) as info:
        atomic_write_text(target, "new")
    assert str(info.value) == f"cannot write {target}: Read-only file system (errno 30, EROFS)"
    assert info.value.exit_status == 2


def test_an_append_cut_short_by_a_full_disk_is_cut_back_off(disk, tmp_path):
    path = tmp_path / "j.jsonl"
    append_bytes(path, b"line one\n")
    disk.fill(tmp_path)  # the next write gets half its bytes in, then ENOSPC
    with pytest.raises(WriteError):
        append_bytes(path, b"line two, which does not fit\n")
    assert path.read_bytes() == b"line one\n"
    disk.free()
    append_bytes(path, b"line three\n")
    assert path.read_bytes() == b"line one\nline three\n"


# -- carbonbench run ----------------------------------------------------------------------
def invoke_run(scenario: Path, out: Path, *extra: str):
    return invoke_cli("run", str(scenario), "--out", str(out), "--device", "cpu", *extra)


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("Error:")]


def test_a_disk_that_fills_mid_run_keeps_every_point_and_says_where(tiny_scenario, tmp_path, disk, rescue):
    out = tmp_path / "out"
    disk.fill(out, after=1, matching=JOURNAL_SUFFIX)  # full once the first point is journalled
    result = invoke_run(tiny_scenario(), out)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    (path,) = out.glob("*.json")
    (saved,) = rescue.glob("*.json")
    (line,) = error_lines(result.output)
    assert line == (
        f"Error: cannot write {path}: No space left on device (errno 28, ENOSPC); all 3 point(s) "
        f"are saved in {saved} instead"
    )
    assert (
        f"cannot write {journal_path(path)}: No space left on device (errno 28, ENOSPC); 1 point(s) kept in "
        "memory" in result.output
    )  # said as it happened, once
    rescued = read_run(saved)
    assert rescued.status == "complete" and len(rescued.points) == 3
    assert all(p.ok for p in rescued.points)
    # What made it to the run's own directory is still readable: the first point.
    assert [p.key for p in read_journal(journal_path(path))] == [rescued.points[0].key]
    assert read_run(path).status == "running"
    assert not [p for p in visible(out) if p.startswith(".")]


def test_a_disk_that_frees_up_again_loses_nothing(tiny_scenario, tmp_path, disk, rescue):
    out, logs, done = tmp_path / "out", [], []

    def point_done(point, record):
        done.append(point.key)
        if len(done) == 1:
            disk.fill(out)  # the second point's writes fail ...
        else:
            disk.free()  # ... and are made after the next one

    outcome = Runner(sc.load(tiny_scenario()), out, hooks=Hooks(log=logs.append, point_done=point_done)).run()
    assert outcome.unsaved is None and outcome.run.status == "complete"
    data = json.loads(outcome.path.read_text())
    assert [p["key"] for p in data["points"]] == done
    assert sum("No space left on device" in line for line in logs) == 1  # said once
    assert any("written again, nothing lost" in line for line in logs)
    assert any("No space left on device" in w for w in data["warnings"])  # the run file remembers
    assert visible(rescue) == [] and not list(out.glob(f"*{JOURNAL_SUFFIX}"))


def test_a_run_whose_directory_is_read_only_stops_before_measuring(tiny_scenario, tmp_path, disk):
    out = tmp_path / "out"
    out.mkdir()
    disk.make_read_only(out)
    result = invoke_run(tiny_scenario(), out)
    assert result.exit_code == 1, result.output
    (line,) = error_lines(result.output)
    assert line.startswith(f"Error: cannot write {out}/") and line.endswith("Read-only file system (errno 30, EROFS)")
    assert "Traceback" not in result.output and visible(out) == []


# -- carbonbench report -o and export -o --------------------------------------------------
@pytest.mark.parametrize("command, name", [("report", "r.html"), ("export", "rows.csv")])
@pytest.mark.parametrize(
    "fault, status, why",
    [
        ("read-only", 2, "Read-only file system (errno 30, EROFS)"),
        ("full", 1, "No space left on device (errno 28, ENOSPC)"),
    ],
)
def test_report_and_export_to_a_bad_target_say_so_in_one_line(command, name, fault, status, why, disk, tmp_path):
    target_dir = tmp_path / "target"
    target_dir.mkdir()
    (target_dir / name).write_text("the old one")
    if fault == "read-only":
        disk.make_read_only(target_dir)
    else:
        disk.fill(target_dir)
    result = invoke_cli(command, str(DATA / "results"), "-o", str(target_dir / name))
    assert result.exit_code == status, result.output
    assert error_lines(result.output) == [f"Error: cannot write {target_dir / name}: {why}"]
    assert "Traceback" not in result.output
    assert visible(target_dir) == [name] and (target_dir / name).read_text() == "the old one"
