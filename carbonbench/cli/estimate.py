"""`carbonbench estimate`: a whole job's FLOPs, time, energy, CO2e and dollars.

Three modes, picked by the flags given:

- training:  --model CARD | --params N, --tokens N, --hardware NAME, --devices N and one of
             --mfu F, --achieved-tflops F or --from RESULTS (the MFU measured there);
- power:     --devices N --device-power-w W --hours H (first principles);
- inference: --from RESULTS --requests-per-day N --tokens-per-request N.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Optional

import click

from carbonbench.cli.output import echo_json, format_option

from carbonbench.errors import UserError

_SUFFIX = {"k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12}
_AMOUNT = re.compile(r"^\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?)\s*([kmbgt])?\s*$", re.IGNORECASE)


class Amount(click.ParamType):
    """A positive number written as 300e9, 3e11, 300B, 1.3T or 2,048."""

    name = "number"

    def __init__(self, integer: bool = False):
        self.integer = integer

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
        if self.integer:
            if not number.is_integer():
                self.fail(f"must be a whole number, got '{value}'", param, ctx)
            return int(number)
        return number


POSITIVE = click.FloatRange(min=0, min_open=True)
NON_NEGATIVE = click.FloatRange(min=0)
COUNT = click.IntRange(min=1)


def facility_options(func):
    """Grid, PUE, prices and embodied carbon: the flags every estimate shares."""
    options = [
        click.option("--country", default=None,
                     help="Grid by country: ISO 3166-1 alpha-3 code from codecarbon's data (FRA, USA, IND...)."),
        click.option("--region", default=None,
                     help="Grid by region within --country, where codecarbon has regions "
                          "(US states, Canadian provinces, Chinese provinces, Nordic zones)."),
        click.option("--grid-g-per-kwh", type=NON_NEGATIVE, default=None,
                     help="Grid carbon intensity given explicitly, gCO2e/kWh (instead of --country)."),
        click.option("--pue", type=click.FloatRange(min=1.0), default=None,
                     help="Power usage effectiveness of the facility (>= 1.0). Default 1.0, or the results' own."),
        click.option("--usd-per-kwh", type=NON_NEGATIVE, default=None,
                     help="Electricity price, $/kWh. Default 0.15, or the results' own."),
        click.option("--usd-per-device-hour", type=NON_NEGATIVE, default=None,
                     help="Device rental price, $/device-hour. Default 0, or the results' own."),
        click.option("--embodied", is_flag=True,
                     help="Add embodied (manufacturing) carbon, shown separately, amortised per device-hour."),
        click.option("--embodied-kgco2e", type=POSITIVE, default=None,
                     help="Embodied kgCO2e per device (implies --embodied). Default: the hardware table's figure."),
        click.option("--embodied-source", default=None,
                     help="Where --embodied-kgco2e comes from, shown with the result."),
        click.option("--lifetime-years", type=POSITIVE, default=None,
                     help="Device lifetime for amortising embodied carbon (default 6, as in the BLOOM paper)."),
        click.option("--utilisation", type=click.FloatRange(min=0, max=1, min_open=True), default=None,
                     help="Share of its lifetime a device is in use (default 0.85, as in the BLOOM paper)."),
        click.option("--hardware-file", type=click.Path(dir_okay=False), default=None,
                     help="YAML file adding hardware entries (or set $CARBONBENCH_HARDWARE_FILE)."),
        format_option("Output format; JSON keys carry their units."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@click.command()
@click.option("--model", default=None, help="Model card name or YAML path (e.g. opt-175b): gives N, the parameter count.")
@click.option("--params", type=Amount(integer=True), default=None, help="Parameter count N, instead of --model (e.g. 175e9).")
@click.option("--tokens", type=Amount(), default=None,
              help="Training tokens D (e.g. 300e9). Default: the card's published figure, if any.")
@click.option("--hardware", default=None, help="Device kind from the hardware table (e.g. a100-80gb, h100-sxm).")
@click.option("--devices", type=COUNT, default=None, help="Number of devices.")
@click.option("--mfu", type=click.FloatRange(min=0, max=1, min_open=True), default=None,
              help="Achieved fraction of the device's dense bf16 peak (0-1).")
@click.option("--achieved-tflops", type=POSITIVE, default=None, help="Achieved TFLOP/s per device, instead of --mfu.")
@click.option("--recompute", is_flag=True, help="Count activation recomputation: 8 N D FLOPs instead of 6 N D.")
@click.option("--device-power-w", type=POSITIVE, default=None,
              help="Average power per device, W. Default: the hardware's TDP.")
@click.option("--hours", type=POSITIVE, default=None, help="Wall-clock hours (power mode: --devices, --device-power-w, --hours).")
@click.option("--from", "results", type=click.Path(exists=True), default=None,
              help="Results file or directory: the MFU measured there (training) or the point to serve (inference).")
@click.option("--select", "selects", multiple=True, metavar="KEY=VALUE",
              help="Pick one point of --from by a column, e.g. --select batch_size=8 (repeatable).")
@click.option("--requests-per-day", type=Amount(), default=None, help="Inference load: requests per day.")
@click.option("--tokens-per-request", type=Amount(), default=None, help="Inference load: tokens per request.")
@facility_options
def estimate(**opts: Any) -> None:
    """Extrapolate to a whole job: FLOPs, device-hours, wall days, MWh, tCO2e and $.

    \b
    Training:  carbonbench estimate --model opt-175b --tokens 300e9 --hardware a100-80gb \\
                 --devices 992 --achieved-tflops 147 --recompute --grid-g-per-kwh 230
    Power:     carbonbench estimate --devices 8 --device-power-w 700 --hours 24 --country FRA
    Inference: carbonbench estimate --from results/ --requests-per-day 1e6 --tokens-per-request 500
    """
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
        click.echo(render_text(result))


# ---- mode selection and flag conflicts -------------------------------------------------

_TRAINING_ONLY = ("model", "params", "tokens", "mfu", "achieved_tflops", "recompute")
_INFERENCE_ONLY = ("requests_per_day", "tokens_per_request")


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
    if any(_given(opts, n) for n in _INFERENCE_ONLY):
        _conflict(opts, _TRAINING_ONLY + ("hours", "devices", "device_power_w", "hardware"),
                  "in inference mode (--requests-per-day): the measured point fixes the model and devices")
        missing = [_flag(n) for n in ("results",) + _INFERENCE_ONLY if not _given(opts, n)]
        if missing:
            raise click.UsageError(f"inference mode needs {', '.join(missing)}")
        return "inference"
    if _given(opts, "hours"):
        _conflict(opts, _TRAINING_ONLY + ("results",), "in power mode (--hours)")
        if not _given(opts, "devices"):
            raise click.UsageError("power mode needs --devices")
        if not (_given(opts, "device_power_w") or _given(opts, "hardware")):
            raise click.UsageError("power mode needs --device-power-w (or --hardware, to use its TDP)")
        return "power"
    if _given(opts, "model") and _given(opts, "params"):
        raise click.UsageError("--model and --params cannot be used together: give one")
    if not (_given(opts, "model") or _given(opts, "params")):
        raise click.UsageError(
            "nothing to estimate: give --model/--params for training, --hours for power, "
            "or --requests-per-day with --from for inference"
        )
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
    from carbonbench.carbon import CarbonConfig
    from carbonbench.grid import explicit_intensity, resolve

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
    from carbonbench.carbon import CostConfig
    from carbonbench.estimate import Facility

    defaults = CostConfig()
    kwh, hour, pue = opts.get("usd_per_kwh"), opts.get("usd_per_device_hour"), opts.get("pue")
    cost = CostConfig(defaults.usd_per_kwh if kwh is None else kwh,
                      defaults.usd_per_device_hour if hour is None else hour)
    notes = [f"{what} default" for what, v in (("$/kWh", kwh), ("$/device-hour", hour)) if v is None]
    return Facility(
        grid=grid_from(opts), pue=1.0 if pue is None else pue, cost=cost, embodied=_embodied(opts),
        pue_note="default" if pue is None else "given", cost_note=", ".join(notes),
    )


def _embodied(opts: dict):
    from carbonbench.carbon import EmbodiedConfig

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
    from carbonbench.estimate import estimate_training, select_point
    from carbonbench.hardware import get_hardware
    from carbonbench.opt.card import find_card

    facility = facility_from(opts)
    notes: list[str] = []
    model, params, tokens = None, opts.get("params"), opts.get("tokens")
    if opts.get("model"):
        card = find_card(opts["model"])
        model, params = card.name, card.param_count()
        if tokens is None and card.published.training_tokens:
            tokens = card.published.training_tokens
            source = card.published.sources.get("training_tokens", "the model card")
            notes.append(f"D = {tokens:.4g} tokens from the {card.name} card ({source})")
    if tokens is None:
        raise click.UsageError("training mode needs --tokens (the card publishes no training tokens)")

    hardware = get_hardware(opts["hardware"], opts.get("hardware_file")) if opts.get("hardware") else None
    mfu, achieved, mfu_source = opts.get("mfu"), None, "given with --mfu"
    if opts.get("achieved_tflops") is not None:
        achieved, mfu_source = opts["achieved_tflops"] * 1e12, "given with --achieved-tflops"
    if opts.get("results"):
        point = select_point(_load_results(opts), source=str(opts["results"]), workloads=("train",),
                             select=_selection(opts), hardware_file=opts.get("hardware_file"))
        mfu = point.mfu
        if mfu is None:
            raise UserError(
                f"{opts['results']}: no MFU for {point.description}: it needs a 16-bit run on a device "
                "in the hardware table (CPU and fp32 runs have none); give --mfu or --achieved-tflops"
            )
        mfu_source = f"MFU {mfu:.1%} measured: {point.description}"
        if hardware is None:
            hardware = point.hardware
        elif hardware.name != point.hardware.name:
            notes.append(f"the MFU measured on {point.hardware.description} is assumed to hold on "
                         f"{hardware.description}")
        notes.append(f"the MFU of the measured {point.model} step is assumed to hold for the whole "
                     f"{model or 'model'} job")
    result = estimate_training(
        params=params, tokens=tokens, hardware=hardware, devices=opts["devices"], facility=facility,
        mfu=mfu, achieved_flops_per_s=achieved, mfu_source=mfu_source,
        device_power_w=opts.get("device_power_w"), recompute=opts["recompute"], model=model,
    )
    return dataclasses.replace(result, assumptions=tuple(notes) + result.assumptions)


def _power(opts: dict):
    from carbonbench.estimate import estimate_power
    from carbonbench.hardware import get_hardware

    hardware = get_hardware(opts["hardware"], opts.get("hardware_file")) if opts.get("hardware") else None
    return estimate_power(devices=opts["devices"], hours=opts["hours"], facility=facility_from(opts),
                          device_power_w=opts.get("device_power_w"), hardware=hardware)


def _inference(opts: dict):
    from carbonbench.estimate import estimate_inference, facility_for_point, select_point

    point = select_point(_load_results(opts), source=str(opts["results"]),
                         workloads=("prefill", "decode"), select=_selection(opts),
                         hardware_file=opts.get("hardware_file"))
    facility = facility_for_point(
        point, grid=grid_from(opts, default=False), pue=opts.get("pue"), usd_per_kwh=opts.get("usd_per_kwh"),
        usd_per_device_hour=opts.get("usd_per_device_hour"), embodied=_embodied(opts),
    )
    return estimate_inference(point, requests_per_day=opts["requests_per_day"],
                              tokens_per_request=opts["tokens_per_request"], facility=facility)


# ---- output -----------------------------------------------------------------------------

def num(x: Optional[float], digits: int = 4) -> str:
    """Significant figures without scientific notation below 10^digits, commas above."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    if x != 0 and (abs(x) >= 10**digits):
        return f"{round(x):,}" if abs(x) < 1e15 else f"{x:.{digits - 1}e}"
    return f"{x:.{digits}g}"


