"""Multi-GPU and multi-node runs on torch.distributed, launched by torchrun.

- ``launch``: ``carbonbench run --nproc-per-node N`` runs torchrun in-process; failures
  come back as one message naming the rank.
- ``context``: each worker's view of the job (rank, device, nodes), the process group
  with a bounded timeout, and the runner's few collectives. ``Single`` stands in for it
  on one process; both keep the ``Job`` protocol.
- ``parallel``: per point, FSDP2 for training, tensor parallelism or replicas for
  inference, and the model wrapped to match.
- ``aggregate``: every rank's window summed into one measurement, CPU and DRAM counted
  once per node, with per-rank and per-node detail.

See docs/distributed.md.
"""

from carbonbench.distributed.context import (
    DistContext,
    DistributedFailure,
    Job,
    Single,
    init_from_env,
    launched_by_torchrun,
)
from carbonbench.distributed.ranks import RankInfo

__all__ = ["DistContext", "DistributedFailure", "Job", "RankInfo", "Single", "init_from_env", "launched_by_torchrun"]
