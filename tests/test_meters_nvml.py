"""The NVML meter against a fake pynvml (tests/support/fake_nvml.py) installed at its import site."""

import time

import pynvml as real
import pytest
import torch
from support.fake_nvml import FakeGpu, make_fake_nvml

from carbonbench import timeline
from carbonbench.errors import MeterError
from carbonbench.meters import nvml
from carbonbench.meters.base import MeterSet, NullMeter
from carbonbench.meters.nvml import (
    DriverNotLoaded,
    GPULost,
    NvmlError,
    NvmlMeter,
    NVMLNoPermission,
    NVMLNotSupported,
    visible_devices,
)
from carbonbench.meters.sampler import SamplerError
from carbonbench.scenario import MeasurementConfig


@pytest.fixture
def gpus():
    return [FakeGpu("GPU-aaaa1111-0000"), FakeGpu("GPU-bbbb2222-0000", power_w=100.0)]


@pytest.fixture
def fake(monkeypatch, gpus):
    module = make_fake_nvml(gpus)
    monkeypatch.setattr(nvml, "pynvml", module)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return module


def _window(meter, seconds):
    ms = MeterSet([meter])
    ms.start()
    try:
        with ms.window("w") as w:
            time.sleep(seconds)
    finally:
        ms.close()
    return w.measurement


# -- energy --------------------------------------------------------------------------
def test_counter_energy_per_gpu_with_the_integrated_figure_alongside(fake):
    meter = NvmlMeter(sample_interval_s=0.02)
    m = _window(meter, 0.3)
    assert [c.component for c in m.components] == ["gpu0", "gpu1"]
    for c, watts in zip(m.components, (200.0, 100.0)):
        assert c.method == "counter" and c.kind == "gpu" and c.meter == "nvml"
        assert c.energy_j == pytest.approx(watts * m.duration_s, rel=0.03)
        assert c.integrated_j == pytest.approx(watts * m.duration_s, rel=0.03)
    assert m.energy_by_kind("gpu") == pytest.approx(300.0 * m.duration_s, rel=0.03)
    assert m.method == "counter"
    assert "nvmlShutdown" not in fake.calls  # codecarbon may still be using NVML


def test_gpus_without_a_counter_are_integrated(fake, gpus):
    gpus[0].arch = real.NVML_DEVICE_ARCH_PASCAL
    gpus[0].counter = False
    gpus[1].counter = False  # Volta or later, yet the driver refuses the counter (vGPU)
    meter = NvmlMeter(sample_interval_s=0.02)
    assert [g.has_counter for g in meter.gpus] == [False, False]
    m = _window(meter, 0.3)
    assert [c.method for c in m.components] == ["integrated", "integrated"]
    assert m.components[0].energy_j == pytest.approx(200.0 * m.duration_s, rel=0.03)
    assert meter.describe()["method"] == "integrated"
    assert "before Volta" in meter.describe()["devices"][0]["energy_source"]


def test_integration_works_from_edge_samples_with_the_sampler_off(fake, gpus):
    for g in gpus:
        g.counter = False
    meter = NvmlMeter(sample_interval_s=None)
    m = _window(meter, 0.05)
    assert not meter.sampler.running
    assert m.components[1].energy_j == pytest.approx(100.0 * m.duration_s, rel=0.05)
    assert meter.flags() == ()


def test_a_counter_that_goes_backwards_falls_back_to_integration(fake, gpus):
    meter = NvmlMeter(sample_interval_s=0.02)
    ms = MeterSet([meter])
    ms.start()
    ms.begin_window("w")
    time.sleep(0.1)
    gpus[0].offset_mj = 0  # the driver reloaded
    m = ms.end_window("w")
    ms.close()
    assert m.components[0].method == "integrated"
    assert m.components[0].energy_j == pytest.approx(200.0 * m.duration_s, rel=0.1)
    assert m.components[1].method == "counter"


