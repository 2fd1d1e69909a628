"""`carbonbench estimate`: a whole job's FLOPs, time, energy, CO2e and dollars.

Three modes, picked by the flags given:

- training:  --model CARD | --params N --layers L --d-model D --seq-len S, --tokens N,
             --hardware NAME, --devices N and one of --mfu F, --achieved-tflops F or
             --from RESULTS (the MFU measured there);
- power:     --devices N --hours H, or --device-hours H, at --device-power-w W (or the
             hardware's power);
- inference: --from RESULTS --requests-per-day N --tokens-per-request N.

Training and power accept a host power term (--host-w-per-device, or --host-w-per-node
with --devices-per-node). The text and JSON output is in carbonbench.cli.estimate_text.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from typing import Any

import click

from carbonbench.cli.output import echo_json, format_option
from carbonbench.cli.table import echo_safe
from carbonbench.errors import UserError

_SUFFIX = {"k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12}
_AMOUNT = re.compile(r"^\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?)\s*([kmbgt])?\s*$", re.IGNORECASE)


class Amount(click.ParamType):
    """A positive number written as 300e9, 3e11, 300B, 1.3T or 2,048, at most ``max``."""

    name = "number"

    def __init__(self, integer: bool = False, max: float = 1e18):
        self.integer, self.max = integer, max

    def convert(self, value: Any, param, ctx) -> float | int:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        else:
            match = _AMOUNT.match(str(value).replace(",", "").replace("_", ""))
            if not match:
                self.fail(f"'{value}' is not a number (examples: 300e9, 300B, 1.3T)", param, ctx)
            number = float(match.group(1)) * _SUFFIX.get((match.group(2) or "").lower(), 1.0)
        if not math.isfinite(number) or number <= 0:
            self.fail(f"must be a positive number, got '{value}'", param, ctx)
        if number > self.max:
            self.fail(f"must be at most {self.max:g}, got '{value}'", param, ctx)
        if self.integer:
            if not number.is_integer():
                self.fail(f"must be a whole number, got '{value}'", param, ctx)
            return int(number)
        return number


# Every number has a ceiling far above any real job, and a floor where it divides: whatever
# the flags, every figure stays finite (refused at the flag, never printed as inf or n/a).
positive = functools.partial(click.FloatRange, min=0, min_open=True)  # positive(max=...)
non_negative = functools.partial(click.FloatRange, min=0)
count = functools.partial(click.IntRange, min=1)
# carbonbench.opt.card's ceilings (a test checks they agree), copied so the group's --help reads no card module.
MAX_LAYERS, MAX_WIDTH, MAX_POSITIONS = 4096, 1 << 20, 1 << 24
MAX_DEVICES, WATTS = 100_000_000, 1e6  # watts: a megawatt per device (or of host power per device)
COUNT = count(max=MAX_DEVICES)


def facility_options(func):
    """Grid, PUE, prices and embodied carbon: the flags every estimate shares."""
    options = [
        click.option(
            "--country",
            default=None,
            help="Grid by country: ISO 3166-1 alpha-3 code from codecarbon's data (FRA, USA, IND...).",
        ),
        click.option(
            "--region",
            default=None,
            help="Grid by region within --country, where codecarbon has regions "
            "(US states, Canadian provinces, Chinese provinces, Nordic zones).",
        ),
        click.option(
            "--grid-g-per-kwh",
            type=non_negative(max=1e5),
            default=None,
            help="Grid carbon intensity given explicitly, gCO2e/kWh (instead of --country).",
        ),
        click.option(
            "--pue",
            type=click.FloatRange(min=1.0, max=100),
            default=None,
            help="Power usage effectiveness of the facility (>= 1.0). Default 1.0, or the results' own.",
        ),
        click.option(
            "--usd-per-kwh",
            type=non_negative(max=1e4),
            default=None,
            help="Electricity price, $/kWh. Default 0.15, or the results' own.",
        ),
        click.option(
            "--usd-per-device-hour",
            type=non_negative(max=1e6),
            default=None,
            help="Device rental price, $/device-hour. Default 0, or the results' own.",
        ),
        click.option(
            "--embodied",
            is_flag=True,
            help="Add embodied (manufacturing) carbon, shown separately, amortised per device-hour.",
        ),
        click.option(
            "--embodied-kgco2e",
            type=positive(max=1e7),
            default=None,
            help="Embodied kgCO2e per device (implies --embodied). Default: the hardware table's figure.",
        ),
        click.option(
            "--embodied-source", default=None, help="Where --embodied-kgco2e comes from, shown with the result."
        ),
        click.option(
            "--lifetime-years",
            type=click.FloatRange(min=0.01, max=100),
            default=None,
            help="Device lifetime for amortising embodied carbon (default 6, as in the BLOOM paper).",
        ),
        click.option(
            "--utilisation",
            type=click.FloatRange(min=1e-3, max=1),
            default=None,
            help="Share of its lifetime a device is in use (default 0.85, as in the BLOOM paper).",
        ),
        click.option(
            "--hardware-file",
            type=click.Path(dir_okay=False),
            default=None,
            help="YAML file adding hardware entries (or set $CARBONBENCH_HARDWARE_FILE).",
        ),
        click.option(
            "--host-w-per-device",
            type=non_negative(max=WATTS),
            default=None,
            help="Host power (CPUs, memory, network) per device, W, drawn for every device-hour.",
        ),
        click.option(
            "--host-w-per-node",
            type=non_negative(max=100 * WATTS),
            default=None,
            help="Host power per node, W (needs --devices-per-node), instead of --host-w-per-device.",
        ),
        click.option(
            "--devices-per-node", type=count(max=10**6), default=None, help="Per node, for --host-w-per-node."
        ),
        format_option("Output format; JSON keys carry their units."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


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
@facility_options
def estimate(**opts: Any) -> None:
    """Extrapolate to a whole job: FLOPs, device-hours, wall days, MWh, tCO2e and $.

    \b
    Training:  carbonbench estimate --model opt-175b --tokens 300e9 --hardware a100-80gb \\
                 --devices 992 --achieved-tflops 147 --recompute --country USA
    Power:     carbonbench estimate --devices 8 --device-power-w 700 --hours 24 --country FRA
               carbonbench estimate --device-hours 1082990 --device-power-w 400 --grid-g-per-kwh 57
    Inference: carbonbench estimate --from results/ --requests-per-day 1e6 --tokens-per-request 500
    """
    from carbonbench.cli.estimate_text import render_text

    mode = _mode(opts)
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


# ---- mode selection and flag conflicts -------------------------------------------------

_TRAINING_ONLY = ("model", "params", "layers", "d_model", "seq_len", "tokens", "mfu", "achieved_tflops", "recompute")
_INFERENCE_ONLY = ("requests_per_day", "tokens_per_request")
_HOST = ("host_w_per_device", "host_w_per_node", "devices_per_node")


_FLAG_NAMES = {"results": "--from", "selects": "--select", "fmt": "--format"}


def _flag(name: str) -> str:
    return _FLAG_NAMES.get(name, "--" + name.replace("_", "-"))


def _given(opts: dict, name: str) -> bool:
    value = opts.get(name)
    return value not in (None, False, ())


def _conflict(opts: dict, names, why: str) -> None:
    given = [_flag(n) for n in names if _given(opts, n)]
    if given:
        raise click.UsageError(f"{', '.join(given)} cannot be used {why}")


def _mode(opts: dict) -> str:
    if _given(opts, "grid_g_per_kwh") and (_given(opts, "country") or _given(opts, "region")):
        raise click.UsageError("--grid-g-per-kwh cannot be used with --country/--region: give one grid")
    if _given(opts, "region") and not _given(opts, "country"):
        raise click.UsageError("--region needs --country (e.g. --country CAN --region quebec)")
    if _given(opts, "selects") and not _given(opts, "results"):
        raise click.UsageError("--select picks a point of --from RESULTS; give --from")
    if _given(opts, "host_w_per_node") != _given(opts, "devices_per_node"):
        raise click.UsageError("--host-w-per-node and --devices-per-node go together")
    if _given(opts, "host_w_per_node") and _given(opts, "host_w_per_device"):
        raise click.UsageError("--host-w-per-device and --host-w-per-node cannot be used together: give one")
    if any(_given(opts, n) for n in _INFERENCE_ONLY):
        _conflict(
            opts,
            _TRAINING_ONLY + _HOST + ("hours", "device_hours", "devices", "device_power_w", "hardware"),
            "in inference mode (--requests-per-day): the measured point fixes the model, devices and power",
        )
        missing = [_flag(n) for n in ("results",) + _INFERENCE_ONLY if not _given(opts, n)]
        if missing:
            raise click.UsageError(f"inference mode needs {', '.join(missing)}")
        return "inference"
    if _given(opts, "hours") or _given(opts, "device_hours"):
        which = "--device-hours" if _given(opts, "device_hours") else "--hours"
        _conflict(opts, _TRAINING_ONLY + ("results",), f"in power mode ({which})")
        if _given(opts, "hours") and _given(opts, "device_hours"):
            raise click.UsageError("--hours and --device-hours cannot be used together: give one")
        if _given(opts, "hours") and not _given(opts, "devices"):
            raise click.UsageError("power mode with --hours needs --devices")
        if not (_given(opts, "device_power_w") or _given(opts, "hardware")):
            raise click.UsageError("power mode needs --device-power-w (or --hardware, to use its power)")
        return "power"
    if _given(opts, "model") and _given(opts, "params"):
        raise click.UsageError("--model and --params cannot be used together: give one")
    if not (_given(opts, "model") or _given(opts, "params")):
        raise click.UsageError(
            "nothing to estimate: give --model/--params for training, --hours or --device-hours for power, "
            "or --requests-per-day with --from for inference"
        )
    if _given(opts, "model") and (_given(opts, "layers") or _given(opts, "d_model")):
        raise click.UsageError("--layers and --d-model describe a --params model; --model's card has its own")
    throughput = [_flag(n) for n in ("mfu", "achieved_tflops", "results") if _given(opts, n)]
    if len(throughput) > 1:
        raise click.UsageError(f"{' and '.join(throughput)} cannot be used together: give one throughput")
    if not throughput:
        raise click.UsageError("training mode needs a throughput: --mfu, --achieved-tflops or --from RESULTS")
    if not _given(opts, "devices"):
        raise click.UsageError("training mode needs --devices")
    if not _given(opts, "hardware") and not _given(opts, "results"):
        from carbonbench.hardware import known_hardware

        raise click.UsageError(
            f"training mode needs --hardware, one of: {', '.join(known_hardware(opts.get('hardware_file')))}"
        )
    return "training"


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
