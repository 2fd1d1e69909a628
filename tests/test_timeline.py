"""The power timeline goes to disk after every point, so a long run's memory stays flat."""

import csv
import json
import time

import pytest

from carbonbench import scenario as sc
from carbonbench.errors import ResultsError
from carbonbench.meters.base import MeterSet
from carbonbench.meters.cpu import CpuEstimateMeter
from carbonbench.meters.sampler import Sampler
from carbonbench.meters.select import build_meter_set
from carbonbench.runner import Hooks, Runner
from carbonbench.timeline import COLUMNS, Spans, TimelineFile


def _sampler_with(times, power=10.0):
    s = Sampler(lambda: [], 1.0, "test")
    s.add([{"unix_s": t, "component": "gpu0", "power_w": power} for t in times])
    return s


# -- the sampler hands its rows over ----------------------------------------------------
def test_drain_hands_over_rows_once_and_keeps_one_sample_before_the_cut():
    s = _sampler_with([1.0, 2.0, 3.0, 4.0, 5.0])
    rows = s.drain(before_unix_s=4.5)
    assert [r["unix_s"] for r in rows] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert s.rows() == []
    times, _ = s._series["gpu0"]
    assert times == [4.0, 5.0]  # 4.0: the neighbour a window opening at 4.5 interpolates from
    assert s.integrate("gpu0", 4.5, 5.0) == pytest.approx(5.0)
    assert s.drain(10.0) == []  # handed over once only


def test_a_window_after_a_drain_integrates_as_if_nothing_was_forgotten():
    times = [i * 0.1 for i in range(100)]
    kept, drained = _sampler_with(times), _sampler_with(times)
    drained.drain(before_unix_s=5.05)
    for window in ((5.05, 7.0), (5.3, 9.9)):
        assert drained.integrate("gpu0", *window) == pytest.approx(kept.integrate("gpu0", *window))


def test_meter_set_drains_every_meter_in_time_order():
    meter = CpuEstimateMeter(sample_interval_s=0.01)
    meter.sampler.add(
        [{"unix_s": 2.0, "component": "cpu", "power_w": 1.0}, {"unix_s": 1.0, "component": "cpu", "power_w": 1.0}]
    )
    ms = MeterSet([meter])
    assert [r["unix_s"] for r in ms.drain_timeline(before_unix_s=3.0)] == [1.0, 2.0]
    assert ms.timeline() == []


def test_every_column_a_meter_writes_is_a_file_column():
    meter = CpuEstimateMeter(sample_interval_s=0.01)
    meter.start()
    try:
        rows = []
        for _ in range(200):
            rows = meter.timeline()
            if rows:
                break
            time.sleep(0.01)
    finally:
        meter.close()
    assert rows
    for row in rows:
        assert set(row) <= set(COLUMNS), set(row) - set(COLUMNS)


# -- the file ---------------------------------------------------------------------------
def _read(path):
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_appends_keep_one_header_and_every_row(tmp_path):
    path = tmp_path / "t.csv"
    tl = TimelineFile(path)
    assert path.read_text() == ",".join(COLUMNS) + "\n"
    tl.append([{"unix_s": 1.0, "component": "cpu", "power_w": 5.0, "window": ""}])
    tl.append([])
    tl.append([{"unix_s": 2.0, "component": "gpu0", "power_w": 7.5, "sm_clock_mhz": 1980, "window": "k#r0"}])
    rows = _read(path)
    assert [(r["unix_s"], r["component"], r["power_w"], r["sm_clock_mhz"], r["window"]) for r in rows] == [
        ("1.0", "cpu", "5.0", "", ""),
        ("2.0", "gpu0", "7.5", "1980", "k#r0"),
    ]
    assert tl.rows_written == 2


def test_resume_cuts_a_partial_last_line_and_appends(tmp_path):
    path = tmp_path / "t.csv"
    TimelineFile(path).append([{"unix_s": 1.0, "component": "cpu", "power_w": 5.0}])
    with path.open("a") as f:
        f.write("2.0,cp")  # a write cut short by SIGKILL
    TimelineFile(path, resume=True).append([{"unix_s": 3.0, "component": "cpu", "power_w": 6.0}])
    assert [r["unix_s"] for r in _read(path)] == ["1.0", "3.0"]