def test_power_source_is_the_instant_field_where_the_driver_has_it(fake, gpus):
    gpus[1].instant = False
    meter = NvmlMeter(sample_interval_s=None)
    d = meter.describe()["devices"]
    assert "NVML_FI_DEV_POWER_INSTANT" in d[0]["power_source"]
    assert "1 s moving average" in d[1]["power_source"]
    assert meter._power_w(meter.gpus[1]) == 100.0


def test_a_gpu_without_power_readings_is_still_metered_by_its_counter(fake, gpus):
    gpus[0].instant = False
    gpus[0].refuse = {"nvmlDeviceGetPowerUsage"}
    meter = NvmlMeter(sample_interval_s=None)
    assert "reports no power" in meter.describe()["devices"][0]["power_source"]
    m = _window(meter, 0.05)
    assert m.components[0].method == "counter" and m.components[0].integrated_j is None
    assert m.components[0].energy_j == pytest.approx(200.0 * m.duration_s, rel=0.1)


def test_a_gpu_with_neither_counter_nor_power_cannot_be_metered(fake, gpus):
    gpus[0].counter, gpus[0].instant = False, False
    gpus[0].refuse = {"nvmlDeviceGetPowerUsage"}
    with pytest.raises(NVMLNotSupported, match="neither an energy counter nor its power"):
        NvmlMeter()


def test_short_windows_are_flagged_against_the_100ms_counter(fake):
    ms = MeterSet([NvmlMeter(sample_interval_s=None)])
    assert ms.resolution_s == pytest.approx(0.1)
    with ms.window("blink") as w:
        pass
    assert "short-window" in w.measurement.flags


# -- the timeline --------------------------------------------------------------------
def test_the_sampler_records_power_clocks_utilisation_temperature_and_memory(fake):
    meter = NvmlMeter(sample_interval_s=0.01)
    meter.start()
    time.sleep(0.1)
    meter.close()
    rows = [r for r in meter.timeline() if "sm_clock_mhz" in r]
    assert len(rows) >= 4
    assert rows[0] == {
        "unix_s": rows[0]["unix_s"],
        "component": rows[0]["component"],
        "kind": "gpu",
        "power_w": rows[0]["power_w"],
        "sm_clock_mhz": 1980,
        "mem_clock_mhz": 2619,
        "gpu_util_pct": 97,
        "mem_util_pct": 41,
        "temperature_c": 61,
        "memory_used_bytes": 12 * 2**30,
    }
    assert {r["component"] for r in rows} == {"gpu0", "gpu1"}
    times = [r["unix_s"] for r in meter.timeline()]
    assert times == sorted(times)
    assert set().union(*meter.timeline()) <= set(timeline.COLUMNS)  # all of it reaches the file


def test_fields_a_gpu_refuses_are_left_empty_and_not_asked_again(fake, gpus):
    gpus[0].refuse = {"nvmlDeviceGetTemperature", "nvmlDeviceGetClockInfo"}
    meter = NvmlMeter(sample_interval_s=0.01)
    meter.start()
    time.sleep(0.08)
    meter.close()
    rows = [r for r in meter.timeline() if r["component"] == "gpu0" and "temperature_c" in r]
    assert rows and all(r["temperature_c"] is None and r["sm_clock_mhz"] is None for r in rows)
    assert all(r["power_w"] == 200.0 for r in rows)
    assert meter.describe()["devices"][0]["unsupported_fields"] == ["mem_clock_mhz", "sm_clock_mhz", "temperature_c"]
    gpu1_samples = sum(1 for r in meter.timeline() if r["component"] == "gpu1" and "temperature_c" in r)
    assert fake.calls.count("nvmlDeviceGetTemperature") == gpu1_samples + 1  # gpu0 was asked once


def test_describe_says_what_each_gpu_is_and_how_it_is_measured(fake):
    meter = NvmlMeter(sample_interval_s=0.1)
    d = meter.describe()
    assert d["name"] == "nvml" and d["kind"] == "gpu" and d["method"] == "counter"
    assert d["driver_version"] == "550.54.15" and d["resolution_s"] == 0.1
    dev = d["devices"][0]
    assert dev["component"] == "gpu0" and dev["uuid"] == "GPU-aaaa1111-0000" and dev["nvml_index"] == 0
    assert dev["architecture"] == "Hopper" and dev["power_limit_w"] == 700.0
    assert "nvmlDeviceGetTotalEnergyConsumption" in dev["energy_source"]
    assert d["sampler"]["enabled"] is True and d["sampler"]["interval_s"] == 0.1


