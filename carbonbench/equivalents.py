"""CO2e in everyday terms, for a lay reader. Each factor names its source.

These are rough comparisons, not accounting: the factors are rounded as their sources
round them, and results are shown to two significant figures at most.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

GRAMS_PER_LB = 453.59237
METRES_PER_MILE = 1609.344


@dataclass(frozen=True)
class Factor:
    name: str  # what one unit is
    unit: str  # the unit counted, plural
    g_co2e: float  # grams CO2e per unit
    source: str


FACTORS: tuple[Factor, ...] = (
    Factor(
        "km driven by an average passenger car",
        "km",
        # "about 400 grams of CO2 per mile" -> 248.5 g/km; tailpipe CO2 only.
        400.0 / (METRES_PER_MILE / 1000.0),
        "US EPA, 'Greenhouse Gas Emissions from a Typical Passenger Vehicle' (EPA-420-F-23-014, "
        "June 2023): about 400 g CO2 per mile, tailpipe only",
    ),
    Factor(
        "New York to San Francisco round trips, one passenger",
        "round trips",
        1984.0 * GRAMS_PER_LB,  # about 900 kg
        "Strubell et al. 2019, 'Energy and Policy Considerations for Deep Learning in NLP' "
        "(ACL), Table 1: air travel, 1 passenger, NY<->SF, 1,984 lbs CO2e",
    ),
    Factor(
        "years of an average person's total footprint (world average)",
        "person-years",
        11023.0 * GRAMS_PER_LB,  # about 5.0 t
        "Strubell et al. 2019, Table 1: human life, average, 1 year, 11,023 lbs CO2e",
    ),
)


@dataclass(frozen=True)
class Equivalent:
    name: str
    value: float  # how many units the emissions equal, rounded to 2 significant figures
    unit: str
    g_co2e_per_unit: float
    source: str

    def to_dict(self) -> dict:
        return asdict(self)

    def text(self) -> str:
        return f"about {_round2(self.value):,g} {self.unit}: {self.name}"


def equivalents(co2e_g: float) -> list[Equivalent]:
    """What ``co2e_g`` grams of CO2e are like, by each factor. Empty for NaN."""
    if co2e_g is None or not math.isfinite(co2e_g):
        return []
    return [Equivalent(f.name, _round2(co2e_g / f.g_co2e), f.unit, f.g_co2e, f.source) for f in FACTORS]


def _round2(x: float) -> float:
    """Two significant figures: the factors are not more precise than that."""
    if x == 0 or not math.isfinite(x):
        return x
    digits = 1 - int(math.floor(math.log10(abs(x))))
    return round(x, digits)
