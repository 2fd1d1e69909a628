"""`carbonbench env`: the hardware and meters carbonbench sees on this machine."""

from __future__ import annotations

import click

from carbonbench.cli.output import chosen_format, echo_json, format_option, json_alias_option


@click.command()
@click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="auto",
    show_default=True,
    help="The device whose meters to show.",
)
@format_option("Output format (default text).", default=None)
@json_alias_option
def env(device: str, fmt: str | None, as_json: bool) -> None:
    """Print the CPU, memory, GPUs, software versions and the energy meters available."""
    from carbonbench import environment
    from carbonbench.meters.select import build_meter_set
    from carbonbench.scenario import MeasurementConfig

    dev = environment.light_device(device)  # "cpu" without torch where no GPU can be
    info = environment.collect(dev)
    info["nvml"] = environment.nvml_facts()
    meters = build_meter_set(dev, MeasurementConfig())
    try:
        info["meters"] = meters.describe()
    finally:
        meters.close()
    if chosen_format(fmt, as_json) == "json":
        echo_json(info)
        return
    for key, value in info.items():
        if key in ("gpus", "meters", "nvml"):
            continue
        click.echo(f"{key:>20}: {value}")
    for gpu in info["gpus"]:
        click.echo(
            f"{'gpu':>20}: {gpu['index']}: {gpu['name']}, {gpu['memory_bytes'] / 2**30:.1f} GiB, sm {gpu['compute_capability']}"
        )
    _echo_nvml(info["nvml"])
    click.echo("meters:")
    for m in info["meters"]:
        detail = ", ".join(f"{k}={v}" for k, v in m.items() if k != "name")
        click.echo(f"  {m['name']}: {detail}")


def _echo_nvml(facts: dict) -> None:
    if not facts.get("available"):
        click.echo(f"{'nvml':>20}: not available ({facts.get('reason')})")
        return
    click.echo(
        f"{'nvml':>20}: driver {facts.get('driver_version')}, CUDA driver {facts.get('cuda_driver_version')}, "
        f"NVML {facts.get('nvml_version')}"
    )
    for d in facts.get("devices", []):
        if "error" in d:
            click.echo(f"{'nvml gpu':>20}: {d['nvml_index']}: {d['error']}")
            continue
        power = "instantaneous power field" if d["power_instant_field"] else "power is a 1 s average (no instant field)"
        click.echo(
            f"{'nvml gpu':>20}: {d['nvml_index']}: {d['name']} ({d['architecture']}), energy counter "
            f"{'yes' if d['energy_counter'] else 'NO'}, {power}, power limit {d['power_limit_w']} W "
            f"(default {d['power_limit_default_w']}), clocks SM {d['sm_clock_mhz']}/{d['max_sm_clock_mhz']} MHz "
            f"mem {d['mem_clock_mhz']}/{d['max_mem_clock_mhz']} MHz, MIG {d['mig_mode'] or 'n/a'}"
        )
