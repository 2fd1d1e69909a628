"""One measurement for the whole job from every rank's own window.

Energy is per device, never per process (measurement.md): each rank meters the GPU it
drives, and the job's energy is the **sum** over ranks, not an average. CPU and DRAM
meters read the whole host, so only the node leader (the lowest rank on each host)
keeps them; should another rank report one anyway, it is dropped here, never added.

Components are renamed so that they stay unique in the run file: a rank's own devices
become ``rank<R>/<component>`` (``rank3/gpu3``), node-wide ones ``node<N>/<component>``
(``node0/cpu``, ``node1/dram``). The totals and the kind sums of results.py then count
every device of every node once.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence

from carbonbench.distributed.ranks import RankInfo
from carbonbench.meters.base import ComponentEnergy, Measurement
from carbonbench.records import PointRecord

NODE_COMPONENT_KINDS = ("cpu", "dram")


def combine(
    measurements: Sequence[Measurement],
    ranks: Sequence[RankInfo],
    extras: Optional[Sequence[dict]] = None,
) -> tuple[Measurement, dict[str, Any]]:
    """Sum the ranks' windows (rank order) into one Measurement plus per-rank/node detail.

    ``extras`` adds each rank's own figures (e.g. its step count) to its detail row.
    """
    if len(measurements) != len(ranks):
        raise ValueError(f"{len(measurements)} measurements for {len(ranks)} ranks")
    extras = extras or [{} for _ in ranks]
    components: list[ComponentEnergy] = []
    rank_rows = []
    for meas, info, extra in zip(measurements, ranks, extras):
        mine = [c for c in (_rename(c, info) for c in meas.components) if c is not None]
        components.extend(mine)
        rank_rows.append(
            {
                "rank": info.rank,
                "node": info.node,
                "local_rank": info.local_rank,
                "device": info.device,
                "start_unix_s": meas.start_unix_s,
                "duration_s": meas.duration_s,
                "energy_j": _sum(c.energy_j for c in mine),
                "components": [c.component for c in mine],
                **extra,
            }
        )
    node_rows = []
    for node in sorted({r.node for r in ranks}):
        members = [r for r in ranks if r.node == node]
        names = {name for row in rank_rows if row["node"] == node for name in row["components"]}
        parts = [c for c in components if c.component in names]
        node_rows.append(
            {
                "node": node,
                "hostname": members[0].hostname,
                "ranks": [r.rank for r in members],
                "energy_j": _sum(c.energy_j for c in parts),
                **{
                    f"{kind}_energy_j": _sum(c.energy_j for c in parts if c.kind == kind)
                    for kind in ("gpu", "cpu", "dram")
                },
            }
        )
    flags: list[str] = []
    for meas in measurements:
        flags.extend(f for f in meas.flags if f not in flags)
    first = measurements[0]
    total = Measurement(
        label=first.label,
        start_unix_s=min(m.start_unix_s for m in measurements),
        duration_s=max(m.duration_s for m in measurements),
        components=tuple(components),
        flags=tuple(flags),
    )
    return total, {"world_size": len(ranks), "ranks": rank_rows, "nodes": node_rows}


def _rename(c: ComponentEnergy, info: RankInfo) -> Optional[ComponentEnergy]:
    if c.kind in NODE_COMPONENT_KINDS:
        if not info.node_leader:
            return None  # the node leader already counts this host's CPU and DRAM
        return dataclasses.replace(c, component=f"node{info.node}/{c.component}")
    if c.kind == "gpu" and _other_gpu(c.component, info.device):
        return None  # a GPU this rank does not drive: its own rank meters it
    return dataclasses.replace(c, component=f"rank{info.rank}/{c.component}")


def rename_timeline(rows: Sequence[dict], info: RankInfo) -> list[dict]:
    """A rank's power samples with components named as in ``combine`` (and the same ones dropped)."""
    out = []
    for row in rows:
        kind = row.get("kind") or "other"
        probe = ComponentEnergy(str(row.get("component", "")), kind, None, "none", "")
        renamed = _rename(probe, info)
        if renamed is not None:
            out.append({**row, "component": renamed.component, "rank": info.rank})
    return out


def _other_gpu(component: str, device: str) -> bool:
    if not device.startswith("cuda:") or not component.startswith("gpu") or not component[3:].isdigit():
        return False
    return component[3:] != device.split(":", 1)[1]


def agree(record: PointRecord, per_rank: Sequence[dict]) -> PointRecord:
    """A point's record on rank 0, with every rank's status: failed anywhere means failed.

    The first failing rank's status and error are kept, prefixed with the rank; peak
    memory is the largest over ranks.
    """
    out = dataclasses.replace(record)
    failed = [(r, s) for r, s in enumerate(per_rank) if s.get("status") != "ok"]
    if failed:
        rank, s = failed[0]
        out.status = s["status"]
        out.error = f"rank {rank}: {s.get('error')}"
    peaks = [s["peak_memory_bytes"] for s in per_rank if s.get("peak_memory_bytes") is not None]
    out.peak_memory_bytes = max(peaks) if peaks else None
    out.ranks = [{"rank": r, **s} for r, s in enumerate(per_rank)]
    return out


def _sum(values) -> Optional[float]:
    known = [v for v in values if v is not None]
    return float(sum(known)) if known else None
