"""carbonbench.measure: one window around any code, as a context manager or a decorator.

The CPU meters are the real ones (this machine has no readable RAPL, so they estimate);
the GPU path runs on the fake NVML of test_meters_nvml, installed at its import site,
with torch.cuda's availability and synchronize standing in for the GPU this machine lacks.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time

import pytest
import torch
from support.fake_nvml import FakeGpu, make_fake_nvml

import carbonbench
from carbonbench import grid
from carbonbench.api import window as api_window
from carbonbench.api.settings import Settings
from carbonbench.errors import ConfigError, UserError
from carbonbench.meters import nvml, select

METHODS = {"counter", "integrated", "estimated", "none"}


def busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        sum(i * i for i in range(1000))


def test_import_carbonbench_does_not_import_torch_until_measure_is_used():
    code = (
        "import sys, carbonbench; assert 'torch' not in sys.modules, 'import carbonbench loaded torch'; "
        "assert 'measure' in dir(carbonbench); carbonbench.measure; assert 'torch' in sys.modules; "
        "print(carbonbench.measure.__module__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "carbonbench.api.window"
    with pytest.raises(AttributeError):
        carbonbench.no_such_thing  # noqa: B018


def test_a_window_on_the_cpu_says_what_it_measured_and_how():
    with carbonbench.measure("step", device="cpu", country="FRA") as m:
        busy(0.2)
    r = m.result
    assert dataclasses.is_dataclass(r) and r.status == "ok" and r.error is None
    assert r.duration_s == pytest.approx(0.2, abs=0.1)
    # No readable RAPL here: the CPU and DRAM are estimated, and the total says so.
    assert set(r.components) == {"cpu", "dram"}
    assert {c.method for c in r.components.values()} == {"estimated"} and r.method == "estimated"
    assert r.energy_j == pytest.approx(sum(c.energy_j for c in r.components.values()))
    assert r.power_w == pytest.approx(r.energy_j / r.duration_s)
    fra = grid.country_intensity("FRA")
    assert (r.grid_g_per_kwh, r.grid_source) == (fra.g_per_kwh, fra.source)
    assert r.co2e_g == pytest.approx(r.energy_j / 3.6e6 * fra.g_per_kwh)
    assert r.usd == pytest.approx(r.energy_j / 3.6e6 * 0.15)
    assert r.tokens is None and r.joules_per_token is None
    # The handle reads through to the frozen result.
    assert (m.energy_j, m.method, m.co2e_g, m.usd, m.components) == (
        r.energy_j,
        r.method,
        r.co2e_g,
        r.usd,
        r.components,
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.energy_j = 0.0
    assert r.as_dict()["components"]["cpu"]["method"] == "estimated"


def test_pue_grid_price_and_tokens_scale_the_derived_figures():
    with carbonbench.measure(
        "step", device="cpu", grid_g_per_kwh=500.0, pue=1.5, usd_per_kwh=0.3, usd_per_device_hour=3.6, tokens=1000
    ) as m:
        busy(0.1)
    facility_kwh = m.energy_j / 3.6e6 * 1.5
    assert m.co2e_g == pytest.approx(facility_kwh * 500.0)
    assert m.usd == pytest.approx(facility_kwh * 0.3 + m.duration_s / 3600 * 3.6)
    assert m.joules_per_token == pytest.approx(m.energy_j / 1000)
    assert m.result.pue == 1.5 and "given explicitly" in m.grid_source


def test_figures_are_not_there_while_the_window_is_open():
    with carbonbench.measure("step", device="cpu") as m:
        with pytest.raises(RuntimeError, match="has not closed yet"):
            m.energy_j  # noqa: B018
    assert m.energy_j is not None


def test_windows_nest_and_the_inner_lies_within_the_outer():
    with carbonbench.measure("outer", device="cpu") as outer:
        busy(0.05)
        with carbonbench.measure("inner", device="cpu") as inner:
            busy(0.1)
        busy(0.05)
    o, i = outer.result, inner.result
    assert o.start_unix_s <= i.start_unix_s
    assert i.start_unix_s + i.duration_s <= o.start_unix_s + o.duration_s + 1e-3
    assert o.duration_s > i.duration_s + 0.09
    # DRAM is a constant power here, so its energy follows the time: outer > inner.
    assert o.components["dram"].energy_j > i.components["dram"].energy_j
    # The same name twice at once is fine too (each window has its own label).
    with carbonbench.measure("same", device="cpu") as a, carbonbench.measure("same", device="cpu") as b:
        busy(0.02)
    assert a.status == b.status == "ok"


def test_the_decorator_measures_every_call_and_keeps_the_latest():
    calls = []

    @carbonbench.measure("forward", device="cpu", tokens=64)
    def forward(x, *, scale=1):
        """Docstring kept."""
        calls.append(x)
        busy(0.02)
        return x * scale

    assert forward.last is None
    assert forward(3, scale=2) == 6
    first = forward.last
    assert forward(4) == 4
    assert forward.last is not first and forward.last.status == "ok" and forward.last.tokens == 64
    assert forward.__name__ == "forward" and forward.__doc__ == "Docstring kept."
    assert calls == [3, 4]


def test_an_exception_propagates_and_its_window_is_still_measured():
    m = carbonbench.measure("broken", device="cpu")
    with pytest.raises(ValueError, match="boom"):
        with m:
            busy(0.05)
            raise ValueError("boom")
    assert m.status == "error" and m.error == "ValueError: boom"
    assert m.energy_j > 0 and m.method == "estimated" and m.duration_s >= 0.05

    @carbonbench.measure("broken-fn", device="cpu")
    def fails():
        raise KeyError("k")

    with pytest.raises(KeyError):
        fails()
    assert fails.last.status == "error" and fails.last.energy_j is not None

    with pytest.raises(KeyboardInterrupt):
        with carbonbench.measure("ctrl-c", device="cpu") as c:
            raise KeyboardInterrupt
    assert c.status == "interrupted" and c.energy_j is not None


def test_a_window_object_can_be_reused_but_not_reentered():
    m = carbonbench.measure("again", device="cpu")
    with m:
        pass
    first = m.result
    with m:
        with pytest.raises(RuntimeError, match="already open"):
            m.__enter__()
    assert m.result is not first


def test_bad_settings_are_one_user_error_naming_the_setting():
    with pytest.raises(ConfigError, match="country"):
        carbonbench.measure("x", country="XXX")
    with pytest.raises(ConfigError, match="pue"):
        carbonbench.measure("x", pue=0.5)
    with pytest.raises(UserError, match="unknown device 'tpu'"):
        carbonbench.measure("x", device="tpu")
    with pytest.raises(UserError, match="non-empty name"):
        carbonbench.measure("")
    with pytest.raises(UserError, match="tokens"):
        carbonbench.measure("x", tokens=-1)


def test_cuda_without_a_gpu_is_a_null_gpu_meter_not_a_guess(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with carbonbench.measure("step", device="cuda") as m:
        busy(0.02)
    gpu = m.components["gpu"]
    assert (gpu.kind, gpu.energy_j, gpu.method, gpu.meter) == ("gpu", None, "none", "null-gpu")
    # The total is what was measured (the CPU's estimate), and is labelled by it.
    assert m.method == "estimated" and m.energy_j == pytest.approx(
        m.components["cpu"].energy_j + m.components["dram"].energy_j
    )


@pytest.fixture
def fake_gpus(monkeypatch):
    """Two fake GPUs behind NVML, and torch.cuda pretending they are there."""
    gpus = [FakeGpu("GPU-aaaa1111-0000", power_w=300.0), FakeGpu("GPU-bbbb2222-0000", power_w=100.0)]
    monkeypatch.setattr(nvml, "pynvml", make_fake_nvml(gpus))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(select, "_torch_uuids", lambda: None)  # no real CUDA to ask: NVML's order
    synced = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: synced.append((time.time(), device)))
    return gpus, synced


def test_on_cuda_the_gpus_are_counted_and_synchronised_at_both_edges(fake_gpus):
    gpus, synced = fake_gpus
    with carbonbench.measure("step", device="cuda") as m:
        assert len(synced) == 2  # both GPUs, before the opening read
        time.sleep(0.3)
    assert [d for _, d in synced] == [0, 1, 0, 1]  # and again before the closing read
    assert synced[2][0] - synced[0][0] >= 0.3
    assert m.components["gpu0"].method == m.components["gpu1"].method == "counter"
    assert m.components["gpu0"].energy_j == pytest.approx(300.0 * m.duration_s, rel=0.05)
    assert m.components["gpu1"].energy_j == pytest.approx(100.0 * m.duration_s, rel=0.05)
    assert m.method == "estimated"  # the CPU's share is an estimate here, so the total is one


def test_meters_that_fail_mid_window_give_no_energy_and_the_code_still_runs(fake_gpus):
    gpus, _ = fake_gpus
    with pytest.warns(UserWarning, match="recorded without energy"):
        with carbonbench.measure("step", device="cuda") as m:
            gpus[0].lost = True  # the GPU falls off the bus mid-window
    assert m.status == "meter-error" and "GPU" in m.error
    assert (m.energy_j, m.method, m.co2e_g, m.usd, m.power_w) == (None, "none", None, None, None)
    assert m.components == {} and m.duration_s >= 0


def test_the_process_wide_meters_close_with_the_last_window():
    settings = Settings.make("cpu")
    key = (str(settings.device), settings.measurement)
    with carbonbench.measure("outer", device="cpu"):
        with carbonbench.measure("inner", device="cpu"):
            assert api_window.SHARED._sets[key][1] == 2  # one set of meters for both
        assert api_window.SHARED._sets[key][1] == 1
    assert key not in api_window.SHARED._sets
