"""`carbonbench run --nproc-per-node N`: the same run under torchrun, started from here.

The launcher is torchrun itself (``torch.distributed.run``, run in this process): it
starts N workers per node, each ``python -m carbonbench run SCENARIO ...``, with the
torchrun environment variables that ``carbonbench.distributed.context`` reads. Running
``torchrun ... -m carbonbench run SCENARIO`` by hand does exactly the same.

When a worker dies or fails, torchrun's elastic agent stops the others (SIGTERM, so
rank 0 writes its run file with every point finished so far) and raises
``ChildFailedError``; ``failure_report`` turns that into one message naming the rank.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

from carbonbench.errors import UserError

FAULT_ENV = "CARBONBENCH_FAULT"


def torchrun_args(
    nproc_per_node: int,
    nnodes: str = "1",
    node_rank: Optional[int] = None,
    rdzv_endpoint: Optional[str] = None,
    rdzv_id: Optional[str] = None,
) -> list[str]:
    """torchrun's own options for this launch.

    One node and no endpoint: ``--standalone`` (a private rendezvous on a free port).
    Several nodes: the c10d rendezvous at ``rdzv_endpoint``, joined by every node with
    the same ``rdzv_id``; with ``node_rank`` the static rendezvous instead (the endpoint
    is then rank 0's MASTER_ADDR:MASTER_PORT and every node gives its own rank).
    """
    if nproc_per_node < 1:
        raise UserError(f"--nproc-per-node must be >= 1 (got {nproc_per_node})")
    nnodes = check_nnodes(nnodes)
    args = [f"--nproc-per-node={nproc_per_node}", f"--nnodes={nnodes}", "--max-restarts=0"]
    if rdzv_endpoint is None:
        if str(nnodes) != "1":
            raise UserError("--nnodes above 1 needs --rdzv-endpoint HOST:PORT (an address of the first node)")
        if node_rank not in (None, 0):
            raise UserError("--node-rank needs --rdzv-endpoint HOST:PORT (rank 0's address)")
        return args + ["--standalone"]
    host, _, port = rdzv_endpoint.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--rdzv-endpoint must be HOST:PORT (got {rdzv_endpoint!r})")
    if node_rank is not None:
        return args + [
            "--rdzv-backend=static",
            f"--master-addr={host}",
            f"--master-port={port}",
            f"--node-rank={node_rank}",
        ]
    run_id = rdzv_id or os.environ.get("SLURM_JOB_ID") or "carbonbench"
    return args + ["--rdzv-backend=c10d", f"--rdzv-endpoint={rdzv_endpoint}", f"--rdzv-id={run_id}"]


def check_nnodes(nnodes: str) -> str:
    """torchrun's --nnodes, N or MIN:MAX, checked here: torchrun itself answers a traceback."""
    parts = str(nnodes).strip().split(":")
    if len(parts) > 2 or not all(p.isdigit() for p in parts):
        raise UserError(f"--nnodes must be a number of nodes, N or MIN:MAX (got {nnodes!r})")
    low, high = int(parts[0]), int(parts[-1])
    if low < 1 or high < low:
        raise UserError(f"--nnodes must be at least 1, and MIN at most MAX (got {nnodes!r})")
    return ":".join(parts)


def check_devices(device: str, nproc_per_node: int) -> None:
    """The device every worker will ask for, checked once before torchrun starts them
    (each worker would otherwise find it out, and say so, by itself)."""
    import torch

    if device not in ("cuda", "auto") or device == "auto" and not torch.cuda.is_available():
        return
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise UserError("--device cuda: torch sees no CUDA GPU on this machine (use --device cpu, or auto)")
    if nproc_per_node > count:
        raise UserError(
            f"--nproc-per-node {nproc_per_node}: this node has {count} GPU(s), one per process "
            "(use --nproc-per-node <= the GPUs per node)"
        )


def worker_args(
    source: Path, out_dir: Path, device: Optional[str], quick: bool, resume: bool, threads=None
) -> list[str]:
    """``carbonbench run`` arguments for each worker: the run's own options, no launcher ones."""
    args = ["run", str(source), "--out", str(out_dir)]
    if device:
        args += ["--device", device]
    if threads is not None:
        args += ["--threads", str(threads)]
    if quick:
        args.append("--quick")
    if resume:
        args.append("--resume")
    return args


def command_line(torchrun: Sequence[str], worker: Sequence[str]) -> str:
    """The equivalent shell command, for the log and for scripts."""
    return shlex.join(["torchrun", *torchrun, "-m", "carbonbench", *worker])


def launch(torchrun: Sequence[str], worker: Sequence[str], echo: Callable[[str], None]) -> int:
    """Run torchrun in this process; the exit status for the command."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    echo(f"launching: {command_line(torchrun, worker)}")
    args = parse_args([*torchrun, "-m", "carbonbench", *worker])
    try:
        run(args)
    except ChildFailedError as exc:
        code, message = failure_report(exc.failures)
        if message:
            echo(message)
        return code
    except SignalException as exc:  # Ctrl-C or SIGTERM to the launcher: the workers got it too
        echo(f"interrupted ({exc.sigval.name}): finished points are saved by rank 0")
        return 128 + int(exc.sigval)
    return 0


def failure_report(failures: dict) -> tuple[int, str]:
    """(exit status, message) for torchrun's ``{rank: ProcessFailure}``.

    Workers that exited 1 (some point failed) or 2 (bad input) without an error file have
    already said why; their status passes through. Anything else, a signal, a crash or a
    collective that failed, is named by rank, the cause first: a rank killed or crashed
    outright before the ranks that only saw their collectives fail because of it.
    """
    if all(f.exitcode in (1, 2) and not _message(f) for f in failures.values()):
        return max(f.exitcode for f in failures.values()), ""
    causes, knock_on = [], []
    for rank in sorted(failures):
        f = failures[rank]
        msg = _message(f)
        where = f"rank {rank} (local rank {f.local_rank}, pid {f.pid})"
        if f.exitcode < 0:
            causes.append(f"{where} was killed by {f.signal_name()}")
        elif msg.startswith("DistributedFailure:"):
            knock_on.append(msg.removeprefix("DistributedFailure:").strip())
        elif msg.startswith("Interrupted:"):  # stopped by torchrun after another rank failed
            knock_on.append(f"rank {rank} was stopped ({msg.removeprefix('Interrupted:').strip()})")
        elif not msg and f.exitcode in (128 + signal.SIGINT, 128 + signal.SIGTERM):
            # Interrupted is no Exception, so torchrun's recorder writes no error file for it.
            knock_on.append(f"rank {rank} was stopped ({signal.Signals(f.exitcode - 128).name})")
        elif msg:
            causes.append(f"{where} failed: {msg}")
        else:
            causes.append(f"{where} exited with status {f.exitcode}")
    text = "; ".join(causes + knock_on)
    return 1, f"distributed run failed: {text}. Points finished before the failure are kept in rank 0's run file."


def _message(failure) -> str:
    msg = failure.message
    if isinstance(msg, dict):
        msg = msg.get("message", "")
    if not isinstance(msg, str) or msg.startswith("To enable traceback") or "<NONE>" in msg:
        return ""
    return msg.strip().splitlines()[0] if msg.strip() else ""


def maybe_inject_fault(rank: int, label: str, environ=os.environ) -> None:
    """Test hook: ``CARBONBENCH_FAULT=RANK:ACTION:TEXT`` makes rank RANK, at the first
    window whose label contains TEXT, ``kill`` itself (SIGKILL), ``exit`` (status 3) or
    ``hang`` (sleep until stopped). Used by tests/test_distributed.py only."""
    spec = environ.get(FAULT_ENV)
    if not spec:
        return
    want_rank, action, text = spec.split(":", 2)
    if int(want_rank) != rank or text not in label:
        return
    sys.stderr.write(f"[carbonbench] fault injected: rank {rank} will {action} at {label}\n")
    sys.stderr.flush()
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "exit":
        os._exit(3)
    elif action == "hang":
        while True:
            time.sleep(3600)
    else:
        raise ValueError(f"{FAULT_ENV}: unknown action {action!r} (kill, exit or hang)")
