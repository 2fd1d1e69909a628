"""Continuous batching over the native engine's static KV cache: requests in slots.

The cache is allocated once per point with ``max_batch`` rows (slots) of the longest
prompt + answer. A request joins at the next step into the lowest free slot: its prompt
is prefilled alone into that row (a view of the cache: no copy, no padding), which gives
its first token. Every step after that is one decode step over the slots in use, each
row at its own position: a per-slot ``positions`` tensor says where its key and value
are written, and the mask lets row b see keys [0, position_b] only, so whatever an
earlier request left in the row is never attended. A finished request frees its slot at
once; a waiting request takes it at the next step.

Scheduling is prefill-first (vLLM's default before chunked prefill): waiting requests
are admitted, each prefilled, before the next decode step. Decode runs rows [0, highest
slot in use], so idle slots at the end cost nothing; a free slot below the highest one
is computed and ignored (a hole). Decoding is greedy and never stops early: a request
gets exactly its ``output_tokens``.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import Tensor

from carbonbench import flops
from carbonbench.opt.card import POSITION_OFFSET
from carbonbench.opt.model import PAD_ID, KVCache
from carbonbench.request_stream import RequestSpec, prompt_ids
from carbonbench.serve_config import ServeConfig


@dataclass
class ServeInputs:
    """What a serve point is fed: the stream's config, and each request's prompt ids."""

    config: ServeConfig
    seed: int
    tokenizer: object = None

    def prompts(self, specs: list[RequestSpec], vocab: int, device) -> list[Tensor]:
        return [torch.as_tensor(prompt_ids(s, self.seed, vocab, self.tokenizer), device=device) for s in specs]


@dataclass
class Served:
    """One request's life on the server, in seconds from the stream's start."""

    index: int
    prompt_tokens: int
    output_tokens: int
    arrival_s: float
    admitted_s: float = float("nan")  # its prefill began
    first_token_s: float = float("nan")
    finish_s: float = float("nan")
    tokens: Optional[list[int]] = None  # kept when the server is asked to (tests)


@dataclass
class StepSpan:
    """One step of the server: a prefill of one request, or a decode step over the slots in use."""

    start_s: float
    end_s: float
    kind: str  # "prefill" | "decode"
    requests: tuple[int, ...]  # request indices that the step advanced
    rows: int  # rows computed (decode: including holes)
    model_flops: float
    hardware_flops: float


@dataclass
class Trace:
    unix0_s: float  # time.time() at the stream's start: steps are placed on the meters' clock with it
    served: list[Served] = field(default_factory=list)
    steps: list[StepSpan] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)  # when each request arrived, in order

    def unix(self, t_s: float) -> float:
        return self.unix0_s + t_s


class _SlotLayer:
    """One layer's cache rows [0, n) for a decode step whose rows sit at their own positions."""

    __slots__ = ("k", "v", "rows", "pos")

    def __init__(self, k: Tensor, v: Tensor, rows: Tensor, pos: Tensor):
        self.k, self.v, self.rows, self.pos = k, v, rows, pos

    def update(self, k: Tensor, v: Tensor, start_pos) -> tuple[Tensor, Tensor]:
        # k, v [n, H, 1, hd] go to row b's position pos[b]; all max_len keys come back, masked by the caller.
        self.k[self.rows, :, self.pos] = k[:, :, 0]
        self.v[self.rows, :, self.pos] = v[:, :, 0]
        return self.k, self.v


def slot_step(model, cache: KVCache, token_ids: Tensor, pos: Tensor) -> Tensor:
    """Logits [n, V] for token_ids [n, 1], row b at position pos[b] of slot b (rows [0, n))."""
    n = token_ids.shape[0]
    rows = torch.arange(n, device=token_ids.device)
    x = model.embed_tokens(token_ids)  # [n, 1, E]
    if model.arch.projects_embeddings:
        x = model.project_in(x)
    # A slot holds one request from position 0, unpadded: its positions are its indices.
    x = x + model.embed_positions(pos[:, None] + POSITION_OFFSET)
    mask = (cache.key_pos[None, :] <= pos[:, None])[:, None, None, :]  # [n, 1, 1, max_len]
    for i, layer in enumerate(model.layers):
        k, v = cache.layer(i)
        x = layer(x, mask, _SlotLayer(k[:n], v[:n], rows, pos), pos)
    return model._head(x)[:, -1]


def _slot_view(cache: KVCache, slot: int) -> KVCache:
    """Row ``slot`` of the cache as a batch-1 cache: views, so a prefill writes into place."""
    view = object.__new__(KVCache)
    view.k, view.v = cache.k[:, slot : slot + 1], cache.v[:, slot : slot + 1]
    view.mask, view.padded, view.key_pos = cache.mask[slot : slot + 1], False, cache.key_pos
    return view


