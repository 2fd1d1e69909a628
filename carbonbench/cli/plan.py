"""`carbonbench plan`: the memory a model needs, and how many devices of a kind that takes."""

from __future__ import annotations

from typing import Any

import click

from carbonbench.cli.output import echo_json, format_option
from carbonbench.cli.table import echo_safe, format_table


@click.command()
@click.argument("model")
@click.option("--hardware", required=True, help="Device kind from the hardware table (e.g. a100-80gb, h100-sxm).")
@click.option(
    "--dtype",
    "dtypes",
    multiple=True,
    type=click.Choice(["fp32", "fp16", "bf16", "int8"]),
    help="Weight dtype (repeatable). Default: fp32, bf16 and int8. int8 is for inference only.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1, max=1 << 24),
    default=1,
    show_default=True,
    help="Sequences in a batch (training: across all devices).",
)
@click.option(
    "--seq-len",
    type=click.IntRange(min=1, max=1 << 24),
    default=None,
    help="Tokens per sequence, prompt plus generated for inference. Default: the model's context length.",
)
@click.option(
    "--mode",
    type=click.Choice(["inference", "training", "both"]),
    default="both",
    show_default=True,
    help="Which memory to plan.",
)
@click.option(
    "--reserve",
    type=click.FloatRange(min=0, max=1, max_open=True),
    default=0.10,
    show_default=True,
    help="Share of device memory kept back for the CUDA context, fragmentation and workspaces.",
)
@click.option(
    "--hardware-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="YAML file adding hardware entries (or set $CARBONBENCH_HARDWARE_FILE).",
)
@format_option("Output format; JSON sizes are in bytes.")
def plan(
    model: str,
    hardware: str,
    dtypes: tuple[str, ...],
    batch_size: int,
    seq_len: int | None,
    mode: str,
    reserve: float,
    hardware_file: str | None,
    fmt: str,
) -> None:
    """Memory for MODEL on one kind of device: a card name or YAML path, a checkpoint
    directory, or a Hugging Face id (facebook/opt-1.3b) in the local cache (only its
    config.json is read).

    Inference: weights, KV cache and activations. Training: weights, gradients, Adam
    states and activations, with and without activation recomputation. Gives the number
    of devices needed (a lower bound: perfect sharding) and whether one device is enough.
    """
    from carbonbench.hardware import get_hardware
    from carbonbench.opt.hub import card_for
    from carbonbench.plan import plan_memory

    card = card_for(model)
    hw = get_hardware(hardware, hardware_file)
    if mode == "training" and dtypes and set(dtypes) == {"int8"}:
        raise click.BadParameter(
            "int8 is for inference only; choose fp32, fp16 or bf16 for training", param_hint="--dtype"
        )
    result = plan_memory(
        card,
        hw,
        dtypes=dtypes or ("fp32", "bf16", "int8"),
        batch_size=batch_size,
        seq_len=seq_len,
        inference=mode in ("inference", "both"),
        training=mode in ("training", "both"),
        reserve_fraction=reserve,
    )
    if fmt == "json":
        echo_json(result.to_dict())
    else:
        echo_safe(render_text(result))  # names and descriptions come from cards and hardware files


def gb(n: int) -> str:
    return f"{n / 1e9:,.1f} GB" if n >= 1e8 else f"{n / 1e6:,.1f} MB"


def render_text(p: Any) -> str:
    out = [
        f"Memory plan: {p.model} ({p.params:,} parameters) on {p.hardware}: "
        f"{gb(p.device_memory_bytes)} per device, {gb(p.usable_bytes_per_device)} usable"
    ]
    if p.inference:
        first = p.inference[0]
        out += ["", f"Inference, batch {first.batch_size} x {first.seq_len} tokens"]
        rows = [
            [
                m.dtype,
                gb(m.weights_bytes),
                gb(m.kv_cache_bytes),
                gb(m.activations_bytes),
                gb(m.total_bytes),
                m.devices_needed,
                "yes" if m.fits_one_device else "no",
            ]
            for m in p.inference
        ]
        out.append(format_table(["dtype", "weights", "KV cache", "activations", "total", "devices", "fits one"], rows))
    if p.training:
        first = p.training[0]
        out += ["", f"Training with Adam, batch {first.batch_size} x {first.seq_len} tokens"]
        rows = [
            [
                m.dtype,
                gb(m.weights_bytes),
                gb(m.gradients_bytes),
                gb(m.optimizer_bytes),
                gb(m.activations_bytes),
                gb(m.total_bytes),
                m.devices_needed,
                "yes" if m.fits_one_device else "no",
                gb(m.activations_recompute_bytes),
                gb(m.total_recompute_bytes),
                m.devices_needed_recompute,
                "yes" if m.fits_one_device_recompute else "no",
            ]
            for m in p.training
        ]
        out.append(
            format_table(
                [
                    "dtype",
                    "weights",
                    "grads",
                    "optimizer",
                    "activations",
                    "total",
                    "devices",
                    "fits one",
                    "act. (recompute)",
                    "total (recompute)",
                    "devices",
                    "fits one",
                ],
                rows,
            )
        )
    out += ["", "Assumptions:"] + [f"  - {a}" for a in p.assumptions]
    return "\n".join(out)
