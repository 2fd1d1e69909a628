"""Who this process is in a torchrun job, and the few collectives the runner needs.

torchrun (``torch.distributed.run``) starts one process per device and tells each who
it is in environment variables: ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``LOCAL_WORLD_SIZE`` and ``GROUP_RANK`` (the node's index). ``init_from_env`` turns them
into a ``DistContext``: the process group (NCCL on CUDA, gloo on the CPU) with a bounded
timeout, this rank's device, and the job's topology.

A run on one process gets ``Single`` instead, a null object whose collectives do
nothing; both keep the ``Job`` protocol, so the runner has no ``if distributed:`` branches.
"""

from __future__ import annotations

import os
import pickle
import socket
import time
from dataclasses import asdict
from datetime import timedelta
from typing import Any, Optional, Protocol, Sequence

import torch

from carbonbench.distributed import aggregate
from carbonbench.distributed.launch import maybe_inject_fault
from carbonbench.distributed.ranks import RankInfo, topology
from carbonbench.errors import UserError
from carbonbench.meters.base import Measurement, MeterSet
from carbonbench.records import PointRecord
from carbonbench.run_record import RunRecord

ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
DEFAULT_TIMEOUT_S = 300.0
# Kinds of meter that read the whole node (package counters, machine-wide utilisation,
# installed memory): only one rank per node may keep them.
NODE_KINDS = ("cpu", "dram", "cpu+dram", "host")


class DistributedFailure(RuntimeError):
    """A collective failed or timed out: the process group is gone, so the run ends."""


def launched_by_torchrun(environ=os.environ) -> bool:
    """True inside a process that torchrun (or Slurm + torchrun) started."""
    return all(k in environ for k in ENV_VARS)


class Job(Protocol):
    """What the runner needs of the processes it runs in: one (``Single``) or a torchrun
    job (``DistContext``). Collectives must be called by every rank in the same order."""

    distributed: bool
    device: torch.device
    rank: int
    world_size: int
    is_writer: bool  # writes the run file (rank 0)
    node_leader: bool  # meters this host's CPU and DRAM
    spools_per_window: bool  # timeline drains are cheap enough for every window (no collective)

    def gpu_indices(self) -> Optional[list[int]]: ...
    def fingerprint_device(self, device_name: str) -> str: ...
    def annotate(self, run: RunRecord) -> None: ...
    def annotate_meters(self, run: RunRecord) -> None: ...
    def describe_layout(self, layout: Any, batch_size: int) -> Optional[dict]: ...
    def filter_meters(self, meters: MeterSet) -> MeterSet: ...
    def barrier(self) -> None: ...
    def all_done(self, done: bool) -> bool: ...
    def broadcast(self, obj: Any) -> Any: ...
    def all_gather(self, obj: Any) -> list[Any]: ...
    def drain_timeline(self, meters: MeterSet) -> list[dict]: ...
    def combine(self, meas: Measurement, extra: Optional[dict] = None) -> tuple[Measurement, Optional[dict]]: ...
    def agree(self, record: PointRecord) -> PointRecord: ...
    def mark(self, label: str) -> None: ...
    def close(self) -> None: ...


class Single:
    """The null job: one process on ``device``, no collectives, nothing renamed."""

    distributed = False
    rank = 0
    world_size = 1
    local_rank = 0
    nnodes = 1
    is_writer = True
    node_leader = True
    spools_per_window = True
    ranks: tuple[RankInfo, ...] = ()
    timeout_s = DEFAULT_TIMEOUT_S

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)

    def gpu_indices(self) -> Optional[list[int]]:
        return None  # every GPU CUDA can see: each draws power whether or not this run uses it

    def fingerprint_device(self, device_name: str) -> str:
        return f"{self.device.type}:{device_name}"

    def annotate(self, run: RunRecord) -> None:
        pass

    def annotate_meters(self, run: RunRecord) -> None:
        pass

    def describe_layout(self, layout: Any, batch_size: int) -> Optional[dict]:
        return None

    def filter_meters(self, meters: MeterSet) -> MeterSet:
        return meters

    def barrier(self) -> None:
        pass

    def all_done(self, done: bool) -> bool:
        return done

    def broadcast(self, obj: Any) -> Any:
        return obj

    def all_gather(self, obj: Any) -> list[Any]:
        return [obj]

    def drain_timeline(self, meters: MeterSet) -> list[dict]:
        return meters.drain_timeline()

    def combine(self, meas: Measurement, extra: Optional[dict] = None) -> tuple[Measurement, Optional[dict]]:
        return meas, None

    def agree(self, record: PointRecord) -> PointRecord:
        return record

    def mark(self, label: str) -> None:
        pass

    def nodes(self) -> list[dict]:
        return []

    def describe(self) -> Optional[dict]:
        return None

    def close(self) -> None:
        pass


