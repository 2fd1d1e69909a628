"""Whole-job estimates: training from a model, and power from first principles.

Pure functions over small dataclasses; each result flattens to a dict whose keys carry
their units (energy_mwh, co2e_t, device_hours, wall_days, cost_usd, model_flops) and an
``assumptions`` list that says, in words, everything the numbers rest on.

Training (carbonbench.flops counts the FLOPs):
    model FLOPs    = the PaLM/Megatron-LM convention: full attention, no recomputation
                     (the same count as a measured run's MFU)
    hardware FLOPs = model FLOPs + one more forward of every layer with recomputation
                     (Megatron-LM's count, as published throughputs with recomputation use)
    wall time      = model FLOPs / (devices x MFU x peak)          with an MFU
                   = hardware FLOPs / (devices x achieved FLOP/s)  with an achieved FLOP/s
    device-hours   = devices x wall time
    IT energy      = device-hours x (device power + host power per device)
    energy         = IT energy x PUE;  CO2e = energy x grid intensity
    cost           = energy x $/kWh + device-hours x $/device-hour

Power: the same energy, CO2e and cost from devices x hours, or from device-hours.
Inference estimates from measured results are in carbonbench.measured.
"""

from __future__ import annotations

from typing import Optional

from carbonbench import flops as flopsmod
from carbonbench.equivalents import equivalents
from carbonbench.errors import UserError
from carbonbench.estimate_records import (  # noqa: F401  (importable from here)
    NO_HOST,
    Facility,
    Host,
    PowerEstimate,
    TrainingEstimate,
    _Flat,
    _positive,
    finite,
)
from carbonbench.hardware import Hardware
from carbonbench.opt.card import Architecture


def job_flops(
    *,
    tokens: float,
    recompute: bool,
    arch: Optional[Architecture] = None,
    seq_len: Optional[int] = None,
    params: Optional[float] = None,
    layers: Optional[int] = None,
    d_model: Optional[int] = None,
) -> flopsmod.JobFlops:
    """From a model card's architecture, else from N, layers, width and sequence length."""
    _positive("tokens", tokens)
    if arch is not None:
        seq = arch.max_positions if seq_len is None else seq_len
        _count("sequence length", seq)
        return flopsmod.job_from_architecture(arch, tokens, seq, recompute)
    missing = [flag for flag, v in (("--layers", layers), ("--d-model", d_model), ("--seq-len", seq_len)) if v is None]
    if missing:
        raise UserError(
            f"model FLOPs count attention, so --params needs {', '.join(missing)} too (or give --model CARD)"
        )
    _positive("params", params)
    for what, value in (("layers", layers), ("d_model", d_model), ("sequence length", seq_len)):
        _count(what, value)
    return flopsmod.job_from_params(params, layers, d_model, seq_len, tokens, recompute)


