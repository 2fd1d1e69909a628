"""Ctrl-C and SIGTERM as one exception that no library can swallow (carbonbench.interrupts).

A SIGTERM in the warm-up used to be lost: torch.compile caught the old Exception-derived
``Interrupted`` (inductor's vector-ISA probe: ``except Exception: return False``) and the
run completed with status 0. These tests send real signals to this process.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from carbonbench import scenario as sc
from carbonbench.interrupts import Interrupted, deferred, interrupts, pending, phase
from carbonbench.runner import Runner
from carbonbench.workloads import Prefill


def kill_self(signum=signal.SIGTERM) -> None:
    os.kill(os.getpid(), signum)
    time.sleep(1)  # the handler runs here, on the main thread


def test_both_signals_raise_interrupted_with_their_exit_status_and_handlers_come_back():
    before = signal.getsignal(signal.SIGTERM)
    for signum, code in ((signal.SIGINT, 130), (signal.SIGTERM, 143)):
        with pytest.raises(Interrupted) as info:
            with interrupts():
                kill_self(signum)
        assert info.value.exit_code == code
    with pytest.raises(Interrupted) as info:
        with interrupts():
            raise KeyboardInterrupt  # what a test hook or a library raises for Ctrl-C
    assert info.value.exit_code == 130
    assert signal.getsignal(signal.SIGTERM) is before


def test_except_exception_cannot_swallow_it():
    with pytest.raises(Interrupted):
        with interrupts():
            try:
                kill_self()
            except Exception:  # what torch.compile does around its probes and tracing
                pass


def test_inductors_isa_probe_no_longer_swallows_it(monkeypatch):
    """The very code that lost the signal: a SIGTERM while inductor builds its probe."""
    from torch._inductor import cpp_builder, cpu_vec_isa

    monkeypatch.setattr(cpp_builder.CppBuilder, "build", lambda self: kill_self())
    monkeypatch.setattr(cpp_builder.CppBuilder, "get_target_file_path", lambda self: "/nonexistent/probe.so")
    isa = cpu_vec_isa.VecAVX2()
    with pytest.raises(Interrupted):
        with interrupts():
            isa.check_build(cpu_vec_isa.VecISA._avx_code)


def test_a_signal_swallowed_anyway_is_raised_at_the_next_phase(tiny_scenario, tmp_path, monkeypatch):
    """Even ``except BaseException: pass`` in a warm-up step only delays the stop to the next phase."""
    real = Prefill.step

    def swallowing_step(self):
        try:
            kill_self()
        except BaseException:
            pass
        return real(self)

    monkeypatch.setattr(Prefill, "step", swallowing_step)
    runner = Runner(sc.load(tiny_scenario()), tmp_path / "out")
    with pytest.raises(Interrupted) as info:
        runner.run()
    assert info.value.exit_code == 143
    run = runner.run_file.record
    assert run.status == "interrupted" and run.points == []  # not an "error" point: the run stopped


def test_deferred_holds_a_signal_to_its_end_unless_an_error_is_on_its_way_out():
    with interrupts():
        with pytest.raises(Interrupted):
            with deferred():
                kill_self()
                assert pending() == signal.SIGTERM  # noted, not raised: the block finishes
                phase("closing")  # no raise inside either
    with pytest.raises(ValueError):
        with interrupts():
            with deferred():
                kill_self()
                raise ValueError("already failing")  # not replaced by the signal


def test_the_pause_hook_waits_for_a_signal_at_its_phase(monkeypatch, capsys):
    monkeypatch.setenv("CARBONBENCH_PAUSE_AT", "test-phase")
    timer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT))
    with pytest.raises(Interrupted) as info:
        with interrupts():
            phase("another-phase")  # not this one: goes on
            timer.start()
            phase("test-phase")
    assert info.value.exit_code == 130
    assert capsys.readouterr().err == "carbonbench: paused at test-phase\n"


def test_outside_the_main_thread_nothing_is_installed():
    seen = []

    def worker():
        with interrupts():
            seen.append(signal.getsignal(signal.SIGTERM))

    before = signal.getsignal(signal.SIGTERM)
    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == [before]


def test_a_handler_a_library_put_in_place_is_replaced_at_the_next_phase():
    with pytest.raises(Interrupted) as info:
        with interrupts():
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # as a compiler or launcher might
            phase("model-build")
            kill_self()
    assert info.value.exit_code == 143
