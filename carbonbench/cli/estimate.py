"""`carbonbench estimate`: a whole job's FLOPs, time, energy, CO2e and dollars.

Three modes, picked by the flags given:

- training:  --model CARD | --params N --layers L --d-model D --seq-len S, --tokens N,
             --hardware NAME, --devices N and one of --mfu F, --achieved-tflops F or
             --from RESULTS (the MFU measured there);
- power:     --devices N --hours H, or --device-hours H, at --device-power-w W (or the
             hardware's power);
- inference: --from RESULTS --requests-per-day N --tokens-per-request N;
- service:   --from SERVE-RESULTS --requests-per-day N --tpot-ms T [--ttft-ms T]: the
             cheapest served-load setting meeting the deadlines, scaled (carbonbench.serve_estimate).

Training and power accept a host power term (--host-w-per-device, or --host-w-per-node
with --devices-per-node). The text and JSON output is in carbonbench.cli.estimate_text.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import click

from carbonbench.cli.estimate_mode import _conflict, _mode
from carbonbench.cli.estimate_options import (  # noqa: F401 (Amount and the ranges are imported from here)
    COUNT,
    MAX_LAYERS,
    MAX_POSITIONS,
    MAX_WIDTH,
    WATTS,
    Amount,
    count,
    facility_options,
    non_negative,
    positive,
)
from carbonbench.cli.output import echo_json
from carbonbench.cli.table import echo_safe
from carbonbench.errors import UserError


@click.command()
@click.option("--model", default=None, help="Model card name or YAML path (e.g. opt-175b): gives the architecture.")
@click.option(
    "--params",
    type=Amount(integer=True, max=1e15),
    default=None,
    help="Parameter count N, instead of --model (e.g. 175e9); needs --layers, --d-model, --seq-len.",
)
@click.option("--layers", type=count(max=MAX_LAYERS), default=None, help="Transformer layers, with --params.")
@click.option("--d-model", type=count(max=MAX_WIDTH), default=None, help="Model width (heads x head), with --params.")
@click.option(
    "--seq-len",
    type=count(max=MAX_POSITIONS),
    default=None,
    help="Training sequence length (attention FLOPs grow with it). Default with --model: the card's context.",
)
@click.option(
    "--tokens",
    type=Amount(max=1e18),
    default=None,
    help="Training tokens D (e.g. 300e9). Default: the card's published figure, if any.",
)
@click.option("--hardware", default=None, help="Device kind from the hardware table (e.g. a100-80gb, h100-sxm).")
@click.option("--devices", type=COUNT, default=None, help="Number of devices.")
@click.option(
    "--mfu",
    type=click.FloatRange(min=1e-6, max=1),
    default=None,
    help="Model FLOPs utilisation: model FLOPs per second / the device's dense bf16 peak (0-1).",
)
@click.option(
    "--achieved-tflops",
    type=click.FloatRange(min=1e-6, max=1e6),
    default=None,
    help="Achieved hardware TFLOP/s per device, recomputation counted with --recompute (as OPT and BLOOM "
    "published theirs), instead of --mfu.",
)
@click.option(
    "--recompute",
    is_flag=True,
    help="Activation recomputation: hardware FLOPs add one forward of every layer; model FLOPs do not change.",
)
@click.option(
    "--device-power-w",
    type=positive(max=WATTS),
    default=None,
    help="Average power per device, W. Default: the hardware's mean power if its file gives one, else its TDP.",
)
@click.option("--hours", type=positive(max=1e6), default=None, help="Wall-clock hours (power mode, with --devices).")
@click.option(
    "--device-hours",
    type=Amount(max=1e12),
    default=None,
    help="Device-hours, as footprint papers publish them (power mode, instead of --devices and --hours).",
)
@click.option(
    "--from",
    "results",
    type=click.Path(exists=True),
    default=None,
    help="Results file or directory: the MFU measured there (training) or the point to serve (inference).",
)
@click.option(
    "--select",
    "selects",
    multiple=True,
    metavar="KEY=VALUE",
    help="Pick one point of --from by a column, e.g. --select batch_size=8 (repeatable).",
)
@click.option("--requests-per-day", type=Amount(max=1e15), default=None, help="Inference load: requests per day.")
@click.option("--tokens-per-request", type=Amount(max=1e9), default=None, help="Inference load: tokens per request.")
@click.option("--tpot-ms", type=positive(max=1e6), default=None, help="Service mode: TPOT p90 deadline (ms).")
@click.option("--ttft-ms", type=positive(max=1e8), default=None, help="Service mode: TTFT p90 deadline (ms).")
@facility_options
def estimate(**opts: Any) -> None:
    """Extrapolate to a whole job: FLOPs, device-hours, wall days, MWh, tCO2e and $.

    \b
    Training:  carbonbench estimate --model opt-175b --tokens 300e9 --hardware a100-80gb \\
                 --devices 992 --achieved-tflops 147 --recompute --country USA
    Power:     carbonbench estimate --devices 8 --device-power-w 700 --hours 24 --country FRA
               carbonbench estimate --device-hours 1082990 --device-power-w 400 --grid-g-per-kwh 57
    Inference: carbonbench estimate --from results/ --requests-per-day 1e6 --tokens-per-request 500
    Service:   carbonbench estimate --from serve-results/ --requests-per-day 1e6 --tpot-ms 50
    """
    from carbonbench.cli.estimate_text import render_text

    mode = _mode(opts)
    if mode == "serve":
        from carbonbench.cli.estimate_serve import service

        return service(opts, _load_results(opts), _selection(opts), grid_from(opts, default=False))
    if mode == "inference":
        result = _inference(opts)
    elif mode == "power":
        result = _power(opts)
    else:
        result = _training(opts)
    if opts["fmt"] == "json":
        echo_json(result.to_dict())
    else:
        echo_safe(render_text(result))  # names and descriptions come from cards and hardware files


# ---- the three modes --------------------------------------------------------------------


def grid_from(opts: dict, *, default: bool = True):
    """The grid the flags name; with none, CarbonConfig's default country (said so) or None."""
    from carbonbench.grid import explicit_intensity, resolve
    from carbonbench.settings import CarbonConfig

    if opts.get("grid_g_per_kwh") is not None:
        return explicit_intensity(opts["grid_g_per_kwh"], "--grid-g-per-kwh")
    if opts.get("country"):
        return resolve(opts["country"], opts.get("region"))
    if not default:
        return None
    g = CarbonConfig().intensity()
    return dataclasses.replace(g, source=f"{g.source}; the default country, choose with --country or --grid-g-per-kwh")