def estimate_training(
    *,
    tokens: float,
    hardware: Hardware,
    devices: int,
    facility: Facility,
    arch: Optional[Architecture] = None,
    params: Optional[int] = None,
    layers: Optional[int] = None,
    d_model: Optional[int] = None,
    seq_len: Optional[int] = None,
    mfu: Optional[float] = None,
    achieved_flops_per_s: Optional[float] = None,
    throughput_source: str = "given",
    device_power_w: Optional[float] = None,
    host: Host = NO_HOST,
    recompute: bool = False,
    model: Optional[str] = None,
) -> TrainingEstimate:
    """A training job at a model FLOPs utilisation (``mfu``) or at an achieved hardware
    FLOP/s per device (``achieved_flops_per_s``, recomputation counted as work)."""
    _count("devices", devices)
    if (mfu is None) == (achieved_flops_per_s is None):
        raise UserError("give exactly one of an MFU or an achieved FLOP/s per device")
    job = job_flops(
        tokens=tokens, recompute=recompute, arch=arch, seq_len=seq_len, params=params, layers=layers, d_model=d_model
    )
    seq = arch.max_positions if arch is not None and seq_len is None else seq_len
    params = int(params if params is not None else arch.param_count())
    peak = hardware.peak_bf16_flops
    if mfu is not None:
        if not (0 < mfu <= 1):
            raise UserError(f"MFU must be in (0, 1] (got {mfu})")
        wall_s = job.model / (devices * mfu * peak)
    else:
        _positive("achieved FLOP/s per device", achieved_flops_per_s)
        wall_s = job.hardware / (devices * achieved_flops_per_s)
    model_rate, hardware_rate = job.model / (devices * wall_s), job.hardware / (devices * wall_s)
    if hardware_rate > peak:
        raise UserError(
            f"{hardware_rate / 1e12:.4g} TFLOP/s of hardware FLOPs per device is above the {hardware.description} "
            f"peak of {peak / 1e12:g} TFLOP/s" + (" (recomputation adds to the MFU's work)" if mfu else "")
        )
    power, power_note = _device_power(device_power_w, hardware)
    device_hours = devices * wall_s / 3600.0
    e = _energy(device_hours, power + host.w_per_device, facility, hardware)

    if mfu is not None:
        rate = (
            f"MFU {mfu:.1%} ({throughput_source}): {model_rate / 1e12:.4g} TFLOP/s of model FLOPs per device; "
            f"HFU {hardware_rate / peak:.1%}"
        )
    else:
        rate = (
            f"{hardware_rate / 1e12:.4g} TFLOP/s of hardware FLOPs per device ({throughput_source})"
            + (", recomputation counted as work" if recompute else "")
            + f": HFU {hardware_rate / peak:.1%}, MFU {model_rate / peak:.1%}"
        )
    who = f"{model} ({params:,} parameters)" if model else f"{params:,} parameters"
    assumptions = [
        f"{who}, D = {tokens:.4g} tokens in sequences of {seq:,}",
        f"model FLOPs {job.model:.4g} = {job.model_rule}",
        f"hardware FLOPs {job.hardware:.4g} = {job.hardware_rule}",
        f"throughput {rate}, against the {hardware.description} dense bf16/fp16 peak of "
        f"{peak / 1e12:g} TFLOP/s ({hardware.source})",
        f"all {devices:,} devices busy for the whole job: no failures, restarts, evaluation or idle time",
        f"device power {power:g} W per device held for the whole job ({power_note})",
        host.assumption(),
        *facility.assumptions(),
    ]
    if e["embodied_source"]:
        assumptions.append(f"embodied carbon shown separately: {e['embodied_source']}")
    return finite(
        TrainingEstimate(
            mode="training",
            model=model,
            params=params,
            tokens=float(tokens),
            seq_len=int(seq),
            recompute=recompute,
            model_flops=job.model,
            hardware_flops=job.hardware,
            model_flops_rule=job.model_rule,
            hardware_flops_rule=job.hardware_rule,
            hardware=hardware.name,
            devices=int(devices),
            peak_flops_per_s_per_device=peak,
            achieved_flops_per_s_per_device=hardware_rate,
            achieved_model_flops_per_s_per_device=model_rate,
            mfu=model_rate / peak,
            hfu=hardware_rate / peak,
            throughput_source=throughput_source,
            device_power_w=power,
            host_power_w_per_device=host.w_per_device,
            wall_hours=wall_s / 3600.0,
            wall_days=wall_s / 86400.0,
            device_hours=device_hours,
            **_energy_fields(e, facility),
            assumptions=tuple(assumptions),
            equivalents=tuple(equivalents(e["co2e_g"])),
        )
    )


