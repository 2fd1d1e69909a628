"""Grid carbon intensity from the data files bundled with codecarbon, read offline.

codecarbon is the reference for which number applies where, so this module follows its
rules (``codecarbon.core.emissions.Emissions``), with two deliberate differences:

- an unknown country or region is an error naming it, never the world average that
  codecarbon falls back to with only a log line;
- every intensity carries a ``source`` string naming the file and the entry it came from.

The files are found with ``importlib.util.find_spec`` so that importing codecarbon (and
its logging and hardware set-up) is not needed just to read a table.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from carbonbench.config import closest
from carbonbench.errors import ConfigError

# codecarbon's own conversion (codecarbon.core.units.EmissionsPerKWh.LBS_MWH_TO_KG_KWH).
G_PER_KWH_PER_LBS_PER_MWH = 0.45359237

# Per-fuel factors codecarbon applies to Canadian provincial generation mixes
# (Emissions._region_energy_mix_to_emissions_rate), in g/kWh. Its source:
# https://github.com/responsibleproblemsolving/energy-usage#conversion-to-co2
_CANADA_FUEL_G_PER_KWH = {
    "coal": 995.725971,
    "petroleum": 816.6885263,
    "naturalGas": 743.8415916,
}

_NORDIC_ZONES = {
    "SWE": ("SE1", "SE2", "SE3", "SE4"),
    "NOR": ("NO1", "NO2", "NO3", "NO4", "NO5"),
    "FIN": ("FI",),
}
_CHINA_SUFFIX = re.compile(r"\s+(autonomous region|municipality|province|sheng|shi|zizhiqu)$")
REGIONAL_COUNTRIES = ("USA", "CAN", "CHN", *_NORDIC_ZONES)


@dataclass(frozen=True)
class GridIntensity:
    """A grid's carbon intensity and where the number came from."""

    g_per_kwh: float
    source: str
    country: Optional[str] = None
    region: Optional[str] = None

    def __post_init__(self):
        if not (math.isfinite(self.g_per_kwh) and self.g_per_kwh >= 0):
            raise ConfigError(f"grid intensity must be a finite number >= 0 gCO2e/kWh (got {self.g_per_kwh!r})")

    @property
    def label(self) -> str:
        """Short human name: 'FRA', 'CAN/quebec' or 'explicit'."""
        if self.country is None:
            return "explicit"
        return f"{self.country}/{self.region}" if self.region else self.country


def data_dir() -> Path:
    spec = importlib.util.find_spec("codecarbon")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("codecarbon is not installed: its bundled grid data is needed for carbon intensity")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "private_infra"


@functools.lru_cache(maxsize=1)
def codecarbon_version() -> str:
    try:
        return importlib.metadata.version("codecarbon")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


@functools.lru_cache(maxsize=None)
def _read(relative: str) -> dict:
    path = data_dir() / relative
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read codecarbon grid data {path}: {exc}") from None


def _source(file: str, entry: str) -> str:
    return f"codecarbon {codecarbon_version()} {file}: {entry}"


def known_countries() -> dict[str, str]:
    """ISO 3166-1 alpha-3 code -> country name, for every country codecarbon has."""
    return {code: row.get("country_name", code) for code, row in _read("global_energy_mix.json").items()}


def known_regions(country: str) -> list[str]:
    """The region names codecarbon has for ``country`` (empty when it has none)."""
    code = _country_code(country)
    if code == "USA":
        return [k for k in _read("2023/usa_emissions.json") if not k.startswith("_")]
    if code == "CAN":
        return list(_read("2023/canada_energy_mix.json"))
    if code == "CHN":
        return [
            names[0] for names in (p["names"] for p in _read("2023/china_provincial_emissions.json")["data"].values())
        ]
    return list(_NORDIC_ZONES.get(code, ()))


def _country_code(country: str) -> str:
    """Accept an alpha-3 code in any case, or a country name as codecarbon spells it."""
    text = " ".join(str(country).split())
    mix = _read("global_energy_mix.json")
    if text.upper() in mix:
        return text.upper()
    by_name = {row.get("country_name", "").lower(): code for code, row in mix.items()}
    if text.lower() in by_name:
        return by_name[text.lower()]
    hint = closest(text.upper(), mix) or closest(text.lower(), by_name)
    raise ConfigError(
        f"unknown country '{country}'{hint}: give an ISO 3166-1 alpha-3 code from codecarbon's "
        f"global_energy_mix.json (e.g. USA, FRA, DEU, IND), or an explicit grid intensity in gCO2e/kWh"
    )


