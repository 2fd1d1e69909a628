"""Decode as peers define it: the generation after the first token, prefill left out.

A decode step is a whole generation: the prefill of the prompt, which gives the first
token (its time is ``ttft_s``), then ``new_tokens - 1`` decode steps. carbonbench's decode
``joules_per_token`` and ``tokens_per_s`` cover the whole window, prefill included, over
every new token. optimum-benchmark and the LLM-Perf leaderboard subtract the prefill;
the ``decode_only_*`` columns do the same, so figures can be set beside theirs:

- ``decode_only_tokens`` = tokens x (new_tokens - 1) / new_tokens: the tokens after each
  generation's first;
- ``decode_only_duration_s`` = duration_s - steps x ttft_s: the window without its
  prefills (TTFT is timed inside each step, device synchronised);
- ``decode_only_tokens_per_s`` = decode_only_tokens / decode_only_duration_s;
- ``decode_only_energy_j`` = energy_j x decode_only_duration_s / duration_s: the window's
  energy at its mean power over the time after the first tokens. No meter reads the two
  phases apart inside one window (a step is milliseconds, a sampler tick is not), so
  this is an attribution, labelled ``attributed from <the window's energy method>``,
  never ``counter``. Prefill is compute-bound and usually draws more power than
  decode, so at the window's mean power the decode share is if anything overstated;
- ``decode_only_joules_per_token`` = decode_only_energy_j / decode_only_tokens.

Blank where the point is not decode, generates one token only, or lacks TTFT or energy.
"""

from __future__ import annotations

from typing import Any, Optional

from carbonbench.records import PointRecord, RepeatRecord

DECODE_ONLY_COLUMNS = (
    "decode_only_tokens",
    "decode_only_duration_s",
    "decode_only_tokens_per_s",
    "decode_only_energy_j",
    "decode_only_energy_method",
    "decode_only_joules_per_token",
)
# The per-repeat figures a point table gives as mean and 95% CI.
DECODE_ONLY_POINT_COLUMNS = ("decode_only_joules_per_token", "decode_only_tokens_per_s")
ATTRIBUTED = "attributed from "


def decode_only(point: PointRecord, rep: RepeatRecord) -> dict[str, Any]:
    """The decode_only_* columns of one repeat (None where they do not apply)."""
    out: dict[str, Any] = dict.fromkeys(DECODE_ONLY_COLUMNS)
    new = point.new_tokens or 0
    steps, tokens, duration, ttft = rep.steps, rep.tokens, rep.duration_s, rep.ttft_s
    if point.workload != "decode" or new < 2 or not (steps and tokens and duration and ttft is not None):
        return out
    rest_s = duration - steps * ttft
    after_first = tokens * (new - 1) / new
    if not (rest_s > 0 and after_first > 0):  # figures that do not add up: say nothing rather than divide by them
        return out
    whole = float(after_first).is_integer() and after_first < 2**53
    out["decode_only_tokens"] = int(after_first) if whole else after_first
    out["decode_only_duration_s"] = rest_s
    out["decode_only_tokens_per_s"] = out["decode_only_tokens"] / rest_s
    energy = _attributed(rep.energy_j, rest_s / duration)
    if energy is not None:
        out["decode_only_energy_j"] = energy
        out["decode_only_energy_method"] = ATTRIBUTED + str(rep.energy_method or rep.method or "none")
        out["decode_only_joules_per_token"] = energy / out["decode_only_tokens"]
    return out


def _attributed(energy_j: Optional[float], share: float) -> Optional[float]:
    return energy_j * share if isinstance(energy_j, (int, float)) else None