def render_text(r) -> str:
    d = r.to_dict()
    lines: list[tuple[str, str]] = []
    if d["mode"] == "training":
        title = f"Training estimate: {d['model'] or num(d['params']) + ' parameters'} on {d['devices']:,} x {d['hardware']}"
        lines += [
            ("FLOPs", f"{d['flops']:.3e} ({d['flops_per_param_token']} N D, N = {d['params']:,}, D = {d['tokens']:.4g})"),
            ("throughput", f"{num(d['achieved_flops_per_s_per_device'] / 1e12)} TFLOP/s per device "
                           f"(MFU {d['mfu']:.1%} of {num(d['peak_flops_per_s_per_device'] / 1e12)})"),
            ("wall time", f"{num(d['wall_days'], 3)} days ({num(d['wall_hours'], 3)} h)"),
            ("device-hours", num(d["device_hours"])),
        ]
    elif d["mode"] == "power":
        title = f"Power estimate: {d['devices']:,} devices x {num(d['device_power_w'])} W x {num(d['wall_hours'])} h"
        lines += [("device-hours", num(d["device_hours"]))]
    else:
        title = f"Inference estimate: {d['point']}"
        lines += [
            ("load", f"{num(d['requests_per_day'])} requests/day x {num(d['tokens_per_request'])} tokens "
                     f"= {num(d['tokens_per_day'])} tokens/day"),
            ("efficiency", f"{num(d['joules_per_token'])} J/token, {num(d['tokens_per_s'])} tokens/s"),
            ("device-hours", f"{num(d['device_hours_per_day'])} per day ({num(d['devices_busy'], 3)} devices busy)"),
            ("energy", f"{num(d['energy_kwh_per_day'])} kWh/day (device {num(d['it_energy_kwh_per_day'])} kWh, "
                       f"PUE {float(d['pue'])}); {num(d['energy_mwh_per_year'])} MWh/year"),
            ("operational CO2e", f"{num(d['co2e_kg_per_day'])} kg/day at {num(d['grid_g_per_kwh'])} gCO2e/kWh; "
                                 f"{num(d['co2e_t_per_year'])} t/year"),
            ("embodied CO2e", "not included" if d["embodied_co2e_kg_per_day"] is None
             else f"{num(d['embodied_co2e_kg_per_day'])} kg/day (separate from operational)"),
            ("cost", f"${num(d['cost_usd_per_day'])}/day (electricity ${num(d['electricity_cost_usd_per_day'])} "
                     f"+ rental ${num(d['rental_cost_usd_per_day'])}); ${num(d['cost_usd_per_year'])}/year"),
        ]
    if d["mode"] in ("training", "power"):
        lines += [
            ("energy", f"{num(d['energy_mwh'])} MWh (devices {num(d['it_energy_mwh'])} MWh x PUE {float(d['pue'])})"),
            ("operational CO2e", f"{num(d['co2e_t'])} tCO2e at {num(d['grid_g_per_kwh'])} gCO2e/kWh"),
            ("embodied CO2e", "not included" if d["embodied_co2e_t"] is None
             else f"{num(d['embodied_co2e_t'])} tCO2e (separate from operational)"),
            ("cost", f"${num(d['cost_usd'])} (electricity ${num(d['electricity_cost_usd'])} "
                     f"+ rental ${num(d['rental_cost_usd'])})"),
        ]
    lines.append(("grid source", d["grid_source"]))
    width = max(len(k) for k, _ in lines)
    out = [title] + [f"  {k.ljust(width)}  {v}" for k, v in lines]
    # A lay reader gets nothing from "3.5e-05 flights"; JSON keeps every factor.
    eq = [e for e in d.get("equivalents") or [] if e["value"] >= 0.01]
    if eq:
        per = " per day" if d["mode"] == "inference" else ""
        out.append(f"Operational CO2e{per} is about as much as:")
        out += [f"  {num(e['value'], 2)} {e['unit']}: {e['name']} [{e['source']}]" for e in eq]
    out.append("Assumptions:")
    out += [f"  - {a}" for a in d["assumptions"]]
    return "\n".join(out)