def estimate_power(
    *,
    facility: Facility,
    devices: Optional[int] = None,
    hours: Optional[float] = None,
    device_hours: Optional[float] = None,
    device_power_w: Optional[float] = None,
    hardware: Optional[Hardware] = None,
    host: Host = NO_HOST,
) -> PowerEstimate:
    """Devices drawing W watts for H hours (or for a number of device-hours, as footprint
    papers publish them): the first-principles estimate."""
    if device_hours is not None:
        if hours is not None:
            raise UserError("give the wall time or the device-hours, not both")
        _positive("device-hours", device_hours)
        if devices is not None:
            _count("devices", devices)
        wall = device_hours / devices if devices else None
        used = float(device_hours)
    else:
        if devices is None or hours is None:
            raise UserError("give devices and hours, or device-hours")
        _count("devices", devices)
        _positive("hours", hours)
        wall, used = float(hours), devices * float(hours)
    if device_power_w is None and hardware is None:
        raise UserError("give the device power in W, or a hardware name to use its power")
    power, power_note = _device_power(device_power_w, hardware)
    e = _energy(used, power + host.w_per_device, facility, hardware)
    span = f"{devices:,} devices for {wall:g} hours" if devices and wall is not None else f"{used:,.6g} device-hours"
    assumptions = [
        f"{span} at {power:g} W per device ({power_note}), drawing that power throughout",
        host.assumption(),
        *facility.assumptions(),
    ]
    if e["embodied_source"]:
        assumptions.append(f"embodied carbon shown separately: {e['embodied_source']}")
    return finite(
        PowerEstimate(
            mode="power",
            devices=None if devices is None else int(devices),
            device_power_w=power,
            host_power_w_per_device=host.w_per_device,
            wall_hours=wall,
            wall_days=None if wall is None else wall / 24.0,
            device_hours=used,
            **_energy_fields(e, facility),
            assumptions=tuple(assumptions),
            equivalents=tuple(equivalents(e["co2e_g"])),
        )
    )


def _energy(device_hours: float, power_w: float, facility: Facility, hardware: Optional[Hardware]) -> dict:
    it_kwh = device_hours * power_w / 1e3
    kwh = it_kwh * facility.pue
    embodied_g, embodied_source = facility.embodied_g(device_hours, hardware)
    return {
        "it_kwh": it_kwh,
        "kwh": kwh,
        "co2e_g": kwh * facility.grid.g_per_kwh,
        "electricity": kwh * facility.cost.usd_per_kwh,
        "rental": device_hours * facility.cost.usd_per_device_hour,
        "embodied_g": embodied_g,
        "embodied_source": embodied_source,
    }


def _energy_fields(e: dict, facility: Facility) -> dict:
    return {
        "it_energy_mwh": e["it_kwh"] / 1e3,
        "energy_mwh": e["kwh"] / 1e3,
        "pue": facility.pue,
        "grid_g_per_kwh": facility.grid.g_per_kwh,
        "grid_source": facility.grid.source,
        "co2e_t": e["co2e_g"] / 1e6,
        "electricity_cost_usd": e["electricity"],
        "rental_cost_usd": e["rental"],
        "cost_usd": e["electricity"] + e["rental"],
        "embodied_co2e_t": None if e["embodied_g"] is None else e["embodied_g"] / 1e6,
        "embodied_source": e["embodied_source"],
    }


def _device_power(device_power_w: Optional[float], hardware: Optional[Hardware]) -> tuple[float, str]:
    """The power given, else the hardware's measured mean power, else its TDP."""
    if device_power_w is not None:
        _positive("device power (W)", device_power_w)
        return float(device_power_w), "given"
    assert hardware is not None
    if hardware.mean_power_w is not None:
        return float(hardware.mean_power_w), f"mean power of the {hardware.description}, {hardware.power_source}"
    if hardware.tdp_w is None:
        raise UserError(f"hardware '{hardware.name}' has no TDP or mean power in its file: give --device-power-w")
    return float(hardware.tdp_w), f"TDP of the {hardware.description}, {hardware.source}"


def _count(what: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{what} must be a whole number >= 1 (got {value!r})")
