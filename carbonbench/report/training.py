"""Training extrapolations for the report: measured training steps scaled to whole jobs.

Two questions, both answered as estimates and labelled so:

1. What would training the measured model on its full token budget cost here, at the
   measured J/token and tokens/s? (Linear in tokens: D x J/token, D / tokens/s.)
2. For GPU points with a measured MFU (model FLOPs, carbonbench.flops): what would
   OPT-175B cost on this hardware at that MFU (``carbonbench.estimate.estimate_training``),
   beside the same job as published?
"""

from __future__ import annotations

import math
from typing import Any, Optional

import pandas as pd

from carbonbench import grid as gridmod
from carbonbench.carbon import DEFAULT_PLACES, J_PER_KWH, CostConfig
from carbonbench.errors import CarbonbenchError, UserError
from carbonbench.estimate import Facility, estimate_training
from carbonbench.grid import GridIntensity
from carbonbench.hardware import get_hardware, match_device

REFERENCE_MODEL = "opt-175b"


def _card(name: str):
    # Imported here: carbonbench.opt pulls in torch, which reports without training need not pay for.
    from carbonbench.opt.card import find_card

    try:
        return find_card(name)
    except CarbonbenchError:
        return None


def token_budget(model: str) -> tuple[Optional[float], str]:
    """(tokens, where the figure comes from): the card's own, else OPT-175B's."""
    card = _card(model)
    if card is not None and card.published.training_tokens:
        src = card.published.sources.get("training_tokens", "model card")
        return float(card.published.training_tokens), f"{model} card ({src})"
    ref = _card(REFERENCE_MODEL)
    if ref is not None and ref.published.training_tokens:
        src = ref.published.sources.get("training_tokens", "model card")
        return float(ref.published.training_tokens), f"OPT-175B's token count, as {model} publishes none ({src})"
    return None, "no published token count"


def places() -> list[GridIntensity]:
    return [gridmod.resolve(c, r) for c, r in DEFAULT_PLACES]


def full_jobs(points: pd.DataFrame) -> pd.DataFrame:
    """One row per ok training point: the whole-job energy, time, CO2e and cost."""
    rows = []
    grids = places()
    train = points[(points["workload"] == "train") & (points["status"] == "ok")]
    for _, p in train.iterrows():
        jpt, tps = p["joules_per_token_mean"], p["tokens_per_s_mean"]
        tokens, source = token_budget(str(p["model"]))
        if not (_ok(jpt) and _ok(tps) and tokens):
            continue
        pue = _or(p["pue"], 1.0)
        kwh = tokens * jpt / J_PER_KWH * pue
        n = _or(p["n_devices"], 1.0)
        device_hours = tokens / tps / 3600.0 * n
        row: dict[str, Any] = {
            "run_label": p["run_label"],
            "label": p["label"],
            "model": p["model"],
            "method": p["energy_method"],
            "tokens": tokens,
            "tokens_source": source,
            "joules_per_token": jpt,
            "tokens_per_s": tps,
            "energy_mwh": kwh / 1e3,
            "pue": pue,
            "device_days": device_hours / 24.0,
            "n_devices": n,
            "wall_days": tokens / tps / 86400.0,
            "grid_g_per_kwh": p["grid_g_per_kwh"],
            "co2e_t": kwh * _or(p["grid_g_per_kwh"], math.nan) / 1e6,
            "cost_usd": kwh * _or(p["usd_per_kwh"], 0.0) + device_hours * _or(p["usd_per_device_hour"], 0.0),
        }
        for g in grids:
            row[f"co2e_t@{g.label}"] = kwh * g.g_per_kwh / 1e6
        rows.append(row)
    return pd.DataFrame(rows)


def reference_jobs(points: pd.DataFrame) -> pd.DataFrame:
    """OPT-175B on each measured GPU at its measured MFU, and as the OPT paper published it.

    Every row is the job as published: 300B tokens with activation recomputation
    (model FLOPs for the MFU, hardware FLOPs beside them). The published row uses the
    README's inputs exactly (992 GPUs at 147 TFLOP/s of hardware FLOPs, 400 W TDP, PUE
    1.0), so it gives the README's and ``carbonbench estimate``'s figures; only its CO2e
    is at this run's grid.
    """
    ref = _card(REFERENCE_MODEL)
    if ref is None or not ref.published.training_tokens:
        return pd.DataFrame()
    pub = ref.published
    rows = []
    train = points[(points["workload"] == "train") & (points["status"] == "ok")]
    with_mfu = train[pd.to_numeric(train["mfu"], errors="coerce") > 0]
    # Per machine, the step closest to a real job: the highest MFU measured there.
    best = with_mfu.sort_values("mfu", ascending=False).groupby("run_label", sort=False).head(1)
    job = dict(
        arch=ref.architecture,
        params=ref.param_count(),
        tokens=pub.training_tokens,
        model=ref.name,
        devices=int(pub.devices or 1),
        recompute=True,
    )
    for _, p in best.iterrows():
        hw = match_device(p["device_name"]) if p["device_type"] != "cpu" else None
        if hw is None:
            continue
        try:
            est = estimate_training(
                **job,
                hardware=hw,
                facility=_facility(p),
                mfu=float(p["mfu"]),
                throughput_source=f"measured: {p['label']}",
            )
        except UserError:  # an MFU that recomputation would push past the peak: no such job
            continue
        rows.append(_ref_row(f"at the MFU measured for {p['label']} on {p['run_label']}", est, p["energy_method"]))
    if rows and pub.hardware and pub.achieved_tflops_per_device:
        try:
            hw = get_hardware(pub.hardware)
        except CarbonbenchError:
            hw = None
        if hw is not None:
            est = estimate_training(
                **job,
                hardware=hw,
                facility=_facility(train.iloc[0], pue=1.0),
                achieved_flops_per_s=pub.achieved_tflops_per_device * 1e12,
                throughput_source="published",
            )
            row = _ref_row(
                f"as published: {pub.achieved_tflops_per_device:g} TFLOP/s of hardware FLOPs per device "
                f"with recomputation ({pub.sources.get('achieved_tflops_per_device', 'OPT paper')}); "
                "400 W TDP, PUE 1.0, as in the README; CO2e at this run's grid",
                est,
                "estimated",
            )
            if pub.emissions_tco2e:
                row["published_co2e_t"] = pub.emissions_tco2e
            rows.append(row)
    return pd.DataFrame(rows)


def _ref_row(what: str, est, method: Any) -> dict[str, Any]:
    return {
        "what": what,
        "hardware": est.hardware,
        "devices": est.devices,
        "mfu": est.mfu,
        "hfu": est.hfu,
        "wall_days": est.wall_days,
        "energy_mwh": est.energy_mwh,
        "co2e_t": est.co2e_t,
        "cost_usd": est.cost_usd,
        "grid_g_per_kwh": est.grid_g_per_kwh,
        "pue": est.pue,
        "method": method,
        "assumptions": list(est.assumptions),
    }


def _facility(p: Any, pue: Optional[float] = None) -> Facility:
    grid = GridIntensity(float(p["grid_g_per_kwh"]), str(p["grid_source"]))
    cost = CostConfig(_or(p["usd_per_kwh"], 0.15), _or(p["usd_per_device_hour"], 0.0))
    if pue is not None:
        return Facility(grid=grid, pue=pue, cost=cost, pue_note="as in the README; the OPT paper gives none")
    return Facility(grid=grid, pue=_or(p["pue"], 1.0), cost=cost, pue_note="from the results")


def _ok(x: Any) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def _or(x: Any, default: float) -> float:
    return float(x) if _ok(x) else default
