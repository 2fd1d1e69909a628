"""The flags of `carbonbench estimate`: number types with ceilings, and the facility options every mode shares."""

from __future__ import annotations

import functools
import math
import re
from typing import Any

import click

from carbonbench.cli.output import format_option

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
# carbonbench.opt.card's ceilings (a test checks they agree): importing them would import torch.
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
