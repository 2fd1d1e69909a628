"""The background sampler: integration, start/stop, and clean shutdown when reads fail."""

import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carbonbench.errors import MeterError
from carbonbench.meters.sampler import Sampler, SamplerError, integrate


# -- integration -------------------------------------------------------------------
def test_integrate_constant_power_over_window():
    assert integrate([0.0, 1.0, 2.0, 3.0], [50.0] * 4, 0.5, 2.5) == pytest.approx(100.0)


def test_integrate_ramp_is_exact_with_interpolated_edges():
    times = [0.0, 1.0, 2.0, 3.0, 4.0]
    powers = [0.0, 10.0, 20.0, 30.0, 40.0]  # p(t) = 10 t
    # integral of 10 t from 0.5 to 3.25 = 5 (3.25^2 - 0.5^2)
    assert integrate(times, powers, 0.5, 3.25) == pytest.approx(5 * (3.25**2 - 0.5**2))


def test_integrate_clips_samples_outside_the_window():
    times = [0.0, 1.0, 2.0, 3.0]
    powers = [1000.0, 10.0, 10.0, 1000.0]
    # Between 1 and 2 the power is 10 W flat: the 1000 W samples are outside.
    assert integrate(times, powers, 1.0, 2.0) == pytest.approx(10.0)


def test_integrate_holds_the_nearest_sample_past_the_series_ends():
    assert integrate([1.0, 2.0], [10.0, 10.0], 0.8, 2.3, max_gap_s=0.5) == pytest.approx(15.0)


def test_integrate_refuses_to_guess_across_long_gaps_or_from_nothing():
    assert integrate([], [], 0.0, 1.0) is None
    assert integrate([5.0], [10.0], 0.0, 1.0, max_gap_s=1.0) is None
    assert integrate([0.0, 1.0], [1.0, 1.0], 0.0, 9.0, max_gap_s=1.0) is None


def test_integrate_empty_window_is_zero_and_reversed_window_is_an_error():
    assert integrate([0.0, 1.0], [5.0, 5.0], 0.5, 0.5) == 0.0
    with pytest.raises(ValueError):
        integrate([0.0, 1.0], [5.0, 5.0], 0.7, 0.5)


@given(
    power=st.floats(min_value=0, max_value=1000),
    start=st.floats(min_value=0, max_value=10),
    length=st.floats(min_value=0, max_value=10),
    n=st.integers(min_value=1, max_value=30),
)
def test_integral_of_constant_power_is_power_times_duration(power, start, length, n):
    times = [start + length * i / n for i in range(n + 1)]
    assert integrate(times, [power] * len(times), start, start + length) == pytest.approx(power * length, abs=1e-6)


# -- the thread --------------------------------------------------------------------
def _row(power=1.0):
    return [{"unix_s": time.time(), "component": "x", "power_w": power}]


def _wait_for(predicate, timeout_s=2.0):
    deadline = time.monotonic() + timeout_s
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.005)
    return predicate()


def test_sampler_samples_at_its_interval_and_stops_cleanly():
    s = Sampler(_row, 0.01, "t")
    s.start()
    assert _wait_for(lambda: len(s.rows()) >= 5)
    s.stop()
    assert not s.running
    n = len(s.rows())
    time.sleep(0.05)
    assert len(s.rows()) == n  # nothing after stop
    s.stop()  # twice is fine
    stats = s.stats()
    assert stats["reads"] >= 5 and stats["mean_read_s"] is not None and stats["errors"] == []


def test_sampler_restarts_after_stop():
    s = Sampler(_row, 0.01, "t")
    s.start()
    s.stop()
    before = len(s.rows())
    s.start()
    assert _wait_for(lambda: len(s.rows()) > before)
    s.stop()


def test_sampler_thread_is_a_daemon_named_for_its_meter():
    s = Sampler(_row, 0.01, "gpu-meter")
    s.start()
    threads = [t for t in threading.enumerate() if t.name == "carbonbench-sampler-gpu-meter"]
    s.stop()
    assert threads and all(t.daemon for t in threads)


class Fatal(MeterError):
    fatal = True


def test_a_fatal_read_error_ends_the_thread_and_stop_reraises_it():
    calls = []

    def read():
        calls.append(1)
        raise Fatal("the device is gone")

    s = Sampler(read, 0.01, "t")
    s.start()
    assert _wait_for(lambda: not s.running)
    assert len(calls) == 1  # fatal: no retries
    with pytest.raises(SamplerError, match="the device is gone") as info:
        s.stop()
    assert isinstance(info.value.__cause__, Fatal)
    s.stop()  # the error was reported once; a second stop is quiet


def test_transient_errors_are_recorded_and_sampling_goes_on():
    state = {"n": 0}

    def read():
        state["n"] += 1
        if state["n"] <= 2:
            raise OSError("hiccup")
        return _row()

    s = Sampler(read, 0.005, "t", max_consecutive_errors=3)
    s.start()
    assert _wait_for(lambda: len(s.rows()) >= 3)
    assert s.running
    s.stop()
    assert s.stats()["errors"] == ["OSError: hiccup", "OSError: hiccup"]


def test_repeated_transient_errors_stop_the_thread():
    def read():
        raise OSError("always")

    s = Sampler(read, 0.005, "t", max_consecutive_errors=3)
    s.start()
    assert _wait_for(lambda: not s.running)
    with pytest.raises(SamplerError, match="always"):
        s.stop()


def test_a_read_stuck_in_the_driver_makes_stop_time_out_with_an_error():
    release = threading.Event()

    def read():
        release.wait(5)
        return _row()

    s = Sampler(read, 0.01, "t")
    s.start()
    time.sleep(0.02)
    with pytest.raises(SamplerError, match="did not stop"):
        s.stop(timeout_s=0.05)
    release.set()


def test_edge_samples_that_race_the_thread_keep_the_series_sorted():
    s = Sampler(_row, 1.0, "t")
    s.add([{"unix_s": 10.0, "component": "x", "power_w": 10.0}, {"unix_s": 12.0, "component": "x", "power_w": 10.0}])
    s.add([{"unix_s": 11.0, "component": "x", "power_w": 40.0}])  # arrives late
    assert [r["unix_s"] for r in s.rows()] == [10.0, 11.0, 12.0]
    assert s.integrate("x", 10.0, 12.0) == pytest.approx(50.0)  # two triangles' worth of 25 J
    assert s.integrate("other", 10.0, 12.0) is None


def test_rows_without_power_are_kept_but_not_integrated():
    s = Sampler(_row, 1.0, "t")
    s.add([{"unix_s": 1.0, "component": "x", "power_w": None, "temperature_c": 40}])
    assert s.rows()[0]["temperature_c"] == 40
    assert s.integrate("x", 0.5, 1.5) is None


def test_interval_must_be_positive():
    with pytest.raises(ValueError):
        Sampler(_row, 0, "t")
