"""`carbonbench env`: the hardware and meters carbonbench sees on this machine."""

from __future__ import annotations

import click

from carbonbench.cli.output import chosen_format, echo_json, format_option, json_alias_option


@click.command()
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="The device whose meters to show.")
@format_option("Output format (default text).", default=None)
@json_alias_option
def env(device: str, fmt: str | None, as_json: bool) -> None:
    """Print the CPU, memory, GPUs, software versions and the energy meters available."""
    from carbonbench import environment
    from carbonbench.meters.select import build_meter_set
    from carbonbench.scenario import MeasurementConfig

    dev = environment.resolve_device(device)
    info = environment.collect(dev)
    meters = build_meter_set(dev, MeasurementConfig())
    try:
        info["meters"] = meters.describe()
    finally:
        meters.close()
    if chosen_format(fmt, as_json) == "json":
        echo_json(info)
        return
    for key, value in info.items():
        if key in ("gpus", "meters"):
            continue
        click.echo(f"{key:>20}: {value}")
    for gpu in info["gpus"]:
        click.echo(f"{'gpu':>20}: {gpu['index']}: {gpu['name']}, {gpu['memory_bytes'] / 2**30:.1f} GiB, sm {gpu['compute_capability']}")
    click.echo("meters:")
    for m in info["meters"]:
        detail = ", ".join(f"{k}={v}" for k, v in m.items() if k != "name")
        click.echo(f"  {m['name']}: {detail}")
