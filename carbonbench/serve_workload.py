"""The serve workload beside the static ones, for the runner: built by ``make_workload``,
measured by ``measure_window`` (the runner imports both from here).

A serve point's warm-up steps each answer a short burst of requests (all at once, at
most 8 tokens each), so that every kernel the stream will run has run before the
window; each measured repeat then serves the whole stream (carbonbench.serve_measure).
"""

from __future__ import annotations

from typing import Callable, Optional

from carbonbench import windows, workloads
from carbonbench.errors import UserError
from carbonbench.request_stream import RequestSpec, requests
from carbonbench.serve_measure import serve_repeat
from carbonbench.serving import ContinuousBatcher, ServeInputs, Trace
from carbonbench.workloads import Inputs, Workload

WARMUP_TOKENS = 8


class ServeWorkload(Workload):
    name = "serve"

    def __init__(self, model, point, inputs: Inputs, sync, engine=None):
        super().__init__(model, point, inputs, sync, engine)
        serve: ServeInputs = inputs.serve
        self.serve_config = serve.config
        self.concurrency = point.concurrency
        self.specs = requests(serve.config, point.rate_rps)
        device = inputs.input_ids.device
        self.prompts = serve.prompts(self.specs, model.arch.vocab_size, device)
        self.server = ContinuousBatcher(
            model, self.engine, point.batch_size, point.prompt_tokens + point.new_tokens, sync
        )
        # A step of the warm-up; the windows count their own tokens and FLOPs.
        self.tokens_per_step, self.model_flops_per_step, self.hardware_flops_per_step = 0, 0.0, 0.0

    def step(self) -> dict[str, float]:
        burst = [
            RequestSpec(i, 0.0, s.prompt_tokens, min(s.output_tokens, WARMUP_TOKENS))
            for i, s in enumerate(self.specs[: self.point.batch_size + 1])
        ]
        self.server.serve(burst, self.prompts)
        return {}

    def run_stream(self, on_tick: Optional[Callable[[float, int, int], None]] = None) -> Trace:
        return self.server.serve(self.specs, self.prompts, self.concurrency, on_tick)

    def close(self) -> None:
        super().close()
        self.server = None


def make_workload(point, model, inputs, sync, engine, train, dtype, replicas: int = 1) -> Workload:
    """carbonbench.workloads.make_workload, and the serve workload (on one process only)."""
    if point.workload != "serve":
        return workloads.make_workload(point, model, inputs, sync, engine, train, dtype, replicas=replicas)
    if replicas != 1:
        raise UserError("serve runs on one process (not under torchrun data parallelism)")
    return ServeWorkload(model, point, inputs, sync, engine=engine)


def measure_window(workload, point_key, repeat, session, m, sync, job, idle):
    """carbonbench.windows.measure_window, or a serve point's steady-state window."""
    if isinstance(workload, ServeWorkload):
        return serve_repeat(workload, point_key, repeat, session, m, job, idle)
    return windows.measure_window(workload, point_key, repeat, session, m, sync, job, idle)
