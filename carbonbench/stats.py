"""Repeat statistics: mean, standard deviation and a 95% confidence interval.

The interval is Student's t, since a point has a handful of repeats and the normal
quantile would understate the spread. scipy is not a dependency: the two-sided 97.5%
quantiles are tabulated exactly for 1..30 degrees of freedom, and beyond that come
from the Cornish-Fisher expansion in 1/df (Abramowitz & Stegun 26.7.5), which is within
1e-6 of the exact value from df = 30 and tends to the normal 1.959964.
"""

from __future__ import annotations

import math
from typing import Iterable, Optional

Z_975 = 1.959963984540054

# t_{0.975, df} for df = 1..30 (two-sided 95%).
_T_975 = (
    12.706204736,
    4.302652730,
    3.182446305,
    2.776445105,
    2.570581836,
    2.446911851,
    2.364624252,
    2.306004135,
    2.262157163,
    2.228138852,
    2.200985160,
    2.178812830,
    2.160368656,
    2.144786688,
    2.131449546,
    2.119905299,
    2.109815578,
    2.100922040,
    2.093024054,
    2.085963447,
    2.079613845,
    2.073873068,
    2.068657610,
    2.063898562,
    2.059538553,
    2.055529439,
    2.051830516,
    2.048407142,
    2.045229642,
    2.042272456,
)


def t_quantile_975(df: int) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be at least 1 (got {df})")
    if df <= len(_T_975):
        return _T_975[df - 1]
    z, n = Z_975, float(df)
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    return z + g1 / n + g2 / n**2 + g3 / n**3 + g4 / n**4


def ci95(values: Iterable[Optional[float]]) -> tuple[float, float, float]:
    """(mean, sample standard deviation, half-width of the 95% CI) of the finite values.

    NaN everywhere for no values; std and half-width NaN for one value, since one
    repeat says nothing about the spread.
    """
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(xs)
    if n == 0:
        return math.nan, math.nan, math.nan
    mean = math.fsum(xs) / n
    if n == 1:
        return mean, math.nan, math.nan
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    return mean, std, t_quantile_975(n - 1) * std / math.sqrt(n)
