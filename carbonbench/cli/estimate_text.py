"""Text and JSON output of `carbonbench estimate`.

Every figure is labelled with the FLOPs it counts: model FLOPs (MFU) and hardware FLOPs
(HFU, recomputation included) are printed side by side and never under each other's name.
"""

from __future__ import annotations

import math
from typing import Optional


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
        title = (
            f"Training estimate: {d['model'] or num(d['params']) + ' parameters'} on {d['devices']:,} x {d['hardware']}"
        )
        peak = d["peak_flops_per_s_per_device"]
        lines += [
            ("model FLOPs", f"{d['model_flops']:.3e} (full attention, no recomputation: the convention behind MFU)"),
            (
                "hardware FLOPs",
                f"{d['hardware_flops']:.3e} ("
                + ("with recomputation: one more forward of every layer" if d["recompute"] else "no recomputation")
                + ")",
            ),
            (
                "throughput",
                f"per device {num(d['achieved_flops_per_s_per_device'] / 1e12)} TFLOP/s hardware "
                f"(HFU {d['hfu']:.1%}), {num(d['achieved_model_flops_per_s_per_device'] / 1e12)} TFLOP/s "
                f"model (MFU {d['mfu']:.1%}), of a {num(peak / 1e12)} TFLOP/s peak",
            ),
            ("wall time", f"{num(d['wall_days'], 3)} days ({num(d['wall_hours'], 3)} h)"),
            ("device-hours", num(d["device_hours"])),
        ]
    elif d["mode"] == "power":
        if d["devices"] is not None and d["wall_hours"] is not None:
            title = (
                f"Power estimate: {d['devices']:,} devices x {num(d['device_power_w'])} W x {num(d['wall_hours'])} h"
            )
        else:
            title = f"Power estimate: {num(d['device_hours'])} device-hours x {num(d['device_power_w'])} W"
        lines += [("device-hours", num(d["device_hours"]))]
    else:
        title = f"Inference estimate: {d['point']}"
        lines += [
            (
                "load",
                f"{num(d['requests_per_day'])} requests/day x {num(d['tokens_per_request'])} tokens "
                f"= {num(d['tokens_per_day'])} tokens/day",
            ),
            ("efficiency", f"{num(d['joules_per_token'])} J/token, {num(d['tokens_per_s'])} tokens/s"),
            ("device-hours", f"{num(d['device_hours_per_day'])} per day ({num(d['devices_busy'], 3)} devices busy)"),
            (
                "energy",
                f"{num(d['energy_kwh_per_day'])} kWh/day (device {num(d['it_energy_kwh_per_day'])} kWh, "
                f"PUE {float(d['pue'])}); {num(d['energy_mwh_per_year'])} MWh/year",
            ),
            (
                "operational CO2e",
                f"{num(d['co2e_kg_per_day'])} kg/day at {num(d['grid_g_per_kwh'])} gCO2e/kWh; "
                f"{num(d['co2e_t_per_year'])} t/year",
            ),
            (
                "embodied CO2e",
                "not included"
                if d["embodied_co2e_kg_per_day"] is None
                else f"{num(d['embodied_co2e_kg_per_day'])} kg/day (separate from operational)",
            ),
            (
                "cost",
                f"${num(d['cost_usd_per_day'])}/day (electricity ${num(d['electricity_cost_usd_per_day'])} "
                f"+ rental ${num(d['rental_cost_usd_per_day'])}); ${num(d['cost_usd_per_year'])}/year",
            ),
        ]
    if d["mode"] in ("training", "power"):
        it = "devices" + (f" + host {num(d['host_power_w_per_device'])} W each" if d["host_power_w_per_device"] else "")
        lines += [
            ("energy", f"{num(d['energy_mwh'])} MWh ({it} {num(d['it_energy_mwh'])} MWh x PUE {float(d['pue'])})"),
            ("operational CO2e", f"{num(d['co2e_t'])} tCO2e at {num(d['grid_g_per_kwh'])} gCO2e/kWh"),
            (
                "embodied CO2e",
                "not included"
                if d["embodied_co2e_t"] is None
                else f"{num(d['embodied_co2e_t'])} tCO2e (separate from operational)",
            ),
            (
                "cost",
                f"${num(d['cost_usd'])} (electricity ${num(d['electricity_cost_usd'])} "
                f"+ rental ${num(d['rental_cost_usd'])})",
            ),
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