class DistContext:
    """This rank's view of a torch.distributed job started by torchrun."""

    distributed = True
    # A drain is a collective: once per point, when it is recorded, keeps the ranks'
    # sequence of collectives short and the same.
    spools_per_window = False

    def __init__(
        self,
        rank: int,
        world_size: int,
        local_rank: int,
        local_world_size: int,
        device: torch.device,
        backend: str,
        timeout_s: float,
        ranks: Sequence[RankInfo],
    ):
        self.rank, self.world_size = rank, world_size
        self.local_rank, self.local_world_size = local_rank, local_world_size
        self.device, self.backend, self.timeout_s = device, backend, timeout_s
        self.ranks = tuple(ranks)
        self.me = self.ranks[rank]
        self._meshes: dict[tuple, Any] = {}
        self._store = None

    # -- who is who ---------------------------------------------------------------------
    @property
    def is_writer(self) -> bool:
        """Rank 0 alone writes the run file."""
        return self.rank == 0

    @property
    def node_leader(self) -> bool:
        return self.me.node_leader

    @property
    def nnodes(self) -> int:
        return len({r.node for r in self.ranks})

    def nodes(self) -> list[dict]:
        out: dict[int, dict] = {}
        for r in self.ranks:
            node = out.setdefault(r.node, {"node": r.node, "hostname": r.hostname, "ranks": [], "devices": []})
            node["ranks"].append(r.rank)
            node["devices"].append(r.device)
        return [out[k] for k in sorted(out)]

    def gpu_indices(self) -> Optional[list[int]]:
        """A rank meters the GPU it drives, no other."""
        return [self.device.index] if self.device.type == "cuda" else None

    def fingerprint_device(self, device_name: str) -> str:
        return f"{self.device.type}:{device_name} x{self.world_size}"

    def annotate(self, run: RunRecord) -> None:
        """The job's shape, in a new run record."""
        run.world_size = self.world_size
        run.nodes = self.nodes()
        run.distributed = self.describe()
        if self.nnodes > 1 and (run.scenario.get("measurement") or {}).get("codecarbon", True):
            run.warnings.append("codecarbon runs on rank 0 only: its figures cover node 0, not the whole job")

    def annotate_meters(self, run: RunRecord) -> None:
        """Every rank's meters (a collective)."""
        run.distributed = {**(run.distributed or self.describe()), "meters_by_rank": self.all_gather(run.meters)}

    def describe_layout(self, layout: Any, batch_size: int) -> Optional[dict]:
        """How a point spread over the ranks (carbonbench.distributed.parallel.Layout)."""
        return {**layout.as_dict(), "global_batch_size": batch_size * layout.dp}

    def describe(self) -> dict:
        return {
            "world_size": self.world_size,
            "nnodes": self.nnodes,
            "backend": self.backend,
            "timeout_s": self.timeout_s,
            "launcher": "torchrun",
            "rdzv_run_id": os.environ.get("TORCHELASTIC_RUN_ID"),
            "ranks": [asdict(r) for r in self.ranks],
        }

    def mesh(self, shape: tuple[int, ...], names: tuple[str, ...]):
        """A DeviceMesh over every rank (created once per shape: it is a collective)."""
        from torch.distributed.device_mesh import init_device_mesh

        key = (shape, names)
        if key not in self._meshes:
            self._meshes[key] = init_device_mesh(self.device.type, shape, mesh_dim_names=names)
        return self._meshes[key]

    # -- metering -----------------------------------------------------------------------
    def filter_meters(self, meters: MeterSet) -> MeterSet:
        """Keep node-wide meters (CPU, DRAM) on the node leader only, so each is counted once."""
        if self.node_leader:
            return meters
        kept = [m for m in meters.meters if _meter_kind(m) not in NODE_KINDS]
        for m in meters.meters:
            if m not in kept:
                m.close()
        return MeterSet(kept, sync=meters.sync)

    def combine(self, meas: Measurement, extra: Optional[dict] = None) -> tuple[Measurement, Optional[dict]]:
        """Every rank's window, summed into one on rank 0 (other ranks get theirs back)."""
        gathered = self._all_gather((meas, extra or {}))
        return aggregate.combine([g[0] for g in gathered], self.ranks, [g[1] for g in gathered])

    def agree(self, record: PointRecord) -> PointRecord:
        """A point failed if it failed on any rank; the first failing rank's error is kept."""
        mine = {"status": record.status, "error": record.error, "peak_memory_bytes": record.peak_memory_bytes}
        return aggregate.agree(record, self._all_gather(mine))

    # -- collectives --------------------------------------------------------------------
    def barrier(self) -> None:
        self._collective(torch.distributed.barrier)

    def all_done(self, done: bool) -> bool:
        """True once every rank is done: ranks stop a time-bounded loop at the same step."""
        flag = torch.tensor([1 if done else 0], dtype=torch.int32, device=self.device)
        self._collective(torch.distributed.all_reduce, flag, op=torch.distributed.ReduceOp.MIN)
        return bool(flag.item())

    def all_gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order."""
        return self._all_gather(obj)

    def drain_timeline(self, meters: MeterSet) -> list[dict]:
        """Every rank's power samples since the last call, components renamed as in
        ``combine``, time-ordered; each rank's meters forget them (see MeterSet.drain_timeline)."""
        gathered = self._all_gather(meters.drain_timeline())
        rows = [row for info, mine in zip(self.ranks, gathered) for row in aggregate.rename_timeline(mine, info)]
        return sorted(rows, key=lambda r: r["unix_s"])

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        box = [obj]
        self._collective(torch.distributed.broadcast_object_list, box, src=0)
        return box[0]

    def _all_gather(self, obj: Any) -> list[Any]:
        out: list[Any] = [None] * self.world_size
        self._collective(torch.distributed.all_gather_object, out, obj)
        return out

    def _collective(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (RuntimeError, pickle.UnpicklingError) as exc:  # DistError is a RuntimeError
            raise DistributedFailure(self._failure_message(exc)) from exc

    # -- naming the rank that hangs -----------------------------------------------------
    def mark(self, label: str) -> None:
        """Note where this rank is (a window's label), for the message if a peer hangs."""
        store = self._get_store()
        if store is not None:
            try:
                store.set(f"carbonbench/at/{self.rank}", f"{time.time():.3f} {label}")
            except RuntimeError:  # a message aid only: never fail the run over it
                pass
        maybe_inject_fault(self.rank, label)

    def _failure_message(self, exc: BaseException) -> str:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return f"rank {self.rank}: a collective failed ({type(exc).__name__}: {first}){self._silent_ranks()}"

    def _silent_ranks(self) -> str:
        """Ranks that did not also report a failure: a hung rank is silent, a waiting one times out too."""
        store = self._get_store()
        if store is None:
            return ""
        try:
            store.set(f"carbonbench/failed/{self.rank}", "1")
            deadline = time.monotonic() + min(5.0, max(self.timeout_s / 4, 1.0))
            silent = list(range(self.world_size))
            while silent and time.monotonic() < deadline:
                silent = [r for r in silent if not store.check([f"carbonbench/failed/{r}"])]
                time.sleep(0.2)
            if not silent:
                return ""
            where = []
            for r in silent:
                key = f"carbonbench/at/{r}"
                if store.check([key]):
                    t, _, label = store.get(key).decode().partition(" ")
                    where.append(f"rank {r} (last at {label}, {time.time() - float(t):.0f} s ago)")
                else:
                    where.append(f"rank {r}")
            return "; not responding: " + ", ".join(where)
        except (RuntimeError, ValueError):  # the store went with the job: no names, same failure
            return ""

    def _get_store(self):
        if self._store is None:
            try:  # the rendezvous store torchrun set up (a private accessor, hence the guard)
                self._store = torch.distributed.distributed_c10d._get_default_store()
            except (AttributeError, RuntimeError, ValueError):
                self._store = False
        return self._store or None

    def close(self) -> None:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _meter_kind(meter) -> Optional[str]:
    try:
        return meter.describe().get("kind")
    except Exception:
        return getattr(meter, "kind", None)


def init_from_env(device_type: str, timeout_s: float = DEFAULT_TIMEOUT_S, environ=os.environ) -> DistContext:
    """Join the job torchrun started: process group, device, topology. A collective."""
    import torch.distributed as dist

    rank, world = int(environ["RANK"]), int(environ["WORLD_SIZE"])
    local_rank = int(environ["LOCAL_RANK"])
    local_world = int(environ.get("LOCAL_WORLD_SIZE", world))
    if device_type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise UserError(
                f"rank {rank}: local rank {local_rank} has no GPU (this node has "
                f"{torch.cuda.device_count()}); use --nproc-per-node <= the GPUs per node"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device = torch.device("cpu")
        backend = "gloo"
        # Ranks on one host share its cores: split them instead of each taking all.
        cores = os.cpu_count() or 1
        torch.set_num_threads(max(1, cores // max(local_world, 1)))
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    mine = (rank, local_rank, int(environ.get("GROUP_RANK", 0)), socket.gethostname(), str(device))
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, mine)
    return DistContext(rank, world, local_rank, local_world, device, backend, timeout_s, topology(gathered))
