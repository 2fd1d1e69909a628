"""The ranks of a torchrun job as every rank sees them: which host, which device, who leads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class RankInfo:
    """One process of the job, as every rank sees it after the topology exchange."""

    rank: int
    local_rank: int
    node: int  # index of the host in the job, 0..nnodes-1 (by first rank on it)
    hostname: str
    device: str  # e.g. "cuda:3" or "cpu"
    node_leader: bool  # the lowest rank on its host: it alone meters CPU and DRAM


def topology(gathered: Sequence[tuple]) -> list[RankInfo]:
    """RankInfo for (rank, local_rank, group_rank, hostname, device) tuples, in rank order.

    A node is a host: the lowest rank on each hostname leads it (meters CPU and DRAM),
    even when two torchrun agents share one host.
    """
    rows = sorted(gathered, key=lambda g: g[0])
    node_of: dict[str, int] = {}
    out = []
    for rank, local_rank, _group, host, device in rows:
        leader = host not in node_of
        if leader:
            node_of[host] = len(node_of)
        out.append(RankInfo(rank, local_rank, node_of[host], host, device, leader))
    return out
