"""The native engine: carbonbench's own OPT (carbonbench.opt.model), with its speed options.

- static_cache: the KV cache is allocated once per batch and written in place (false:
  grown by concatenation every step, as Hugging Face's DynamicCache does).
- compile: torch.compile of the model's forward (prefill, training) and of the
  fixed-shape decode step ``OPT.step``, whose position is a tensor, so one graph serves
  every step of a generation.
- cuda_graphs: the decode step (compiled or eager) is captured once per cache in a CUDA
  graph and replayed: one launch per token instead of a few hundred kernel launches,
  which is what bounds a small batch's decode on a fast GPU.
- sdpa_backend: which scaled-dot-product-attention kernels may run.
- fused_qkv: after loading, each layer's q/k/v projections become one [3D, D] matmul
  (``OPT.fuse_qkv``). Only for models this engine loads: the tensor-parallel, FSDP2 and
  replicated models of a torchrun job (carbonbench.distributed.parallel) stay unfused,
  and there the option is dropped with a note.
- fused_optimizer: AdamW's fused kernel.

The first call of a compiled function compiles it, and the first decode step of a cache
captures its graph: the runner makes both happen in the warm-up, times them
(``warmup.compile_s``), and seals the engine before any measured window.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from carbonbench import opt
from carbonbench.engines.base import Engine

_COMPILED = "_carbonbench_compiled"  # attribute of the model holding its compiled forward


def _step(model, token_ids: Tensor, cache, pos: Tensor) -> Tensor:
    return model.step(token_ids, cache, pos)


class NativeEngine(Engine):
    name = "native"

    def __init__(self, config, device, notes=None):
        super().__init__(config, device, notes)
        self._compiled_step = None

    def load(self, entry, device, dtype, seed):
        model = opt.load_card(entry.card, device=device, dtype=dtype, seed=seed)
        # Before any optimizer or compiled graph sees the parameters.
        return model.fuse_qkv() if self.config.fused_qkv else model

    def new_cache(self, model, batch, max_len):
        return model.new_cache(batch, max_len, growing=not self.config.static_cache)

    # -- inference ------------------------------------------------------------------
    def prefill(self, model, input_ids, cache, attention_mask=None):
        with self.sdpa():
            if not self.config.compile:
                return opt.prefill(model, input_ids, cache, attention_mask)
            with torch.inference_mode():
                logits = self._forward(model)(input_ids, attention_mask, cache=cache, start_pos=0, last_only=True)
            return logits[:, -1]

    def decode_step(self, model, token_ids, cache, pos):
        with self.sdpa():
            if not self.compiles:
                return opt.decode_step(model, token_ids, cache, pos)
            stepper = getattr(cache, "stepper", None)
            if stepper is None:
                stepper = cache.stepper = _Stepper(self, model, cache)
            with torch.inference_mode():
                return stepper(model, cache, token_ids, pos)

    # -- training -------------------------------------------------------------------
    def train_loss(self, model, input_ids):
        forward = self._forward(model) if self.config.compile else model
        with self.sdpa():
            # Looked up at call time, so that a test can swap opt.loss_fn.
            return opt.loss_fn(forward(input_ids), input_ids)

    # -- compiled functions -----------------------------------------------------------
    def _forward(self, model: nn.Module):
        """The model's compiled forward, made once per model and kept on it."""
        compiled = model.__dict__.get(_COMPILED)
        if compiled is None:
            # dynamic=None: the first shape compiles static, a second one compiles a graph
            # with symbolic sizes that serves the rest of the sweep. Compiled graphs are
            # keyed by code and guards, not by model object, so a model loaded again
            # (same architecture) reuses them.
            compiled = self.compile_fn(model, dynamic=None)
            object.__setattr__(model, _COMPILED, compiled)  # not a submodule: no param duplicates
        return compiled

    def step_fn(self):
        """OPT.step, compiled when engine.compile is on."""
        if not self.config.compile:
            return _step
        if self._compiled_step is None:
            self._compiled_step = self.compile_fn(_step, fullgraph=True, dynamic=None)
        return self._compiled_step


class _Stepper:
    """The fixed-shape decode step for one cache: compiled, and/or replayed from a CUDA graph.

    It lives on the cache (``cache.stepper``) and holds neither the cache nor the model,
    so freeing the cache frees the graph and its memory pool with it.
    """

    def __init__(self, engine: NativeEngine, model, cache):
        device = cache.mask.device
        self.engine = engine
        self.fn = engine.step_fn()
        self.token = torch.zeros(cache.mask.shape[0], 1, dtype=torch.long, device=device)
        self.pos = torch.zeros(1, dtype=torch.long, device=device)
        self.graph: Optional[torch.cuda.CUDAGraph] = None
        self.out: Optional[Tensor] = None

    def __call__(self, model, cache, token_ids: Tensor, pos: int) -> Tensor:
        self.token.copy_(token_ids)
        self.pos.fill_(pos)
        if not self.engine.config.cuda_graphs:
            return self.fn(model, self.token, cache, self.pos)
        if self.graph is None:
            self._capture(model, cache)
        self.graph.replay()
        return self.out

    def _capture(self, model, cache) -> None:
        if self.engine.sealed:
            raise RuntimeError("CUDA graph capture inside a measured window (the warm-up should have captured it)")
        device = self.token.device
        # Warm up on a side stream (compiles, lets kernels pick algorithms), then capture.
        # Writing the same token's keys at the same position again changes nothing.
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(3):
                self.fn(model, self.token, cache, self.pos)
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # thread_local: the meters' sampler thread may touch the driver during capture.
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            out = self.fn(model, self.token, cache, self.pos)
        self.graph, self.out = graph, out