def test_resume_rewrites_a_file_with_the_old_free_form_header(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("unix_s,component,power_w,window\n1.0,gpu0,50.0,a#r0\n")
    TimelineFile(path, resume=True).append([{"unix_s": 2.0, "component": "gpu0", "power_w": 60.0}])
    assert path.read_text().splitlines()[0] == ",".join(COLUMNS)
    assert [(r["unix_s"], r["window"]) for r in _read(path)] == [("1.0", "a#r0"), ("2.0", "")]


@pytest.mark.parametrize(
    "content, message",
    [
        (b"\xff\xfe not text", "damaged power timeline"),
        (b"unix_s,component,power_w,mystery\n1,cpu,2,3\n", "unexpected columns ['mystery']"),
        (b"unix_s,component,power_w\n1,cpu,2,3,4\n", "unexpected columns"),
    ],
)
def test_resume_refuses_a_timeline_it_cannot_continue(tmp_path, content, message):
    path = tmp_path / "t.csv"
    path.write_bytes(content)
    with pytest.raises(ResultsError, match=message.replace("[", r"\[").replace("]", r"\]")) as info:
        TimelineFile(path, resume=True)
    assert str(path) in str(info.value)
    assert path.read_bytes() == content  # left as it was, for the user to look at


def test_label_names_the_window_a_sample_fell_in():
    spans = Spans()
    spans.add(13.0, 14.0, "p#r1")  # in any order
    spans.add(10.0, 12.0, "p#r0")
    rows = [{"unix_s": t} for t in (9.0, 10.0, 12.0, 12.5, 13.5)]
    assert [r["window"] for r in spans.label(rows)] == ["", "p#r0", "p#r0", "", "p#r1"]


# -- the runner -------------------------------------------------------------------------
def test_each_point_is_on_disk_when_it_is_recorded_and_the_meters_keep_little(tiny_scenario, tmp_path):
    path = tiny_scenario("  sample_interval_s: 0.01\n")
    out = tmp_path / "out"
    seen = []
    scenario = sc.load(path)
    meters = build_meter_set("cpu", scenario.measurement)

    def point_done(point, record):
        (run_file,) = out.glob("*.json")
        timeline = out / json.loads(run_file.read_text())["timeline_file"]
        windows = {r["window"] for r in _read(timeline)}
        in_memory = len(meters.timeline())
        seen.append((record.key, windows, in_memory))

    outcome = Runner(scenario, out, meters=meters, hooks=Hooks(point_done=point_done)).run()
    assert [s[0] for s in seen] == [p.key for p in outcome.run.points]
    for key, windows, in_memory in seen:
        # This point's windows are in the file already, and the meters hold at most the
        # few samples taken since (0.01 s sampling; a point's windows took >= 0.1 s).
        assert {f"{key}#r0", f"{key}#r1"} <= windows
        assert in_memory < 5
    rows = _read(out / outcome.run.timeline_file)
    times = [float(r["unix_s"]) for r in rows]
    assert len(rows) > 50 and len(set(times)) == len(times)  # every sample once
    assert not list(out.glob(".*")), "temporary files left behind"


def test_a_report_skips_the_partial_line_of_a_killed_append(tiny_run, copy_run):
    from carbonbench.report import load as load_report

    run_file = copy_run(tiny_run)  # its constant meters sample 20 W (CPU) and 5 W (DRAM)
    path = run_file.parent / tiny_run.run.timeline_file
    complete = len(_read(path))
    assert complete > 10
    with path.open("a") as f:
        f.write(f"{tiny_run.run.points[0].started_unix_s},cpu,9")  # cut short: 9 of 20 W
    (run,) = load_report([run_file]).runs
    assert len(run.timeline) == complete
    assert 9.0 not in set(run.timeline["power_w"])


def test_a_full_disk_costs_the_timeline_not_the_measurements(tiny_scenario, tmp_path, monkeypatch):
    def full(self, rows):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(TimelineFile, "append", full)
    outcome = Runner(sc.load(tiny_scenario()), tmp_path / "out").run()
    assert outcome.run.status == "complete"
    assert all(p.status == "ok" and len(p.repeats) == 2 for p in outcome.run.points)
    warnings = [w for w in outcome.run.warnings if w.startswith("power timeline:")]
    assert warnings == ["power timeline: [Errno 28] No space left on device"]  # said once, not per window