def facility_from(opts: dict):
    """The Facility the flags describe, with the defaults named in its assumptions."""
    from carbonbench.estimate import Facility
    from carbonbench.settings import CostConfig

    defaults = CostConfig()
    kwh, hour, pue = opts.get("usd_per_kwh"), opts.get("usd_per_device_hour"), opts.get("pue")
    cost = CostConfig(
        defaults.usd_per_kwh if kwh is None else kwh, defaults.usd_per_device_hour if hour is None else hour
    )
    notes = [f"{what} default" for what, v in (("$/kWh", kwh), ("$/device-hour", hour)) if v is None]
    return Facility(
        grid=grid_from(opts),
        pue=1.0 if pue is None else pue,
        cost=cost,
        embodied=_embodied(opts),
        pue_note="default" if pue is None else "given",
        cost_note=", ".join(notes),
    )


def host_from(opts: dict):
    """Host power per device from --host-w-per-device, or --host-w-per-node / --devices-per-node."""
    from carbonbench.estimate import Host

    if opts.get("host_w_per_node") is not None:
        per_node, n = opts["host_w_per_node"], opts["devices_per_node"]
        return Host(per_node / n, f"{per_node:g} W per node of {n} devices, given")
    if opts.get("host_w_per_device") is not None:
        return Host(opts["host_w_per_device"], "given")
    return Host()


def _embodied(opts: dict):
    from carbonbench.settings import EmbodiedConfig

    enabled = bool(opts.get("embodied")) or opts.get("embodied_kgco2e") is not None
    if not enabled:
        _conflict(opts, ("embodied_source", "lifetime_years", "utilisation"), "without --embodied")
        return EmbodiedConfig()
    if opts.get("embodied_source") and opts.get("embodied_kgco2e") is None:
        raise click.UsageError("--embodied-source describes --embodied-kgco2e; give that too")
    kwargs: dict[str, Any] = {"enabled": True}
    if opts.get("embodied_kgco2e") is not None:
        kwargs["kgco2e_per_device"] = opts["embodied_kgco2e"]
        kwargs["source"] = opts.get("embodied_source") or "given with --embodied-kgco2e"
    if opts.get("lifetime_years") is not None:
        kwargs["lifetime_years"] = opts["lifetime_years"]
    if opts.get("utilisation") is not None:
        kwargs["utilisation"] = opts["utilisation"]
    return EmbodiedConfig(**kwargs)


