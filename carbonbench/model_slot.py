"""The model a point runs on: loaded once, reloaded only when a point needs another dtype
or layout, and freed between models.

Inference runs in the scenario dtype; training keeps fp32 master weights and autocasts
to the scenario dtype (mixed precision). Inference goes first, so when both dtypes are
fp32 the training steps may change the weights that inference already used.
"""

from __future__ import annotations

from typing import Optional

import torch

from carbonbench.distributed.context import Job
from carbonbench.distributed.parallel import Layout, build_model
from carbonbench.engines import Engine
from carbonbench.errors import UserError
from carbonbench.plan import preflight
from carbonbench.scenario import ModelEntry, Point
from carbonbench.windows import free_memory


class ModelSlot:
    def __init__(self, engine: Engine, entry: ModelEntry, job: Job, dtype: torch.dtype, seed: int):
        self.engine, self.entry, self.job = engine, entry, job
        self.dtype, self.seed = dtype, seed
        self.model: Optional[torch.nn.Module] = None
        self._holds: Optional[tuple[torch.dtype, str]] = None

    @staticmethod
    def order(points: list[Point], layouts: dict[str, Layout]) -> list[Point]:
        """Inference before training, and points of one layout together: fewest reloads."""
        return sorted(points, key=lambda p: (p.workload == "train", layouts[p.key].mode))

    def model_for(self, point: Point, layout: Layout) -> torch.nn.Module:
        """The model for this point; ModelTooLargeError when it cannot be loaded here."""
        want = (torch.float32 if point.workload == "train" else self.dtype, layout.mode)
        preflight(point, self.entry.card, self.dtype, self.job.device, layout, loaded=self._holds == want)
        if self.model is None or self._holds != want:
            self.free()
            self.model = self._load(point, layout, want[0])
            self._holds = want
            self.model.eval()
        return self.model

    def _load(self, point: Point, layout: Layout, dtype: torch.dtype) -> torch.nn.Module:
        if layout.mode == "single":
            return self.engine.load(self.entry, device=self.job.device, dtype=dtype, seed=self.seed)
        if self.engine.name != "native":
            raise UserError(f"engine '{self.engine.name}' runs on one process; use engine: native with torchrun")
        # FSDP mixed precision: fp32 master weights, all-gathered in the scenario dtype.
        param_dtype = self.dtype if point.workload == "train" and self.dtype != torch.float32 else None
        return build_model(self.entry.card, layout, self.job, dtype, self.seed, param_dtype)

    def params(self) -> int:
        """Parameters of the whole model, also when it is sharded over ranks."""
        return sum(t.numel() for t in self.model.parameters())

    def free(self) -> None:
        self.model, self._holds = None, None
        free_memory(self.job.device)
