"""codecarbon alongside our meters: a real OfflineEmissionsTracker, isolated, never raising."""

import math
import time

import pytest

from carbonbench.carbon import CarbonConfig
from carbonbench.meters import codecarbon_sidecar as sidecar_module
from carbonbench.meters.codecarbon_sidecar import CodecarbonSidecar

ENERGY_KEYS = ("energy_j", "cpu_energy_j", "gpu_energy_j", "ram_energy_j", "emissions_g", "duration_s")


def test_a_real_offline_tracker_measures_a_point_and_ignores_user_config(hostile_codecarbon_config):
    sc = CodecarbonSidecar(CarbonConfig(country="FRA"), sample_interval_s=5.0)
    sc.start()
    sc.begin_point("p0")
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < 0.3:
        sum(i * i for i in range(1000))
    point = sc.end_point()
    run = sc.stop()
    d = sc.describe()
    assert d["errors"] == [], d
    for result in (point, run):
        assert result is not None
        for key in ENERGY_KEYS:
            assert math.isfinite(result[key]) and result[key] >= 0, key
        parts = result["cpu_energy_j"] + result["gpu_energy_j"] + result["ram_energy_j"]
        assert result["energy_j"] == pytest.approx(parts, rel=1e-6)
        assert result["country_iso_code"] == "FRA"
    assert point["label"] == "p0" and point["duration_s"] == pytest.approx(0.3, abs=0.2)
    assert point["energy_j"] > 0 and point["emissions_g"] > 0
    # FRA's grid (~56 g/kWh) with PUE 1, whatever the config files and variables said
    assert point["emissions_g"] / (point["energy_j"] / 3.6e6) == pytest.approx(56.0, rel=0.2)
    assert d["version"] and d["tracker"] == "OfflineEmissionsTracker" and d["isolated"] is True
    assert any("CPU" in h for h in d["mode"]) and d["country_iso_code"] == "FRA"
    conf = sc._tracker._conf
    assert conf["pue"] == 1.0 and conf["measure_power_secs"] == 5.0
    assert conf["project_name"] == "codecarbon" and conf["experiment_name"] == "base"
    assert conf["force_cpu_power"] is None and conf["save_to_api"] is False
    assert not list(hostile_codecarbon_config.glob("*.csv"))  # nothing written without output_dir


def test_with_an_output_dir_codecarbons_csvs_go_to_a_folder_of_their_own(tmp_path):
    sc = CodecarbonSidecar(CarbonConfig(country="DEU"), output_dir=tmp_path, sample_interval_s=5.0)
    sc.start()
    sc.begin_point("p0")
    time.sleep(0.05)
    assert sc.end_point() is not None
    assert sc.stop() is not None
    assert sc.describe()["errors"] == []
    assert (tmp_path / "codecarbon" / "emissions.csv").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["codecarbon"]


def test_without_isolation_the_hostile_config_would_have_been_read(hostile_codecarbon_config):
    # Proves the fixture is live: the plain tracker picks the files and variables up.
    tracker = sidecar_module._tracker_class(isolate=False)(
        country_iso_code="FRA", save_to_file=False, log_level="error", allow_multiple_runs=True
    )
    assert tracker._conf["pue"] == 3.0  # the variable beats the files
    assert tracker._conf["project_name"] == "from-file"
    assert tracker._conf["experiment_name"] == "from-env"


def test_disabled_sidecar_does_nothing_and_returns_none():
    sc = CodecarbonSidecar(CarbonConfig(), enabled=False)
    sc.start()
    sc.begin_point("p")
    assert sc.end_point() is None and sc.stop() is None
    assert sc.describe()["enabled"] is False and sc.describe()["errors"] == []


class _Data:
    duration, energy_consumed, cpu_energy, gpu_energy, ram_energy = 1.0, 1e-6, 4e-7, 0.0, 6e-7
    emissions, country_iso_code, region = 5e-8, "USA", None


def _fake_tracker(**behaviour):
    class FakeTracker:
        def __init__(self, **kwargs):
            if behaviour.get("init"):
                raise behaviour["init"]
            self.kwargs = kwargs
            self._conf = {"hardware": ["RAM()", "CPU(Cpu Load)"]}
            self._start_time = None
            self._active_task = None

        def start(self):  # codecarbon's own start swallows errors and returns None
            if not behaviour.get("start_fails"):
                self._start_time = 1.0

        def start_task(self, name):
            if behaviour.get("start_task"):
                raise behaviour["start_task"]
            self._active_task = name

        def stop_task(self):
            self._active_task = None
            return behaviour.get("task_data", _Data())

        def stop(self):
            self.final_emissions_data = behaviour.get("final", _Data())
            return behaviour.get("stop_returns", 5e-8)

    return FakeTracker


def _with_tracker(monkeypatch, **behaviour):
    monkeypatch.setattr(sidecar_module, "_tracker_class", lambda isolate: _fake_tracker(**behaviour))
    return CodecarbonSidecar(CarbonConfig(country="USA", region="california"))


def test_results_are_converted_from_kwh_and_kg(monkeypatch):
    sc = _with_tracker(monkeypatch)
    sc.start()
    assert sc._tracker.kwargs["country_iso_code"] == "USA" and sc._tracker.kwargs["region"] == "california"
    assert sc._tracker.kwargs["save_to_file"] is False and sc._tracker.kwargs["pue"] == 1.0
    sc.begin_point("p")
    r = sc.end_point()
    assert r["energy_j"] == pytest.approx(3.6) and r["cpu_energy_j"] == pytest.approx(1.44)
    assert r["ram_energy_j"] == pytest.approx(2.16) and r["emissions_g"] == pytest.approx(5e-5)


@pytest.mark.parametrize(
    "behaviour, error",
    [
        (dict(init=RuntimeError("no hardware")), "start: RuntimeError: no hardware"),
        (dict(start_fails=True), "start() returned without starting"),
        (dict(start_task=ValueError("bad task")), "start_task('p'): ValueError: bad task"),
        (dict(task_data=None), "stop_task('p') returned None"),
    ],
)
def test_failures_become_none_and_a_recorded_error_never_an_exception(monkeypatch, behaviour, error):
    sc = _with_tracker(monkeypatch, **behaviour)
    sc.start()
    sc.begin_point("p")
    assert sc.end_point() is None
    assert any(e.startswith(error) for e in sc.describe()["errors"]), sc.describe()["errors"]


def test_a_stop_that_returns_none_is_caught(monkeypatch):
    sc = _with_tracker(monkeypatch, stop_returns=None)
    sc.start()
    assert sc.stop() is None
    assert "stop() returned None" in sc.describe()["errors"][0]


def test_non_finite_figures_are_refused(monkeypatch):
    class NaNData(_Data):
        cpu_energy = float("nan")

    sc = _with_tracker(monkeypatch, task_data=NaNData())
    sc.start()
    sc.begin_point("p")
    assert sc.end_point() is None
    assert "non-finite cpu_energy_j" in sc.describe()["errors"][0]


def test_a_point_left_open_is_closed_before_the_next_begins(monkeypatch):
    sc = _with_tracker(monkeypatch)
    sc.start()
    sc.begin_point("a")
    sc.begin_point("b")
    assert sc.end_point()["label"] == "b"
    assert sc.end_point() is None  # nothing open any more
