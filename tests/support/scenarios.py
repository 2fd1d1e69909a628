"""The tiny scenario: opt-tiny, one point per workload, windows of a twentieth of a second.

``tiny_scenario_text(extra)`` is its YAML with ``extra`` appended (a top-level section, or
an indented line that lands in ``measurement:``); the ``tiny_scenario`` fixture writes it
to a file, and ``tiny_run`` measures it once per session. ``TINY_KEYS`` are its points.

Tests that need another shape (other models, workloads or window lengths) build it with
``scenario_text(...)``: one prefill point of opt-tiny and the shortest windows
(``FAST_MEASUREMENT``) unless told otherwise, so each variant says only how it differs.
"""

from __future__ import annotations

TINY_WORKLOADS = "workloads:\n  prefill: {prompt_tokens: [16]}\n  decode: {prompt_tokens: [8], new_tokens: [4]}\n  train: {seq_len: [16]}\n"
TINY_KEYS = ["opt-tiny/prefill/b2/p16", "opt-tiny/decode/b2/p8-n4", "opt-tiny/train/b2/s16"]


def tiny_scenario_text(extra: str = "", codecarbon: bool = False) -> str:
    return (
        "name: tiny\n"
        "models: [opt-tiny]\n"
        "batch_sizes: [2]\n" + TINY_WORKLOADS + "measurement:\n"
        "  warmup_steps: 1\n"
        "  warmup_s: 0\n"
        "  min_seconds: 0.05\n"
        "  repeats: 2\n"
        "  idle_baseline_s: 0.1\n"
        f"  codecarbon: {'true' if codecarbon else 'false'}\n" + extra
    )


# One warm-up step, one repeat of a twentieth of a second, no idle baseline, no codecarbon.
FAST_MEASUREMENT = {
    "warmup_steps": 1,
    "warmup_s": 0,
    "min_seconds": 0.05,
    "repeats": 1,
    "idle_baseline_s": 0,
    "codecarbon": False,
}


def _yaml(value) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def measurement_text(**overrides) -> str:
    """``measurement: {...}``: FAST_MEASUREMENT with ``overrides`` (sample_interval_s=0.01, ...)."""
    fields = {**FAST_MEASUREMENT, **overrides}
    return "measurement: {" + ", ".join(f"{k}: {_yaml(v)}" for k, v in fields.items()) + "}\n"


def scenario_text(
    *,
    name: str = "t",
    models: str = "[opt-tiny]",
    workloads: str = "{prefill: {prompt_tokens: [8]}}",
    batch_sizes: str | None = None,
    device: str | None = None,
    extra: str = "",
    **measurement,
) -> str:
    """A scenario's YAML; values are YAML text (``models="[opt-tiny, opt-125m]"``), and keyword
    arguments not named here override FAST_MEASUREMENT. ``extra`` is appended as it is."""
    text = f"name: {name}\nmodels: {models}\n"
    text += f"device: {device}\n" if device else ""
    text += f"batch_sizes: {batch_sizes}\n" if batch_sizes else ""
    return text + f"workloads: {workloads}\n" + measurement_text(**measurement) + extra
