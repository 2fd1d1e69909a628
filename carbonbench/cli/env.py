"""`carbonbench env`: the hardware and meters carbonbench sees on this machine."""

from __future__ import annotations

import json

import click


@click.command()
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="The device whose meters to show.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def env(device: str, as_json: bool) -> None:
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
    if as_json:
        click.echo(json.dumps(info, indent=2, default=str))
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