def country_intensity(country: str) -> GridIntensity:
    code = _country_code(country)
    row = _read("global_energy_mix.json")[code]
    value = row.get("carbon_intensity")
    if value is None:
        # codecarbon would rebuild it from the generation mix or use the world average;
        # every country in the bundled file has the field, so this is a changed file.
        raise ConfigError(f"codecarbon's global_energy_mix.json has no carbon_intensity for {code}")
    year = row.get("year")
    entry = f"{code} ({row.get('country_name', code)}{', ' + str(year) if year else ''})"
    return GridIntensity(float(value), _source("global_energy_mix.json", entry), code, None)


def region_intensity(country: str, region: str) -> GridIntensity:
    code = _country_code(country)
    name = " ".join(str(region).split())
    if code == "USA":
        return _usa(name)
    if code == "CAN":
        return _canada(name)
    if code == "CHN":
        return _china(name)
    if code in _NORDIC_ZONES:
        return _nordic(code, name)
    raise ConfigError(
        f"codecarbon has no regional data for {code}; regions exist for "
        f"{', '.join(REGIONAL_COUNTRIES)}. Give the country alone or an explicit grid intensity"
    )


def _unknown_region(code: str, region: str, options: list[str]) -> ConfigError:
    return ConfigError(
        f"unknown region '{region}' for {code}{closest(region.lower(), options)}; known regions: {', '.join(options)}"
    )


def _usa(region: str) -> GridIntensity:
    data = _read("2023/usa_emissions.json")
    states = {k: v for k, v in data.items() if not k.startswith("_")}
    key = region.lower()
    if key not in states:
        by_code = {v.get("regionCode", "").lower(): k for k, v in states.items()}
        if key not in by_code:
            raise _unknown_region("USA", region, list(states))
        key = by_code[key]
    meta = data.get("_source", {})
    g = states[key]["emissions"] * G_PER_KWH_PER_LBS_PER_MWH
    what = meta.get("name", "US state emission rate")
    return GridIntensity(g, _source("2023/usa_emissions.json", f"{key} ({what}, lbs/MWh converted)"), "USA", key)


def _canada(region: str) -> GridIntensity:
    data = _read("2023/canada_energy_mix.json")
    key = region.lower()
    if key not in data:
        raise _unknown_region("CAN", region, list(data))
    mix = data[key]
    # Same arithmetic as codecarbon: only coal, oil and gas count; shares are of "total".
    g = sum(mix.get(fuel, 0.0) / mix["total"] * factor for fuel, factor in _CANADA_FUEL_G_PER_KWH.items())
    return GridIntensity(
        g,
        _source("2023/canada_energy_mix.json", f"{key} (generation mix x codecarbon's coal/oil/gas factors)"),
        "CAN",
        key,
    )


def _china(region: str) -> GridIntensity:
    data = _read("2023/china_provincial_emissions.json")
    name = _CHINA_SUFFIX.sub("", region.lower())
    for code, province in data["data"].items():
        if name in province["names"]:
            entry = f"{code} {province['description']} (MEE/NBS {province.get('year', '')}, CO2 only)"
            return GridIntensity(
                float(province["emission_factor"]),
                _source("2023/china_provincial_emissions.json", entry),
                "CHN",
                province["names"][0],
            )
    # codecarbon uses the national figure for Tibet, Hong Kong, Macao and Taiwan; saying so
    # is better than doing it behind the user's back.
    raise _unknown_region("CHN", region, known_regions("CHN"))


def _nordic(code: str, region: str) -> GridIntensity:
    zones = _NORDIC_ZONES[code]
    zone = region.upper()
    if zone not in zones:
        raise _unknown_region(code, region, list(zones))
    row = _read("nordic_emissions.json")["data"][zone]
    entry = f"{zone} ({row.get('description', zone)}, {row.get('year', '')})"
    return GridIntensity(float(row["emission_factor"]), _source("nordic_emissions.json", entry), code, zone)


def explicit_intensity(g_per_kwh: float, where: str = "explicit") -> GridIntensity:
    return GridIntensity(float(g_per_kwh), f"{where}: {float(g_per_kwh):g} gCO2e/kWh given explicitly")


def resolve(
    country: Optional[str] = None,
    region: Optional[str] = None,
    g_per_kwh: Optional[float] = None,
    *,
    where: str = "explicit",
) -> GridIntensity:
    """Explicit intensity first, then region, then country. Nothing given is an error."""
    if g_per_kwh is not None and not _isnan(g_per_kwh):
        return explicit_intensity(g_per_kwh, where)
    if _blank(country):
        raise ConfigError("no grid given: name a country (and optionally a region) or a grid intensity in gCO2e/kWh")
    if not _blank(region):
        return region_intensity(country, region)
    return country_intensity(country)


def _isnan(value) -> bool:
    try:
        return math.isnan(float(value))
    except (TypeError, ValueError):
        return False


def _blank(value) -> bool:
    return value is None or _isnan(value) or (isinstance(value, str) and not value.strip())
