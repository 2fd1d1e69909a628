"""Fixtures every test file may use. Plain helpers are in tests/support/ (``from support import DATA``).

Session-scoped: ``tiny_run`` (the tiny scenario measured once, with constant meters) and
``hostile_report`` (the report tests' CPU run and report). They are shared, so a test
that reads them must not change them: copy the files to ``tmp_path`` first
(``copy_run``) to change one.
"""

from __future__ import annotations

import os
import shutil
import socket
import traceback
from pathlib import Path

import pytest
from support import ROOT
from support.cli import invoke_cli as support_invoke_cli
from support.meters import constant_meters
from support.network import NetworkUsed
from support.scenarios import tiny_scenario_text

from carbonbench.hardware import HARDWARE_FILE_ENV

# Card names resolve from the repository's model/ whatever the working directory.
os.environ.setdefault("CARBONBENCH_MODEL_DIR", str(ROOT / "model"))


@pytest.fixture(autouse=True)
def no_user_hardware(monkeypatch):
    """No test reads the user's hardware file ($CARBONBENCH_HARDWARE_FILE): the table is
    the built-in one unless a test names a file itself. Subprocesses inherit this."""
    monkeypatch.delenv(HARDWARE_FILE_ENV, raising=False)


@pytest.fixture
def tiny_scenario(tmp_path):
    """A scenario over opt-tiny whose points take well under a second each: ``tiny_scenario(extra)``
    writes support.scenarios.tiny_scenario_text(extra) to tmp_path/tiny.yaml and returns the path."""

    def make(extra: str = "", codecarbon: bool = False) -> Path:
        path = tmp_path / "tiny.yaml"
        path.write_text(tiny_scenario_text(extra, codecarbon))
        return path

    return make


@pytest.fixture
def constant_meter():
    """A MeterSet of constant power (support.meters.constant_meters: CPU 20 W, DRAM 5 W, counters)."""
    return constant_meters()


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """The tiny scenario measured once on the CPU with constant meters: a runner.RunOutcome
    (``.path`` the run file, ``.run`` its record). Shared: read it, or copy_run it to change it."""
    from carbonbench import scenario as sc
    from carbonbench.runner import Runner

    root = tmp_path_factory.mktemp("tiny-run")
    path = root / "tiny.yaml"
    path.write_text(tiny_scenario_text())
    return Runner(sc.load(path), root / "out", device="cpu", meters=constant_meters()).run()


@pytest.fixture
def copy_run(tmp_path):
    """``copy_run(outcome)``: the run file and its timeline copied to tmp_path/out; returns the run file."""

    def copy(outcome) -> Path:
        out = tmp_path / "out"
        out.mkdir(exist_ok=True)
        for f in outcome.path.parent.glob(outcome.path.stem + ".*"):
            shutil.copy2(f, out / f.name)
        return out / outcome.path.name

    return copy


@pytest.fixture
def invoke_cli():
    """``invoke_cli(*args, env=None)``: ``carbonbench ARGS`` in this process (support.cli.invoke_cli),
    returning click's Result."""
    return support_invoke_cli


@pytest.fixture(scope="session")
def hostile_report(tmp_path_factory):
    """(results directory, report) of the report tests' hostile CPU run plus the H100 fixture,
    measured and rendered once: shared by test_report.py and test_report_browser.py."""
    from support.report_data import FIXTURE, make_hostile_run

    from carbonbench.report import build_report

    root = tmp_path_factory.mktemp("hostile")
    results = make_hostile_run(root / "cpu")
    return results, build_report([results, FIXTURE], root / "report.html")


@pytest.fixture
def no_network(monkeypatch):
    """Every way to reach the network refused (NetworkUsed) and recorded; returns the record.

    Socket creation is only recorded: urllib3's import-time IPv6 probe binds one to ::1."""
    calls: list[str] = []

    def refuse(name):
        def fake(*args, **kwargs):
            calls.append(f"{name}{args[1:] if name.startswith('socket.') else args}")
            raise NetworkUsed(f"carbonbench must not use the network at run time ({name})")

        return fake

    for attr in ("connect", "connect_ex", "sendto", "sendmsg"):
        monkeypatch.setattr(socket.socket, attr, refuse(f"socket.{attr}"))
    real_init = socket.socket.__init__

    def record_socket(self, family=-1, type=-1, proto=-1, fileno=None):
        # A new socket (not one wrapped from an inherited descriptor) is recorded, except
        # urllib3's import-time IPv6 probe (imported by codecarbon via requests): it binds
        # a socket to ::1 and closes it, which is no network access.
        probe = any(f.name == "_has_ipv6" and "urllib3" in f.filename for f in traceback.extract_stack())
        if fileno is None and not probe:
            calls.append(f"socket.socket(family={family}, type={type})")
        real_init(self, family, type, proto, fileno)

    monkeypatch.setattr(socket.socket, "__init__", record_socket)
    for attr in (
        "create_connection",
        "getaddrinfo",
        "gethostbyname",
        "gethostbyname_ex",
        "gethostbyaddr",
        "getnameinfo",
    ):
        monkeypatch.setattr(socket, attr, refuse(attr))
    return calls


@pytest.fixture
def hostile_codecarbon_config(tmp_path, monkeypatch):
    """Config files and variables that would change codecarbon's behaviour if read; returns
    the working directory (the current one for the test)."""
    config = "[codecarbon]\npue = 5.0\nproject_name = from-file\nmeasure_power_secs = 99\nsave_to_api = True\n"
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    (home / ".codecarbon.config").write_text(config)
    (work / ".codecarbon.config").write_text(config)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    monkeypatch.setenv("CODECARBON_PUE", "3.0")
    monkeypatch.setenv("CODECARBON_EXPERIMENT_NAME", "from-env")
    monkeypatch.setenv("CODECARBON_FORCE_CPU_POWER", "1000")
    return work
