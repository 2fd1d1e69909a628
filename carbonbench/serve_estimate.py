"""A whole service from a served-load measurement: devices, energy, carbon and $ per day and year.

``carbonbench estimate --from RESULTS --requests-per-day N --tpot-ms T`` takes the
cheapest measured serve configuration meeting the deadlines (carbonbench.recommend)
and scales it: each device serves the load it was measured at (its completed
requests/s in the steady-state window), so the service needs ceil(demand / that)
devices, and every request costs the measured J/request. This is an extrapolation
(``estimate``): it assumes the demand splits evenly over identical devices, each at the
measured load, and it adds nothing for routing, headroom or idle replicas.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Optional

import pandas as pd

from carbonbench.errors import UserError
from carbonbench.recommend import configurations, recommend
from carbonbench.settings import HOURS_PER_YEAR

J_PER_KWH = 3.6e6
S_PER_DAY = 86400.0


@dataclass
class ServiceEstimate:
    model: str
    device_name: str
    configuration: str
    measured_load: str
    requests_per_day: float
    requests_per_s_per_device: float
    devices: int
    joules_per_request: float
    energy_kwh_per_day: float
    facility_kwh_per_day: float
    co2e_kg_per_day: float
    usd_per_day: float
    grid_g_per_kwh: float
    pue: float
    usd_per_kwh: float
    usd_per_device_hour: float
    tpot_s: float
    ttft_s: float
    energy_method: str
    method: str = "estimate"

    @property
    def per_year(self) -> dict[str, float]:
        days = HOURS_PER_YEAR / 24.0
        return {
            "facility_mwh": self.facility_kwh_per_day * days / 1000,
            "co2e_t": self.co2e_kg_per_day * days / 1000,
            "usd": self.usd_per_day * days,
        }

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "per_year": self.per_year}


def _selected(df: pd.DataFrame, select: Mapping[str, str]) -> pd.DataFrame:
    for key, value in select.items():
        if key not in df.columns:
            raise UserError(f"--select {key}={value}: no such column")
        df = df[df[key].astype(str) == value]
    return df


def estimate_service(
    df: pd.DataFrame,
    *,
    requests_per_day: float,
    tpot_ms: Optional[float],
    ttft_ms: Optional[float] = None,
    select: Mapping[str, str] = {},
    grid_g_per_kwh: Optional[float] = None,
    pue: Optional[float] = None,
    usd_per_kwh: Optional[float] = None,
    usd_per_device_hour: Optional[float] = None,
) -> ServiceEstimate:
    df = _selected(df[df["workload"] == "serve"], select)
    if df.empty:
        raise UserError("no serve points in these results (after --select): run a scenario with workloads.serve")
    best = recommend(df, tpot_ms, ttft_ms)
    best = best[best["best"].notna()]
    if best.empty:
        raise UserError(f"no measured serve configuration meets TPOT p90 <= {tpot_ms} ms / TTFT p90 <= {ttft_ms} ms")
    if len(best) > 1:  # several models, machines or loads: the cheapest of each is a different service
        raise UserError(
            "several models, machines or loads meet the deadlines; pick one with --select (e.g. "
            + ", ".join(sorted({f"model={m}" for m in best["model"]}) | {f"rate_rps={r:g}" for r in best["rate_rps"]})
            + ")"
        )
    b = best.iloc[0]
    rows = df[(df["model"] == b["model"]) & (df["batch_size"] == b["max_batch"]) & (df["engine"] == b["engine"])]
    rows = rows[(rows["dtype"] == b["dtype"]) & (rows["rate_rps"] == b["rate_rps"]) & (rows["status"] == "ok")]
    rows = rows[rows["concurrency"] == b["concurrency"]]
    per_device = float(pd.to_numeric(rows["requests_per_s"], errors="coerce").mean() / rows["n_devices"].iloc[0])
    if not per_device > 0:
        raise UserError("the chosen serve point completed no requests in its window: nothing to scale")
    first = rows.iloc[0]
    grid = grid_g_per_kwh if grid_g_per_kwh is not None else float(first["grid_g_per_kwh"])
    pue = pue if pue is not None else float(first["pue"])
    usd_kwh = usd_per_kwh if usd_per_kwh is not None else float(first["usd_per_kwh"] or 0.0)
    usd_hour = usd_per_device_hour if usd_per_device_hour is not None else float(first["usd_per_device_hour"] or 0.0)
    devices = math.ceil(requests_per_day / S_PER_DAY / per_device)
    kwh = requests_per_day * float(b["objective"]) / J_PER_KWH
    facility = kwh * pue
    return ServiceEstimate(
        model=str(b["model"]),
        device_name=str(b["device_name"]),
        configuration=str(b["best"]),
        measured_load=f"{b['rate_rps']:g} req/s" if b["rate_rps"] else f"{int(b['concurrency'])} clients",
        requests_per_day=float(requests_per_day),
        requests_per_s_per_device=per_device,
        devices=devices,
        joules_per_request=float(b["objective"]),
        energy_kwh_per_day=kwh,
        facility_kwh_per_day=facility,
        co2e_kg_per_day=facility * grid / 1000,
        usd_per_day=facility * usd_kwh + devices * 24 * usd_hour,
        grid_g_per_kwh=grid,
        pue=pue,
        usd_per_kwh=usd_kwh,
        usd_per_device_hour=usd_hour,
        tpot_s=float(b["tpot_s"]),
        ttft_s=float(b["ttft_s"]),
        energy_method=str(b["energy_method"]),
    )


def render(e: ServiceEstimate) -> str:
    y = e.per_year
    return "\n".join(
        [
            f"whole service (estimate from a served-load measurement): {e.model} on {e.device_name}",
            f"  configuration   {e.configuration}, measured at {e.measured_load}; "
            f"TPOT p90 {e.tpot_s * 1000:.4g} ms, TTFT p90 {e.ttft_s * 1000:.4g} ms",
            f"  demand          {e.requests_per_day:,.0f} requests/day = {e.requests_per_day / S_PER_DAY:.4g} req/s",
            f"  devices         {e.devices} (each serving {e.requests_per_s_per_device:.4g} req/s, as measured)",
            f"  energy          {e.joules_per_request:.4g} J/request ({e.energy_method}) -> "
            f"{e.facility_kwh_per_day:,.4g} kWh/day at PUE {e.pue:g}, {y['facility_mwh']:,.4g} MWh/year",
            f"  carbon          {e.co2e_kg_per_day:,.4g} kgCO2e/day at {e.grid_g_per_kwh:g} g/kWh, "
            f"{y['co2e_t']:,.4g} tCO2e/year",
            f"  cost            ${e.usd_per_day:,.2f}/day, ${y['usd']:,.0f}/year "
            f"(${e.usd_per_kwh:g}/kWh, ${e.usd_per_device_hour:g}/device-hour)",
            "  assumes the demand splits evenly over identical devices, each at the measured load; "
            "no headroom or routing is added",
        ]
    )


__all__ = ["ServiceEstimate", "configurations", "estimate_service", "render"]