# -- errors --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "theirs, ours, words",
    [
        (real.NVMLError_NotSupported, NVMLNotSupported, "not supported"),
        (real.NVMLError_GpuIsLost, GPULost, "GPU is lost"),
        (real.NVMLError_DriverNotLoaded, DriverNotLoaded, "driver is not loaded"),
        (real.NVMLError_LibraryNotFound, DriverNotLoaded, "libnvidia-ml.so.1 was not found"),
        (real.NVMLError_NoPermission, NVMLNoPermission, "permission denied"),
        (real.NVMLError_Unknown, NvmlError, "Unknown Error"),
    ],
)
def test_nvml_errors_become_the_projects_own(fake, theirs, ours, words):
    error = nvml.map_error(theirs(), "reading the power of gpu0", nvml.pynvml)
    assert type(error) is ours and isinstance(error, MeterError)
    assert "reading the power of gpu0" in str(error) and words in str(error)
    assert isinstance(error.__cause__, theirs)


@pytest.mark.parametrize("error", [real.NVMLError_DriverNotLoaded, real.NVMLError_LibraryNotFound])
def test_no_driver_at_init_is_a_clear_error(monkeypatch, error):
    monkeypatch.setattr(nvml, "pynvml", make_fake_nvml([], init_error=error))
    with pytest.raises(DriverNotLoaded, match="initialising NVML"):
        NvmlMeter()


def test_a_gpu_lost_mid_run_stops_the_sampler_and_surfaces_on_every_path(fake, gpus):
    meter = NvmlMeter(sample_interval_s=0.01)
    ms = MeterSet([meter])
    ms.start()
    ms.begin_window("w")
    gpus[1].lost = True
    deadline = time.monotonic() + 2
    while meter.sampler.running and time.monotonic() < deadline:
        time.sleep(0.005)
    assert not meter.sampler.running  # fatal: the thread ended at once
    assert meter.flags() == ("sampler-stopped:nvml",)
    with pytest.raises(GPULost, match="gpu1"):
        ms.end_window("w")
    with pytest.raises(SamplerError) as info:
        meter.close()
    assert isinstance(info.value.__cause__, GPULost)
    meter.close()  # and the second close is quiet


def test_meter_set_close_reports_the_sampler_failure(fake, gpus):
    meter = NvmlMeter(sample_interval_s=0.01)
    ms = MeterSet([meter])
    ms.start()
    gpus[0].lost = True
    time.sleep(0.05)
    with pytest.raises(MeterError, match="GPU is lost"):
        ms.close()
    assert not meter.sampler.running


# -- which GPUs ----------------------------------------------------------------------
@pytest.fixture
def four(monkeypatch):
    gpus = [FakeGpu(f"GPU-{c * 4}-{i}") for i, c in enumerate("abcd")]
    monkeypatch.setattr(nvml, "pynvml", make_fake_nvml(gpus))
    return gpus


@pytest.mark.parametrize(
    "env, expected",
    [
        (None, [0, 1, 2, 3]),
        ("2,0", [2, 0]),
        (" 3 , 1 ", [3, 1]),
        ("GPU-cccc-2,GPU-aaaa", [2, 0]),  # full UUID, then a unique prefix
        ("cccc", [2]),  # the GPU- prefix is optional
        ("1,9,2", [1]),  # CUDA stops at the first entry naming no device
        ("1,-1,2", [1]),
        ("0,0", [0]),  # a duplicate would be metered twice
        ("", []),
    ],
)
def test_visible_devices_follow_cuda_visible_devices(monkeypatch, four, env, expected):
    if env is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", env)
    assert visible_devices() == expected