class ContinuousBatcher:
    """A server of ``max_batch`` slots for requests of up to ``max_len`` tokens in all."""

    def __init__(self, model, engine, max_batch: int, max_len: int, sync: Callable[[], None]):
        self.model, self.engine, self.sync = model, engine, sync
        self.max_batch, self.max_len = max_batch, max_len
        self.cache = engine.new_cache(model, max_batch, max_len)
        device = self.cache.mask.device
        self.last = torch.full((max_batch, 1), PAD_ID, dtype=torch.long, device=device)
        self.out = torch.zeros(max_batch, max_len, dtype=torch.long, device=device)
        self.arch = model.arch

    def serve(
        self,
        specs: list[RequestSpec],
        prompts: list[Tensor],
        concurrency: int = 0,
        on_tick: Optional[Callable[[float, int, int], None]] = None,
        keep_tokens: bool = False,
    ) -> Trace:
        """Answer every request; arrivals as the specs give them, or closed loop with
        ``concurrency`` clients. on_tick(now_s, arrived, waiting) runs before each step."""
        for spec in specs:
            if spec.prompt_tokens + spec.output_tokens > self.max_len:
                raise ValueError(f"request {spec.index} needs {spec.prompt_tokens + spec.output_tokens} positions")
        trace, start = Trace(time.time()), time.perf_counter()
        now = lambda: time.perf_counter() - start  # noqa: E731
        upcoming, waiting = deque(specs), deque()
        slots: list[Optional[list]] = [None] * self.max_batch  # [served, position, generated]
        done = 0

        def arrive(t_s: float) -> None:
            spec = upcoming.popleft()
            served = Served(spec.index, spec.prompt_tokens, spec.output_tokens, t_s)
            trace.served.append(served)
            trace.arrivals.append(t_s)
            waiting.append((served, prompts[spec.index]))

        def finish(slot: int, t_s: float) -> None:
            nonlocal done
            served = slots[slot][0]
            served.finish_s, slots[slot] = t_s, None
            if keep_tokens:
                served.tokens = self.out[slot, : served.output_tokens].tolist()
            done += 1
            if concurrency and upcoming:  # the client sends its next request now
                arrive(t_s)

        for _ in range(min(concurrency, len(specs))):
            arrive(0.0)
        while done < len(specs):
            if not concurrency:
                while upcoming and upcoming[0].arrival_s <= now():
                    arrive(upcoming[0].arrival_s)
            if on_tick is not None:
                on_tick(now(), len(trace.arrivals), len(waiting))
            while waiting and None in slots:
                slot = slots.index(None)
                served, ids = waiting.popleft()
                self._prefill(slot, served, ids, trace, now)
                slots[slot] = [served, served.prompt_tokens, 1]
                if served.output_tokens == 1:
                    finish(slot, now())
            if any(s is not None for s in slots):
                self._decode(slots, trace, now, finish)
            elif not waiting and upcoming and not concurrency:
                time.sleep(max(0.0, min(upcoming[0].arrival_s - now(), 0.05)))
        if on_tick is not None:
            on_tick(now(), len(trace.arrivals), 0)
        return trace

    def _prefill(self, slot: int, served: Served, ids: Tensor, trace: Trace, now) -> None:
        t0 = now()
        served.admitted_s = t0
        logits = self.engine.prefill(self.model, ids[None, :], _slot_view(self.cache, slot))
        token = logits.argmax(-1)  # [1]
        self.last[slot, 0] = token[0]
        self.out[slot, 0] = token[0]
        self.sync()
        t1 = served.first_token_s = now()
        f = flops.prefill(self.arch, 1, served.prompt_tokens)
        trace.steps.append(StepSpan(t0, t1, "prefill", (served.index,), 1, f.model, f.hardware))

    def _decode(self, slots: list, trace: Trace, now, finish) -> None:
        t0 = now()
        active = [i for i, s in enumerate(slots) if s is not None]
        n = active[-1] + 1
        pos_host = [slots[i][1] if slots[i] is not None else 0 for i in range(n)]
        device = self.last.device
        pos = torch.tensor(pos_host, dtype=torch.long, device=device)
        with self.engine.sdpa(), torch.inference_mode():
            token = slot_step(self.model, self.cache, self.last[:n], pos).argmax(-1)  # [n]
        rows = torch.tensor(active, dtype=torch.long, device=device)
        cols = torch.tensor([slots[i][2] for i in active], dtype=torch.long, device=device)
        self.last[:n, 0] = token
        self.out[rows, cols] = token[rows]
        self.sync()
        t1 = now()
        model_flops = sum(flops.forward(self.arch, 1, 1, pos_host[i] + 1, 1) for i in active)
        hardware = flops.forward(self.arch, n, 1, self.max_len, 1)
        trace.steps.append(
            StepSpan(t0, t1, "decode", tuple(slots[i][0].index for i in active), n, model_flops, hardware)
        )
        for i in active:
            slots[i][1] += 1
            slots[i][2] += 1
            if slots[i][2] >= slots[i][0].output_tokens:
                finish(i, t1)
