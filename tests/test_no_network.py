"""Offline by construction: a CPU run, codecarbon included, opens no network connection.

Every way a library could reach the network (creating a socket, connect, create_connection,
name lookups, sending datagrams) is replaced, for the length of the run, by a recorder
(that refuses, except socket creation, which it only records): the ``no_network``
fixture of tests/conftest.py.
"""

from __future__ import annotations

import json
import socket

import pytest
from support.network import NetworkUsed

from carbonbench import scenario as sc
from carbonbench.runner import Runner


def test_a_cpu_run_with_codecarbon_opens_no_socket(tiny_scenario, tmp_path, no_network):
    path = tiny_scenario(codecarbon=True)
    scenario = sc.load(path)
    scenario = scenario.replace(workloads=scenario.workloads.__class__(prefill=scenario.workloads.prefill))
    outcome = Runner(scenario, tmp_path / "out", device="cpu").run()
    assert no_network == []
    run = json.loads(outcome.path.read_text())
    assert run["status"] == "complete"
    assert all(p["status"] == "ok" for p in run["points"])
    # codecarbon really ran (offline tracker), so the test covers it.
    assert run["codecarbon_meter"]["enabled"] is True
    assert run["codecarbon_meter"]["tracker"] == "OfflineEmissionsTracker"
    assert run["codecarbon_meter"]["errors"] == [], run["codecarbon_meter"]
    assert run["codecarbon"] is not None and run["codecarbon"]["energy_j"] >= 0  # its whole-run totals
    assert not any(
        "NetworkUsed" in line or "must not use the network" in line
        for line in run["codecarbon_meter"]["log"] + run.get("warnings", [])
    )


def test_the_recorder_catches_a_connection(no_network):
    """The patch works: a library that tried to connect would be seen."""
    with pytest.raises(NetworkUsed):
        socket.create_connection(("example.org", 443), timeout=0.1)
    with pytest.raises(NetworkUsed):
        socket.socket().connect(("127.0.0.1", 9))
    assert no_network[0].startswith("create_connection") and no_network[-1].startswith("socket.connect")
