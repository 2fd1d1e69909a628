"""The requests a serve point answers: when each arrives, how long its prompt and answer are.

Everything is drawn from ``serve.seed`` with numpy's PCG64, lengths and arrivals from
separate streams, so the same seed gives the same requests on any machine, and a
second rate changes when requests arrive but not what they ask. A prompts file
(``serve.prompts``, .jsonl) gives each request's lengths instead, cycled if there are
fewer lines than requests:

    {"prompt_tokens": 120, "output_tokens": 48}
    {"prompt": "Summarise ...", "output_tokens": 200}   # text: needs the model's tokenizer

A line without ``output_tokens`` draws it from ``serve.output_tokens``. A text prompt
longer than ``serve.prompt_tokens``'s longest keeps its last tokens, as static batches do.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Optional

import numpy as np

from carbonbench.errors import ConfigError, UserError
from carbonbench.reading import MAX_PROMPTS, JSONContentError, UnreadableFile, parse_json, read_text
from carbonbench.serve_config import LengthDist, ServeConfig

FIRST_ORDINARY_ID = 4  # below: OPT's special tokens (as carbonbench.opt.tokenizer)
_LENGTHS, _ARRIVALS, _IDS = 1, 2, 3  # independent numpy streams of one seed


@dataclass(frozen=True)
class RequestSpec:
    index: int
    arrival_s: Optional[float]  # from the stream's start; None: closed loop, sent when a client is free
    prompt_tokens: int
    output_tokens: int
    text: Optional[str] = None


@dataclass(frozen=True)
class FileLine:
    prompt_tokens: Optional[int]
    output_tokens: Optional[int]
    text: Optional[str]


def draw(dist: LengthDist, n: int, rng: np.random.Generator) -> np.ndarray:
    """n token counts from dist, each in [dist.min, dist.longest]."""
    if dist.dist == "fixed":
        return np.full(n, int(dist.mean), dtype=np.int64)
    if dist.dist == "uniform":
        return rng.integers(dist.min, int(dist.max) + 1, size=n)
    values = np.rint(rng.lognormal(np.log(dist.mean), dist.sigma, size=n)).astype(np.int64)
    return np.clip(values, dist.min, dist.longest)


def requests(serve: ServeConfig, rate_rps: float = 0.0) -> list[RequestSpec]:
    """The stream: ``serve.requests`` requests; Poisson arrivals at rate_rps, else (closed loop) none set."""
    n = serve.requests
    lengths = np.random.default_rng([serve.seed, _LENGTHS])
    prompts, outputs = draw(serve.prompt_tokens, n, lengths), draw(serve.output_tokens, n, lengths)
    texts: list[Optional[str]] = [None] * n
    if serve.prompts:
        lines = read_request_file(serve.prompts)
        for i in range(n):
            line = lines[i % len(lines)]
            texts[i] = line.text
            prompts[i] = line.prompt_tokens if line.prompt_tokens is not None else serve.prompt_tokens.longest
            outputs[i] = line.output_tokens if line.output_tokens is not None else outputs[i]
    arrivals: list[Optional[float]] = [None] * n
    if serve.arrival == "poisson":
        gaps = np.random.default_rng([serve.seed, _ARRIVALS]).exponential(1.0 / rate_rps, size=n)
        gaps[0] = 0.0  # the first request opens the stream
        arrivals = [float(t) for t in np.cumsum(gaps)]
    return [RequestSpec(i, arrivals[i], int(prompts[i]), int(outputs[i]), texts[i]) for i in range(n)]


def longest_request(serve: ServeConfig) -> tuple[int, int]:
    """(longest prompt, longest answer) any request of the stream can have: the KV slot size."""
    prompt, output = serve.prompt_tokens.longest, serve.output_tokens.longest
    if serve.prompts:
        lines = read_request_file(serve.prompts)
        given = [ln.prompt_tokens for ln in lines if ln.prompt_tokens is not None]
        prompt = max(given + ([prompt] if any(ln.prompt_tokens is None for ln in lines) else []))
        outs = [ln.output_tokens for ln in lines if ln.output_tokens is not None]
        output = max(outs + ([output] if any(ln.output_tokens is None for ln in lines) else []))
    return prompt, output


def prompt_ids(spec: RequestSpec, seed: int, vocab: int, tokenizer=None) -> np.ndarray:
    """The request's prompt token ids: its text through the tokenizer, else seeded synthetic ids."""
    if spec.text is not None:
        if tokenizer is None:
            raise UserError(
                f"request {spec.index}: a text prompt needs the model's tokenizer (a checkpoint); "
                'give "prompt_tokens" for a model with random weights'
            )
        ids = tokenizer.encode(spec.text).ids[-spec.prompt_tokens :]
        if not ids:
            raise UserError(f"request {spec.index}: prompt {spec.text[:40]!r} encodes to no tokens")
        return np.asarray(ids, dtype=np.int64)
    rng = np.random.default_rng([seed, _IDS, spec.index])
    return rng.integers(FIRST_ORDINARY_ID, vocab, size=spec.prompt_tokens)


def read_request_file(path: str | Path) -> tuple[FileLine, ...]:
    """The lines of a requests file; any bad line is one ConfigError naming the file and line."""
    path = Path(path)
    try:
        return _read(str(path), path.stat().st_mtime_ns)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror or exc})") from None


@lru_cache(maxsize=8)  # expand, the length checks and each point read it: once per version
def _read(name: str, _mtime_ns: int) -> tuple[FileLine, ...]:
    path = Path(name)
    if path.suffix != ".jsonl":
        raise ConfigError(f"{path}: a serve requests file must be .jsonl (one JSON object per line)")
    try:
        text = read_text(path, MAX_PROMPTS)
    except UnreadableFile as exc:
        raise ConfigError(str(exc)) from None
    lines = tuple(_line(path, n, raw) for n, raw in enumerate(text.splitlines(), 1) if raw.strip())
    if not lines:
        raise ConfigError(f"{path}: no requests")
    return lines


def _line(path: Path, number: int, raw: str) -> FileLine:
    where = f"{path}: line {number}"
    try:
        record = parse_json(raw, finite=False)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where}: invalid JSON ({exc.msg})") from None
    except JSONContentError as exc:
        raise ConfigError(f"{where}: {exc.why}") from None
    except RecursionError:
        raise ConfigError(f"{where}: invalid JSON (nested too deeply)") from None
    if not isinstance(record, dict):
        raise ConfigError(f"{where}: expected a JSON object, got {raw.strip()[:40]}")
    text = next((record[k] for k in ("text", "prompt") if k in record), None)
    if text is not None and not (isinstance(text, str) and text.strip()):
        raise ConfigError(f"{where}: the prompt must be a non-empty string")
    counts = {k: _count(record.get(k), where, k) for k in ("prompt_tokens", "output_tokens")}
    if text is None and counts["prompt_tokens"] is None:
        raise ConfigError(f'{where}: give "prompt_tokens" (a count) or a "prompt" string')
    return FileLine(counts["prompt_tokens"], counts["output_tokens"], text)


def _count(value, where: str, key: str) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1 << 20:
        raise ConfigError(f"{where}: {key} must be a whole number from 1 to {1 << 20} (got {value!r})")
    return value
