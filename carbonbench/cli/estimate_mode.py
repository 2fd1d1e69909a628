"""Which mode `carbonbench estimate` runs in, from the flags given, and the flags that conflict."""

from __future__ import annotations

import click

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
    if _given(opts, "tpot_ms") or _given(opts, "ttft_ms"):
        _conflict(
            opts,
            _TRAINING_ONLY
            + _HOST
            + ("hours", "device_hours", "devices", "device_power_w", "hardware")
            + ("tokens_per_request",),
            "with --tpot-ms/--ttft-ms: the served-load point fixes the model, devices, power and lengths",
        )
        missing = [_flag(n) for n in ("results", "requests_per_day") if not _given(opts, n)]
        if missing:
            raise click.UsageError(f"a whole-service estimate (--tpot-ms) needs {', '.join(missing)}")
        return "serve"
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