def test_components_are_numbered_as_cuda_numbers_them(monkeypatch, four):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,1")
    meter = NvmlMeter(sample_interval_s=None)
    assert [(g.component, g.nvml_index, g.uuid) for g in meter.gpus] == [
        ("gpu0", 3, "GPU-dddd-3"),
        ("gpu1", 1, "GPU-bbbb-1"),
    ]


def test_mig_instances_are_refused_with_a_reason(monkeypatch, four):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-0d4a5c0e-1111")
    with pytest.raises(NVMLNotSupported, match="MIG"):
        visible_devices()


def test_no_visible_gpu_is_an_error_not_an_empty_meter(monkeypatch, four):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(NVMLNotSupported, match="no GPU is visible"):
        NvmlMeter()


def test_uuids_from_torch_pick_gpus_whatever_the_order(fake):
    meter = NvmlMeter(uuids=["bbbb2222-0000", "GPU-aaaa1111-0000"], sample_interval_s=None)
    assert [g.uuid for g in meter.gpus] == ["GPU-bbbb2222-0000", "GPU-aaaa1111-0000"]
    assert meter.gpus[0].nvml_index is None and meter.gpus[0].component == "gpu0"


# -- selection -----------------------------------------------------------------------
def test_build_meter_set_for_cuda_meters_every_visible_gpu(fake, tmp_path):
    from carbonbench.meters.select import build_meter_set

    ms = build_meter_set(torch.device("cuda"), MeasurementConfig(), powercap_root=tmp_path)
    assert isinstance(ms.meters[0], NvmlMeter)
    assert [g.component for g in ms.meters[0].gpus] == ["gpu0", "gpu1"]
    assert ms.resolution_s == pytest.approx(0.1)
    assert ms.meters[0].sample_interval_s == 0.1


def test_build_meter_set_can_meter_only_some_gpus(fake, tmp_path):
    from carbonbench.meters.select import build_meter_set

    ms = build_meter_set(torch.device("cuda:1"), MeasurementConfig(), powercap_root=tmp_path, gpu_indices=[1])
    assert [g.component for g in ms.meters[0].gpus] == ["gpu1"]
    assert ms.meters[0].gpus[0].uuid == "GPU-bbbb2222-0000"


def test_build_meter_set_without_a_driver_gives_a_null_gpu_meter_with_the_reason(monkeypatch, tmp_path):
    from carbonbench.meters.select import build_meter_set

    monkeypatch.setattr(nvml, "pynvml", make_fake_nvml([], init_error=real.NVMLError_DriverNotLoaded))
    ms = build_meter_set(torch.device("cuda"), MeasurementConfig(), powercap_root=tmp_path)
    assert isinstance(ms.meters[0], NullMeter)
    assert "driver is not loaded" in ms.describe()[0]["reason"]


def test_build_meter_set_maps_torch_devices_to_nvml_by_uuid(fake, tmp_path, monkeypatch):
    from carbonbench.meters import select

    # CUDA's fastest-first order can differ from NVML's PCI order: the UUID settles it.
    monkeypatch.setattr(select, "_torch_uuids", lambda: ["bbbb2222-0000", "aaaa1111-0000"])
    ms = select.build_meter_set(torch.device("cuda"), MeasurementConfig(), powercap_root=tmp_path)
    assert [(g.component, g.uuid) for g in ms.meters[0].gpus] == [
        ("gpu0", "GPU-bbbb2222-0000"),
        ("gpu1", "GPU-aaaa1111-0000"),
    ]


def test_torch_uuids_nvml_does_not_know_fall_back_to_cuda_visible_devices(fake, tmp_path, monkeypatch):
    from carbonbench.meters import select

    monkeypatch.setattr(select, "_torch_uuids", lambda: ["ffff0000-0000", "eeee0000-0000"])
    ms = select.build_meter_set(torch.device("cuda"), MeasurementConfig(), powercap_root=tmp_path)
    assert [(g.component, g.uuid) for g in ms.meters[0].gpus] == [
        ("gpu0", "GPU-aaaa1111-0000"),
        ("gpu1", "GPU-bbbb2222-0000"),
    ]