def _load_results(opts: dict):
    from carbonbench.results import load

    df = load(opts["results"])
    if df.empty:
        raise UserError(f"{opts['results']}: no measured points in these results")
    return df


def _selection(opts: dict) -> dict[str, str]:
    chosen = {}
    for item in opts.get("selects") or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"'{item}' is not KEY=VALUE", param_hint="--select")
        chosen[key.strip()] = value.strip()
    return chosen


def _training(opts: dict):
    from carbonbench.estimate import estimate_training
    from carbonbench.hardware import get_hardware
    from carbonbench.opt.card import find_card

    facility = facility_from(opts)
    notes: list[str] = []
    model, arch, params, tokens = None, None, opts.get("params"), opts.get("tokens")
    if opts.get("model"):
        card = find_card(opts["model"])
        model, arch, params = card.name, card.architecture, card.param_count()
        if tokens is None and card.published.training_tokens:
            tokens = card.published.training_tokens
            source = card.published.sources.get("training_tokens", "the model card")
            notes.append(f"D = {tokens:.4g} tokens from the {card.name} card ({source})")
    if tokens is None:
        raise click.UsageError("training mode needs --tokens (the card publishes no training tokens)")

    hardware = get_hardware(opts["hardware"], opts.get("hardware_file")) if opts.get("hardware") else None
    mfu, achieved, source = opts.get("mfu"), None, "given with --mfu"
    if opts.get("achieved_tflops") is not None:
        achieved, source = opts["achieved_tflops"] * 1e12, "given with --achieved-tflops"
    if opts.get("results"):
        from carbonbench.measured import select_point  # pandas: only for a measured MFU

        point = select_point(
            _load_results(opts),
            source=str(opts["results"]),
            workloads=("train",),
            select=_selection(opts),
            hardware_file=opts.get("hardware_file"),
        )
        mfu = point.mfu
        if mfu is None:
            why = (
                "its results predate model FLOPs (they record hardware FLOPs only, so only an HFU)"
                if point.hfu is not None
                else "it needs a 16-bit run on a device in the hardware table (CPU and fp32 runs have none)"
            )
            raise UserError(
                f"{opts['results']}: no MFU for {point.description}: {why}; give --mfu or --achieved-tflops"
            )
        source = f"measured: {point.description}"
        if hardware is None:
            hardware = point.hardware
        elif hardware.name != point.hardware.name:
            notes.append(
                f"the MFU measured on {point.hardware.description} is assumed to hold on {hardware.description}"
            )
        notes.append(
            f"the MFU of the measured {point.model} step is assumed to hold for the whole {model or 'model'} job"
        )
    result = estimate_training(
        arch=arch,
        params=params,
        layers=opts.get("layers"),
        d_model=opts.get("d_model"),
        seq_len=opts.get("seq_len"),
        tokens=tokens,
        hardware=hardware,
        devices=opts["devices"],
        facility=facility,
        mfu=mfu,
        achieved_flops_per_s=achieved,
        throughput_source=source,
        device_power_w=opts.get("device_power_w"),
        host=host_from(opts),
        recompute=opts["recompute"],
        model=model,
    )
    return dataclasses.replace(result, assumptions=tuple(notes) + result.assumptions)


def _power(opts: dict):
    from carbonbench.estimate import estimate_power
    from carbonbench.hardware import get_hardware

    hardware = get_hardware(opts["hardware"], opts.get("hardware_file")) if opts.get("hardware") else None
    return estimate_power(
        devices=opts.get("devices"),
        hours=opts.get("hours"),
        device_hours=opts.get("device_hours"),
        facility=facility_from(opts),
        device_power_w=opts.get("device_power_w"),
        hardware=hardware,
        host=host_from(opts),
    )


def _inference(opts: dict):
    from carbonbench.measured import estimate_inference, facility_for_point, select_point

    point = select_point(
        _load_results(opts),
        source=str(opts["results"]),
        workloads=("prefill", "decode"),
        select=_selection(opts),
        hardware_file=opts.get("hardware_file"),
    )
    facility = facility_for_point(
        point,
        grid=grid_from(opts, default=False),
        pue=opts.get("pue"),
        usd_per_kwh=opts.get("usd_per_kwh"),
        usd_per_device_hour=opts.get("usd_per_device_hour"),
        embodied=_embodied(opts),
    )
    return estimate_inference(
        point,
        requests_per_day=opts["requests_per_day"],
        tokens_per_request=opts["tokens_per_request"],
        facility=facility,
    )
