"""`run --nproc-per-node`: bad flags and a missing GPU are found before torchrun starts.

Checked by torchrun, ``--nnodes abc`` was a traceback; checked by every worker,
``--device cuda`` without a GPU was found only after the workers had started, and said
once per worker. The launcher checks both itself, once, in one line with status 2.
"""

from __future__ import annotations

import pytest
import torch
from support.cli import invoke_cli

from carbonbench.distributed.launch import check_devices, check_nnodes, failure_report
from carbonbench.errors import UserError


def launch(tiny_scenario, tmp_path, *flags: str):
    return invoke_cli("run", str(tiny_scenario()), "--out", str(tmp_path / "out"), *flags)


@pytest.mark.parametrize(
    "nnodes, message",
    [
        ("abc", "--nnodes must be a number of nodes, N or MIN:MAX (got 'abc')"),
        ("1:2:3", "--nnodes must be a number of nodes, N or MIN:MAX (got '1:2:3')"),
        ("-1", "--nnodes must be a number of nodes, N or MIN:MAX (got '-1')"),
        ("0", "--nnodes must be at least 1, and MIN at most MAX (got '0')"),
        ("3:2", "--nnodes must be at least 1, and MIN at most MAX (got '3:2')"),
    ],
)
def test_a_bad_nnodes_is_one_line_before_torchrun(nnodes, message, tiny_scenario, tmp_path):
    result = launch(
        tiny_scenario, tmp_path, "--nproc-per-node", "2", "--nnodes", nnodes, "--rdzv-endpoint", "node0:29400"
    )
    assert result.exit_code == 2, result.output
    assert result.output.splitlines() == [f"Error: {message}"]
    assert not (tmp_path / "out").exists()


def test_good_nnodes_pass():
    assert check_nnodes("2") == "2" and check_nnodes(" 1:4") == "1:4"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_a_gpu_is_said_once_before_torchrun(tiny_scenario, tmp_path):
    result = launch(tiny_scenario, tmp_path, "--nproc-per-node", "2", "--device", "cuda")
    assert result.exit_code == 2, result.output
    assert result.output.splitlines() == [
        "Error: --device cuda: torch sees no CUDA GPU on this machine (use --device cpu, or auto)"
    ]
    assert "launching" not in result.output


def test_more_processes_than_gpus_is_refused(monkeypatch):
    # This machine has no GPU: torch is told it has two.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    check_devices("cuda", 2)
    check_devices("auto", 2)
    with pytest.raises(UserError, match=r"--nproc-per-node 4: this node has 2 GPU\(s\), one per process"):
        check_devices("auto", 4)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    check_devices("auto", 4)  # auto without a GPU: the CPU, any number of processes
    check_devices("cpu", 4)


def test_a_rank_stopped_by_a_signal_is_a_knock_on_not_a_cause():
    from torch.distributed.elastic.multiprocessing.errors import ProcessFailure

    code, message = failure_report(
        {
            0: ProcessFailure(local_rank=0, pid=10, exitcode=143, error_file="<N/A>"),
            1: ProcessFailure(local_rank=1, pid=11, exitcode=-9, error_file="<N/A>"),
        }
    )
    assert code == 1
    assert message.startswith(
        "distributed run failed: rank 1 (local rank 1, pid 11) was killed by SIGKILL; rank 0 was stopped (SIGTERM)"
    )
