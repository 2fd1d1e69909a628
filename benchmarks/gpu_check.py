"""GPU truth in one call: every check carbonbench owes a GPU, in order, within a time budget.

    python benchmarks/gpu_check.py                       # on a GPU: reports/reference/<gpu-slug>/, 7 min at most
    python benchmarks/gpu_check.py --out-root "$OUT"     # the lent machine: $OUT/<gpu-slug>/ (docs/gpu.md)
    python benchmarks/gpu_check.py --dry-run             # CPU and a fake NVML: every step, in under a minute (CI)
    python benchmarks/gpu_check.py --budget-s 200 --steps nvml,roofline   # a second, shorter call

Steps (docs/gpu.md), each saved as soon as it ends:

1. packages: which optional packages import here (codecarbon, plotly, transformers) and
   every version that matters. A missing one turns its part off, with a note.
2. env: ``carbonbench env --json``: driver, NVML features (energy counter, instantaneous
   power field), power limits, clocks, MIG mode.
3. nvml: idle power over 10 s, then a steady bf16 matmul load in windows of 1, 5 and
   20 s, each measured by NVML's energy counter and by the project's sampler
   (integrated power) with their ratio, then idle power over 10 s again.
4. run-native, run-transformers: ``carbonbench run`` of scenarios/gpu-check.yaml
   (opt-1.3b prefill and decode at batch 1 and 16, training at seq 2048), once per engine.
5. roofline: the device's matmul rate and copy bandwidth (benchmarks/roofline.py).
6. headline: from the run files (carbonbench.results.load): decode at batch 1, native
   against transformers, tokens/s, J/token and % of the bandwidth roofline; training
   MFU/HFU at seq 2048.
7. report: ``carbonbench report`` over the run files (needs plotly).
8. run-serve: ``carbonbench run`` of the native scenario with a served load instead of
   the static batches (opt-1.3b, Poisson arrivals, continuous batching at max_batch 8
   and 32; docs/serve.md). Last, and outside the default 420 s budget: give
   ``--budget-s 560`` (or ``--steps run-serve``) for it; otherwise it is skipped, said so.

Every step checks the time left before it starts and is skipped, with a note, if its
estimate does not fit; a step that overruns is stopped (its finished points are kept).
The output folder holds at most six files, one folder deep, to be committed as
reports/reference/<gpu-slug>/: README.md, summary.json, env.json, runs.tar.gz,
report.html and gpu-check.log.

carbonbench is driven only through its command line (``python -m carbonbench``) and
public modules (carbonbench.results.load, carbonbench.meters.nvml), so the runner can
change underneath. ``--dry-run`` runs the same steps on the CPU with a fake NVML
installed at its import site (carbonbench.meters.nvml.pynvml) and tiny sizes: it checks
the script, never a GPU, and says so in every file it writes.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import importlib
import importlib.util
import json
import math
import os
import platform
import re
import shlex
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Optional

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).resolve()
SCENARIO = ROOT / "scenarios" / "gpu-check.yaml"
SCHEMA = "carbonbench.gpu_check"
SCHEMA_VERSION = 1
DEFAULT_BUDGET_S = 420.0  # 7 minutes: with a 1-2 minute machine start, under the device tool's 10-minute call
DRY_RUN_BUDGET_S = 60.0  # the dry run must finish in CI within a minute: the budget enforces it
OPTIONAL_PACKAGES = ("codecarbon", "plotly", "transformers")
# Their versions go with the results (IMPORT_TO_CHECK are imported to check them; the rest only looked up).
VERSIONED_PACKAGES = (
    "torch",
    "transformers",
    "codecarbon",
    "plotly",
    "pandas",
    "numpy",
    "pyarrow",
    "pynvml",
    "click",
    "tokenizers",
    "safetensors",
    "yaml",
    "psutil",
)
DISTRIBUTIONS = {"pynvml": "nvidia-ml-py", "yaml": "pyyaml"}
# Without codecarbon there is no bundled grid data, and a scenario must then name its grid
# intensity explicitly. This is codecarbon 3.x's USA figure (global_energy_mix.json, as
# quoted in the project's measurement reference), so runs with and without codecarbon are
# priced alike; energy, which is what the check measures, does not depend on it.
FALLBACK_GRID_G_PER_KWH = 369.5
FALLBACK_GRID_SOURCE = (
    "codecarbon 3.x global_energy_mix.json: USA (369.5 gCO2e/kWh), typed in because codecarbon is missing"
)


# -- what each mode runs ------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Profile:
    """The sizes and durations of one mode, and what each step is expected to take in it.

    Estimates are wall seconds including process start, imports and model loads. The GPU
    ones are for an H100/H200-class device (opt-1.3b is small there: the loads and the
    transformers engine's per-token overhead dominate); they only decide whether a step
    still fits the budget, and a step that overruns is stopped anyway.
    """

    name: str
    device: str
    idle_s: float
    load_warmup_s: float
    windows: tuple[tuple[float, int], ...]  # (window length s, how many)
    matmul_n: int
    matmul_dtype: str
    sample_interval_s: float
    roofline_s: float
    roofline_matmul_n: Optional[int]  # None: roofline.py's own sizes
    roofline_copy_bytes: Optional[int]
    child_start_s: float  # a child process's start: interpreter, torch, CUDA context
    estimates_s: dict[str, float]
    finish_reserve_s: float  # kept for packing and the README after the last step
    kill_grace_s: float  # between SIGTERM (carbonbench saves finished points) and SIGKILL
    scenario_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    serve: dict[str, Any] = dataclasses.field(default_factory=dict)  # the run-serve step's workloads.serve

    def nvml_estimate_s(self) -> float:
        return self.child_start_s + 2 * self.idle_s + self.load_warmup_s + sum(s * n for s, n in self.windows) + 2.0


GPU = Profile(
    name="gpu",
    device="cuda",
    idle_s=10.0,
    load_warmup_s=3.0,  # clocks and power ramp up in the first second or two of a load
    windows=((1.0, 3), (5.0, 2), (20.0, 1)),
    matmul_n=8192,
    matmul_dtype="bfloat16",
    sample_interval_s=0.1,
    roofline_s=3.0,
    roofline_matmul_n=None,
    roofline_copy_bytes=None,
    child_start_s=15.0,
    estimates_s={
        "packages": 5.0,
        "env": 20.0,
        # process + imports ~10 s, codecarbon start ~1 s, idle 2 s, two model builds on the GPU,
        # five points of one warm-up step and two 2 s windows (decode steps are ~1 s each)
        "run-native": 90.0,
        # the same points; transformers' eager decode costs several times native's per token
        "run-transformers": 150.0,
        # process + load ~20 s; two points x two repeats of a ~15 s stream (eager decode steps)
        "run-serve": 120.0,
        "roofline": 25.0,
        "headline": 5.0,
        "report": 40.0,
    },
    finish_reserve_s=10.0,
    kill_grace_s=15.0,
    # 'cuda', not the file's 'auto': where torch sees no GPU, carbonbench run stops at once
    # (exit 2) instead of spending the budget on opt-1.3b on the CPU
    scenario_overrides={"device": "cuda"},
    serve={
        "arrival": "poisson",
        "rate_rps": [8.0],
        "requests": 48,
        "prompt_tokens": {"dist": "uniform", "min": 64, "max": 512},
        "output_tokens": {"dist": "uniform", "min": 32, "max": 128},
        "max_batch": [8, 32],
    },
)

DRY = Profile(
    name="dry-run",
    device="cpu",
    idle_s=0.3,
    load_warmup_s=0.1,
    windows=((0.1, 3), (0.2, 2), (0.4, 1)),  # the GPU's 1/5/20 s windows, scaled down
    matmul_n=256,
    matmul_dtype="float32",
    sample_interval_s=0.02,
    roofline_s=0.2,
    roofline_matmul_n=256,
    roofline_copy_bytes=16 * 2**20,
    child_start_s=3.0,
    # seconds on this project's 2-core CI machine, lightly loaded
    estimates_s={
        "packages": 2.0,
        "env": 4.0,
        "run-native": 10.0,
        "run-transformers": 13.0,
        "run-serve": 8.0,
        "roofline": 4.0,
        "headline": 2.0,
        "report": 6.0,
    },
    finish_reserve_s=1.0,
    kill_grace_s=5.0,
    scenario_overrides={
        "name": "gpu-check-dry-run",
        "description": "gpu_check.py --dry-run: opt-tiny on the CPU, the shape of the GPU check, no GPU figures",
        "models": ["opt-tiny"],
        "device": "cpu",
        "batch_sizes": [1, 2],
        "workloads": {
            "prefill": {"prompt_tokens": [16]},
            "decode": {"prompt_tokens": [8], "new_tokens": [4]},
            "train": {"seq_len": [32], "batch_sizes": [2]},
        },
        "measurement": {
            "warmup_steps": 1,
            "warmup_s": 0.0,
            "min_seconds": 0.05,
            "repeats": 2,
            "sample_interval_s": 0.05,
            "idle_baseline_s": 0.1,
            "cooldown_s": 0.0,
        },
    },
    serve={
        "arrival": "poisson",
        "rate_rps": [200.0],
        "requests": 12,
        "prompt_tokens": {"dist": "uniform", "min": 4, "max": 16},
        "output_tokens": {"dist": "uniform", "min": 2, "max": 8},
        "max_batch": [2, 4],
    },
)

# run-serve comes last: the default budget fits the steps before it, and a longer one
# (--budget-s 560) adds the served-load point; the budget logic skips it otherwise.
STEPS = ("packages", "env", "nvml", "run-native", "run-transformers", "roofline", "headline", "report", "run-serve")


# -- time ---------------------------------------------------------------------------------
class Budget:
    """Seconds left of the check's budget, and whether a step's estimate still fits."""

    def __init__(self, total_s: float, reserve_s: float, clock: Callable[[], float] = time.monotonic):
        self.total_s = float(total_s)
        self.reserve_s = float(reserve_s)
        self.clock = clock
        self.start = clock()

    def elapsed(self) -> float:
        return self.clock() - self.start

    def left(self) -> float:
        """Seconds a step may still use: the budget less what is spent and the finishing reserve."""
        return self.total_s - self.elapsed() - self.reserve_s

    def fits(self, estimate_s: float) -> bool:
        return self.left() >= estimate_s


# -- files --------------------------------------------------------------------------------
def atomic_write(path: Path, text: str) -> None:
    """Write-then-rename, so a check stopped mid-write leaves the previous file, not half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
        os.chmod(path, 0o644)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _json(data: Any) -> str:
    return json.dumps(_finite(data), indent=1, default=str) + "\n"


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN: absent is honest
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def gpu_slug(name: Optional[str]) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'h100-80gb-hbm3': a folder name under reports/reference/."""
    if not name:
        return "unknown-gpu"
    text = re.sub(r"\bnvidia\b|\bgeforce\b|\btesla\b", " ", name.lower())
    slug = re.sub(r"[^a-z0-9]+", "-", text).strip("-")
    return slug or "unknown-gpu"


# -- child processes ----------------------------------------------------------------------
def _hide(names: list[str]) -> None:
    """Make ``import NAME`` fail here as if NAME were not installed (for --without)."""
    for name in names:
        for loaded in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            del sys.modules[loaded]
        sys.modules[name] = None  # the import system reads None as "not importable"


def _child_env(dry: bool) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    if dry:
        # a small shared CI machine: OpenMP threads spinning for a busy core cost more than they give
        env.setdefault("OMP_NUM_THREADS", "1")
    # carbonbench from this checkout whether or not it is installed (the lent machine has
    # no registry to pip install it from)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


@dataclasses.dataclass
class ChildResult:
    rc: Optional[int]
    seconds: float
    timed_out: bool
    log: Path

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        # a progress bar redraws with carriage returns: keep what a terminal would show last
        shown = [line.rsplit("\r", 1)[-1] for line in text.splitlines()]
        return "\n".join(shown[-lines:])


def run_child(
    cmd: list[str], log: Path, timeout_s: float, grace_s: float, stdout: Optional[Path] = None, dry: bool = False
) -> ChildResult:
    """Run cmd with its output in log (stdout alone in ``stdout`` when given); past
    timeout_s SIGTERM (carbonbench keeps finished points and exits 143), then SIGKILL
    after grace_s."""
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    with open(log, "w", encoding="utf-8") as out, open(stdout or os.devnull, "w", encoding="utf-8") as data:
        out.write("$ " + " ".join(shlex.quote(c) for c in cmd) + "\n")
        out.flush()
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=_child_env(dry),
            stdout=data if stdout else out,
            stderr=subprocess.STDOUT if stdout is None else out,
            stdin=subprocess.DEVNULL,
        )
        timed_out = False
        try:
            proc.wait(timeout=max(timeout_s, 0.1))
        except subprocess.TimeoutExpired:
            timed_out = True
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        except BaseException:  # the check itself is being stopped: so is the child, keeping what it can
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=grace_s)
            except BaseException:
                proc.kill()
                proc.wait()
            raise
    return ChildResult(proc.returncode, time.monotonic() - t0, timed_out, log)


# -- the fake NVML of --dry-run -----------------------------------------------------------
def make_fake_nvml():
    """A pynvml stand-in with one H200 that draws 100 W with a 1 Hz, 20 W ripple.

    It keeps pynvml's real constants, error classes and field-value structure, so only
    the driver is pretend. Like the real counter, its energy moves in 100 ms steps, and
    nvmlDeviceGetPowerUsage is a 1 s trailing average while the instant field is exact:
    the short windows of the counter check then disagree the way real ones can.
    """
    import types

    import pynvml as real

    fake = types.ModuleType("gpu_check_fake_pynvml")
    for name in dir(real):
        if name.startswith(("NVML", "c_nvml")):
            setattr(fake, name, getattr(real, name))
    t0 = time.time()
    base_w, ripple_w, update_s = 100.0, 20.0, 0.1

    def power(t: float) -> float:
        return base_w + ripple_w * math.sin(2 * math.pi * (t - t0))

    def energy_j(t: float) -> float:  # the integral of power from t0 to t
        x = t - t0
        return base_w * x + ripple_w / (2 * math.pi) * (1 - math.cos(2 * math.pi * x))

    class Gpu:
        name = "NVIDIA H200 (fake NVML: gpu_check.py --dry-run)"
        uuid = "GPU-00000000-0000-0000-0000-0000000d7e01"

    gpu = Gpu()

    def handle_by_index(i):
        if i != 0:
            raise real.NVMLError_InvalidArgument()
        return gpu

    def handle_by_uuid(uuid):
        if str(uuid).lower() != gpu.uuid.lower():
            raise real.NVMLError_NotFound()
        return gpu

    def counter_mj(h):
        now = time.time()
        stepped = t0 + math.floor((now - t0) / update_s) * update_s
        return int(7_000_000_000 + 1000 * energy_j(stepped))

    def field_values(h, ids):
        values = (real.c_nvmlFieldValue_t * len(ids))()
        for v, fid in zip(values, ids):
            v.fieldId = fid
            if fid == real.NVML_FI_DEV_POWER_INSTANT:
                v.nvmlReturn = real.NVML_SUCCESS
                v.valueType = real.NVML_VALUE_TYPE_UNSIGNED_INT
                v.value.uiVal = int(1000 * power(time.time()))
            else:
                v.nvmlReturn = real.NVML_ERROR_NOT_SUPPORTED
        return values

    def average_mw(h):
        now = time.time()
        return int(1000 * (energy_j(now) - energy_j(now - 1.0)))

    clocks = {real.NVML_CLOCK_SM: 1980, real.NVML_CLOCK_MEM: 3201}
    memory = types.SimpleNamespace(total=143_771 * 2**20, used=600 * 2**20, free=143_171 * 2**20)
    fake.__dict__.update(
        nvmlInit=lambda: None,
        nvmlShutdown=lambda: None,
        nvmlSystemGetDriverVersion=lambda: "580.159.04 (fake)",
        nvmlSystemGetNVMLVersion=lambda: "13.580.159.04 (fake)",
        nvmlSystemGetCudaDriverVersion=lambda: 13000,
        nvmlDeviceGetCount=lambda: 1,
        nvmlDeviceGetHandleByIndex=handle_by_index,
        nvmlDeviceGetHandleByUUID=handle_by_uuid,
        nvmlDeviceGetUUID=lambda h: h.uuid,
        nvmlDeviceGetName=lambda h: h.name,
        nvmlDeviceGetArchitecture=lambda h: real.NVML_DEVICE_ARCH_HOPPER,
        nvmlDeviceGetCudaComputeCapability=lambda h: (9, 0),
        nvmlDeviceGetTotalEnergyConsumption=counter_mj,
        nvmlDeviceGetPowerUsage=average_mw,
        nvmlDeviceGetFieldValues=field_values,
        nvmlDeviceGetPowerManagementLimit=lambda h: 700_000,
        nvmlDeviceGetPowerManagementDefaultLimit=lambda h: 700_000,
        nvmlDeviceGetPowerManagementLimitConstraints=lambda h: (200_000, 700_000),
        nvmlDeviceGetEnforcedPowerLimit=lambda h: 700_000,
        nvmlDeviceGetClockInfo=lambda h, c: clocks[c],
        nvmlDeviceGetMaxClockInfo=lambda h, c: clocks[c],
        nvmlDeviceGetCurrentClocksEventReasons=lambda h: 0,
        nvmlDeviceGetPerformanceState=lambda h: 0,
        nvmlDeviceGetUtilizationRates=lambda h: types.SimpleNamespace(gpu=0, memory=0),
        nvmlDeviceGetTemperature=lambda h, sensor: 31,
        nvmlDeviceGetMemoryInfo=lambda h: memory,
        nvmlDeviceGetMigMode=lambda h: (real.NVML_DEVICE_MIG_DISABLE, real.NVML_DEVICE_MIG_DISABLE),
        nvmlDeviceGetPersistenceMode=lambda h: 1,
    )
    return fake


def install_fake_nvml() -> None:
    """Put the fake where carbonbench looks it up: its NVML module's ``pynvml`` global."""
    from carbonbench.meters import nvml

    nvml.pynvml = make_fake_nvml()


# -- the children's work (run as `gpu_check.py --child NAME ...`) -------------------------
def child_cli(args: list[str]) -> int:
    """``carbonbench ARGS`` in this process (dry run: after the fake NVML is installed)."""
    from carbonbench.cli import cli

    try:
        cli.main(args=args, prog_name="carbonbench", standalone_mode=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


# Imported to check them: cheap, and the ones a wheel set with a missing dependency breaks.
# The rest are only looked up (importing torch or transformers costs seconds; a broken one
# shows as its step failing).
IMPORT_TO_CHECK = ("codecarbon", "plotly", "pynvml", "click", "yaml", "psutil")


def probe_packages(without: list[str]) -> dict[str, Any]:
    """Each package's version, or why it is not usable here."""
    import importlib.metadata

    found: dict[str, Any] = {}
    for name in sorted(set(VERSIONED_PACKAGES) | set(OPTIONAL_PACKAGES)):
        t0 = time.perf_counter()
        if name in without:
            entry: dict[str, Any] = {"available": False, "error": "hidden by --without"}
        else:
            try:
                if name in IMPORT_TO_CHECK:
                    importlib.import_module(name)
                    if name == "codecarbon":
                        from codecarbon import OfflineEmissionsTracker  # noqa: F401  (what the sidecar uses)
                    if name == "plotly":
                        import plotly.graph_objects  # noqa: F401
                        import plotly.offline  # noqa: F401
                elif importlib.util.find_spec(name) is None:
                    raise ModuleNotFoundError(f"No module named '{name}'")
                entry = {"available": True, "version": importlib.metadata.version(DISTRIBUTIONS.get(name, name))}
            except Exception as exc:  # noqa: BLE001  (a broken install counts as missing, with its reason)
                entry = {"available": False, "error": f"{type(exc).__name__}: {exc}"}
        entry["check_s"] = round(time.perf_counter() - t0, 3)
        found[name] = entry
    return {"python": platform.python_version(), "executable": sys.executable, "packages": found}


def child_roofline(out: Path, plan: dict[str, Any]) -> int:
    """benchmarks/roofline.py's two probes; sizes None are its own (8192^3 bf16, 1 GiB on a GPU)."""
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import roofline

    device = torch.device(plan["device"])
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (dry run)"
    seconds = plan["seconds"]
    ceilings = {
        "device_type": device.type,
        "device_name": name,
        "matmul": roofline.peak_matmul_flops(
            device, getattr(torch, plan["dtype"]), n=plan.get("matmul_n"), seconds=seconds
        ),
        "memory": roofline.memory_bandwidth(device, nbytes=plan.get("copy_bytes"), seconds=seconds),
        "seconds_per_probe": seconds,
    }
    atomic_write(out, _json(ceilings))
    return 0


def child_nvml(out: Path, plan: dict[str, Any]) -> int:
    """Idle power, counter against integrated power on a steady matmul load, idle again.

    All through the project's own meter (NvmlMeter in a MeterSet, whose sampler
    integrates power by the trapezoidal rule): the counter's figure and the integrated
    one come from the same windows. The results file is rewritten after every phase.
    """
    import torch

    from carbonbench.meters.base import MeterSet
    from carbonbench.meters.nvml import NvmlMeter, visible_devices

    deadline = plan["deadline_unix_s"]
    result: dict[str, Any] = {"plan": plan, "phases": {}, "windows": [], "notes": []}

    def save():
        atomic_write(out, _json(result))

    device = torch.device(plan["device"])
    if device.type == "cuda":
        if not torch.cuda.is_available():
            print("torch sees no CUDA GPU: no load to measure", file=sys.stderr)
            return 2
        torch.cuda.set_device(0)
        torch.zeros(1, device=device)  # the CUDA context exists through both idle windows alike
        sync = lambda: torch.cuda.synchronize(device)  # noqa: E731
        uuid = str(torch.cuda.get_device_properties(0).uuid)
        try:
            meter = NvmlMeter(uuids=[uuid], sample_interval_s=plan["sample_interval_s"])
        except Exception as exc:  # noqa: BLE001  (torch's UUID form not known to NVML: CUDA's order then)
            result["notes"].append(f"NVML did not know torch's UUID {uuid} ({exc}); metering the first visible GPU")
            meter = NvmlMeter(indices=visible_devices()[:1], sample_interval_s=plan["sample_interval_s"])
    else:
        torch.set_num_threads(1)
        sync = lambda: None  # noqa: E731
        meter = NvmlMeter(indices=[0], sample_interval_s=plan["sample_interval_s"])
    meters = MeterSet([meter], sync=sync)
    meters.start()
    gpu = meter.gpus[0]
    result["meter"] = meter.describe()
    result["power_source"] = gpu.power_field
    result["energy_source"] = "counter" if gpu.has_counter else "integrated (no energy counter)"
    save()

    def fits(seconds: float) -> bool:
        return time.time() + seconds + 1.0 <= deadline

    def samples(start: float, end: float) -> list[dict]:
        return [r for r in meter.timeline() if start <= r["unix_s"] <= end and r.get("power_w") is not None]

    def measure(label: str, body: Callable[[], dict]) -> dict:
        meters.begin_window(label)
        extra = body()
        m = meters.end_window(label)
        c = m.components[0]
        rows = samples(m.start_unix_s, m.start_unix_s + m.duration_s)
        counter_j = c.energy_j if c.method == "counter" else None
        integrated_j = c.integrated_j if c.method == "counter" else c.energy_j
        clocks = [r["sm_clock_mhz"] for r in rows if r.get("sm_clock_mhz") is not None]
        temps = [r["temperature_c"] for r in rows if r.get("temperature_c") is not None]
        powers = [r["power_w"] for r in rows]
        return {
            "label": label,
            "duration_s": m.duration_s,
            "counter_energy_j": counter_j,
            "integrated_energy_j": integrated_j,
            "counter_over_integrated": counter_j / integrated_j if counter_j is not None and integrated_j else None,
            "counter_power_w": counter_j / m.duration_s if counter_j is not None else None,
            "integrated_power_w": integrated_j / m.duration_s if integrated_j is not None else None,
            "samples": len(rows),
            "sample_power_w_min": min(powers) if powers else None,
            "sample_power_w_max": max(powers) if powers else None,
            "sm_clock_mhz_mean": statistics.fmean(clocks) if clocks else None,
            "temperature_c_max": max(temps) if temps else None,
            "flags": list(m.flags),
            **extra,
        }

    def idle(phase: str) -> None:
        if not fits(plan["idle_s"]):
            result["phases"][phase] = {"status": "skipped", "note": f"{plan['idle_s']:g} s did not fit the time left"}
            return

        def rest() -> dict:
            time.sleep(plan["idle_s"])
            return {}

        result["phases"][phase] = {"status": "ok", **measure(phase, rest)}
        save()

    idle("idle_before")

    n = plan["matmul_n"]
    a = torch.randn(n, n, device=device, dtype=getattr(torch, plan["matmul_dtype"]))
    operands = {"a": a, "b": torch.randn_like(a), "out": torch.empty_like(a)}
    del a
    burst = plan["burst"]
    flops_per_matmul = 2.0 * n**3

    def load(seconds: float) -> dict:
        count, t0 = 0, time.perf_counter()
        while True:
            for _ in range(burst):
                torch.matmul(operands["a"], operands["b"], out=operands["out"])
            count += burst
            sync()  # a short gap every burst, so that the window ends on time
            if time.perf_counter() - t0 >= seconds:
                break
        elapsed = time.perf_counter() - t0
        return {"matmuls": count, "matmul_tflops_per_s": flops_per_matmul * count / elapsed / 1e12}

    total_load_s = plan["load_warmup_s"] + sum(s * k for s, k in plan["windows"])
    if fits(total_load_s + plan["idle_s"]):
        load(plan["load_warmup_s"])  # clocks and power settle before the first window
        for seconds, repeats in plan["windows"]:
            for i in range(repeats):
                w = measure(f"load-{seconds:g}s-{i + 1}", lambda s=seconds: load(s))
                w["target_s"] = seconds
                result["windows"].append(w)
                save()
        result["phases"]["load"] = {
            "status": "ok",
            "windows": len(result["windows"]),
            "matmul": {"n": n, "dtype": plan["matmul_dtype"], "burst": burst},
        }
    else:
        result["phases"]["load"] = {
            "status": "skipped",
            "note": f"{total_load_s:g} s of load did not fit the time left",
        }
    save()
    operands.clear()  # idle after the load with its memory given back, as before it
    if device.type == "cuda":
        torch.cuda.empty_cache()

    idle("idle_after")
    meters.close()
    timeline = meter.timeline()
    columns = ["unix_s", "component", "power_w", "sm_clock_mhz", "mem_clock_mhz", "gpu_util_pct", "temperature_c"]
    lines = [",".join(columns)] + [
        ",".join("" if r.get(k) is None else str(r.get(k)) for k in columns) for r in timeline
    ]
    atomic_write(out.with_name("nvml-timeline.csv"), "\n".join(lines) + "\n")
    result["timeline_rows"] = len(timeline)
    save()
    return 0


def summarise_windows(windows: list[dict]) -> list[dict]:
    """Per window length: the counter/integrated ratio's mean, min and max."""
    out = []
    for target in sorted({w["target_s"] for w in windows}):
        ratios = [
            w["counter_over_integrated"] for w in windows if w["target_s"] == target and w["counter_over_integrated"]
        ]
        power = [w["counter_power_w"] for w in windows if w["target_s"] == target and w["counter_power_w"]]
        out.append(
            {
                "window_s": target,
                "windows": len(ratios),
                "ratio_mean": statistics.fmean(ratios) if ratios else None,
                "ratio_min": min(ratios) if ratios else None,
                "ratio_max": max(ratios) if ratios else None,
                "max_abs_difference_pct": max(abs(r - 1) for r in ratios) * 100 if ratios else None,
                "counter_power_w_mean": statistics.fmean(power) if power else None,
            }
        )
    return out


# -- the check ----------------------------------------------------------------------------
class Check:
    def __init__(self, args: argparse.Namespace, argv: list[str]):
        self.args = args
        self.dry = args.dry_run
        self.profile = DRY if self.dry else GPU
        self.without = sorted(set(args.without))
        self.budget = Budget(args.budget_s, self.profile.finish_reserve_s)
        self.work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="gpu-check-"))
        self.work.mkdir(parents=True, exist_ok=True)
        self.runs_dir = self.work / "runs"
        self.facts = self._nvml_facts()
        name = (self.facts.get("devices") or [{}])[0].get("name") if self.facts.get("available") else None
        self.slug = "dry-run" if self.dry else gpu_slug(name)
        root = (
            Path(args.out_root) if args.out_root else ROOT / ("results/gpu-check" if self.dry else "reports/reference")
        )
        self.out = Path(args.out) if args.out else root / self.slug
        self.out.mkdir(parents=True, exist_ok=True)
        self.log_lines: list[str] = []
        self.packages: dict[str, Any] = {}
        self.summary: dict[str, Any] = {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "status": "running",
            "dry_run": self.dry,
            "gpu_slug": self.slug,
            "gpu_name": name,
            "started_utc": _utc(),
            "finished_utc": None,
            "command": "python benchmarks/gpu_check.py " + " ".join(shlex.quote(a) for a in argv),
            "budget_s": args.budget_s,
            "elapsed_s": 0.0,
            "profile": dataclasses.asdict(self.profile),
            "notes": [],
            "steps": [],
            "versions": {"python": platform.python_version()},
        }
        if self.dry:
            self.note(
                "DRY RUN: the CPU and a fake NVML. Every figure in these files checks the script, "
                "none measures a GPU; never commit them as reference results."
            )
        if self.without:
            self.note(f"packages hidden on purpose (--without): {', '.join(self.without)}")

    # -- bookkeeping ------------------------------------------------------------------
    def log(self, msg: str) -> None:
        line = f"[{self.budget.elapsed():6.1f}s] {msg}"
        print(line, flush=True)
        self.log_lines.append(line)

    def note(self, msg: str) -> None:
        self.summary["notes"].append(msg)
        self.log("note: " + msg)

    def save(self) -> None:
        self.summary["elapsed_s"] = round(self.budget.elapsed(), 1)
        atomic_write(self.out / "summary.json", _json(self.summary))
        atomic_write(self.out / "README.md", readme(self.summary))
        atomic_write(self.out / "gpu-check.log", "\n".join(self.log_lines) + "\n")

    def pack(self) -> None:
        """Run files, scenarios, per-step logs and raw NVML data as one archive: the device
        tool returns at most 8 files, and a committed reference should stay one folder."""
        target = self.out / "runs.tar.gz"
        tmp = target.with_name(".runs.tar.gz.tmp")
        with tarfile.open(tmp, "w:gz") as tar:
            for path in sorted(self.work.rglob("*")):
                if path.is_file() and not path.name.startswith("."):
                    tar.add(path, arcname=f"gpu-check/{path.relative_to(self.work)}")
        os.replace(tmp, target)
        os.chmod(target, 0o644)

    def _nvml_facts(self) -> dict[str, Any]:
        """For the folder's name only (the env step records the facts): read without torch,
        which this process never needs to start CUDA for."""
        if self.dry:
            install_fake_nvml()
        try:
            from carbonbench.meters import nvml_facts
        except ImportError as exc:
            return {"available": False, "reason": str(exc)}
        return nvml_facts.describe_system()

    def available(self, package: str) -> bool:
        if package in self.without:
            return False
        entry = (self.packages.get("packages") or {}).get(package)
        if entry is not None:
            return bool(entry.get("available"))
        return importlib.util.find_spec(package) is not None  # the packages step did not run

    def child_cmd(self, name: str, *extra: str) -> list[str]:
        cmd = [sys.executable, str(SCRIPT), "--child", name]
        if self.dry:
            cmd.append("--dry-run")
        for package in self.without:
            cmd += ["--without", package]
        return cmd + list(extra)

    def carbonbench_cmd(self, *args: str) -> list[str]:
        if self.dry or self.without:  # through the bootstrap that installs the fake or hides packages
            return self.child_cmd("cli", "--", *args)
        return [sys.executable, "-m", "carbonbench", *args]

    def child(self, name: str, cmd: list[str], stdout: Optional[Path] = None) -> ChildResult:
        timeout = self.budget.left()
        self.log(f"{name}: {' '.join(cmd[1:])} (stopped after {timeout:.0f} s)")
        res = run_child(cmd, self.work / "logs" / f"{name}.log", timeout, self.profile.kill_grace_s, stdout, self.dry)
        self.log(
            f"{name}: exit {res.rc} after {res.seconds:.1f} s" + (" (stopped: out of time)" if res.timed_out else "")
        )
        if res.rc != 0:
            for line in res.tail().splitlines():
                self.log(f"  | {line}")
        return res

    # -- the steps --------------------------------------------------------------------
    def step(self, name: str, estimate_s: float, fn: Callable[[], dict]) -> None:
        entry: dict[str, Any] = {"name": name, "estimate_s": round(estimate_s, 1)}
        self.summary["steps"].append(entry)
        if self.args.steps and name not in self.args.steps:
            entry.update(status="skipped", note="not in --steps")
        elif not self.budget.fits(estimate_s):
            entry.update(
                status="skipped",
                note=f"out of time: needs ~{estimate_s:.0f} s, "
                f"{max(self.budget.left(), 0):.0f} s of the {self.budget.total_s:g} s budget left",
            )
            self.log(f"{name}: skipped ({entry['note']})")
        else:
            self.log(f"{name}: start (estimate {estimate_s:.0f} s, {self.budget.left():.0f} s left)")
            t0 = time.monotonic()
            try:
                outcome = fn() or {}
            except KeyboardInterrupt:
                entry.update(status="interrupted", seconds=round(time.monotonic() - t0, 1))
                self.save()
                raise
            except Exception as exc:  # noqa: BLE001  (a broken step is recorded; the next steps still run)
                outcome = {"status": "failed", "note": f"{type(exc).__name__}: {exc}"}
                self.log(traceback.format_exc().rstrip())
            entry["seconds"] = round(time.monotonic() - t0, 1)
            entry.update({"status": "ok", **outcome})
            self.log(f"{name}: {entry['status']}" + (f" ({entry['note']})" if entry.get("note") else ""))
        self.save()

    def step_packages(self) -> dict:
        self.packages = probe_packages(self.without)
        atomic_write(self.work / "packages.json", _json(self.packages))
        versions = self.summary["versions"]
        for name, entry in self.packages["packages"].items():
            versions[DISTRIBUTIONS.get(name, name)] = entry.get("version") if entry.get("available") else None
        versions["python"] = self.packages["python"]
        missing = [p for p in OPTIONAL_PACKAGES if not self.available(p)]
        consequences = {
            "codecarbon": "sidecar off, grid intensity typed in",
            "plotly": "no HTML report",
            "transformers": "no transformers engine run",
        }
        for p in missing:
            why = self.packages["packages"].get(p, {}).get("error", "")
            self.note(f"{p} is missing ({why}): {consequences[p]}")
        return {"missing": missing}

    def step_env(self) -> dict:
        device = "cpu" if self.dry else "auto"
        raw = self.work / "env.json"
        res = self.child("env", self.carbonbench_cmd("env", "--format", "json", "--device", device), stdout=raw)
        if res.rc != 0:
            return {"status": "timeout" if res.timed_out else "failed", "note": f"carbonbench env exited {res.rc}"}
        env = json.loads(raw.read_text())
        atomic_write(self.out / "env.json", _json(env))
        nv = env.get("nvml") or {}
        self.summary["env"] = {
            "torch": env.get("torch"),
            "cuda": env.get("cuda"),
            "nvidia_driver": env.get("nvidia_driver"),
            "gpus": env.get("gpus"),
            "cpu_model": env.get("cpu_model"),
            "nvml": {k: v for k, v in nv.items() if k != "devices"},
            "nvml_devices": [
                {
                    k: d.get(k)
                    for k in (
                        "name",
                        "architecture",
                        "compute_capability",
                        "energy_counter",
                        "power_instant_field",
                        "power_limit_w",
                        "power_limit_default_w",
                        "enforced_power_limit_w",
                        "sm_clock_mhz",
                        "max_sm_clock_mhz",
                        "mem_clock_mhz",
                        "max_mem_clock_mhz",
                        "mig_mode",
                        "persistence_mode",
                        "memory_total_bytes",
                        "refused",
                    )
                }
                for d in nv.get("devices", [])
            ],
        }
        self.summary["versions"].update(
            torch=env.get("torch"),
            cuda=env.get("cuda"),
            nvidia_driver=env.get("nvidia_driver") or nv.get("driver_version"),
        )
        if not nv.get("available"):
            return {"status": "ok", "note": f"NVML not available: {nv.get('reason')}"}
        dev = (nv.get("devices") or [{}])[0]
        if not dev.get("energy_counter"):
            self.note("this GPU has no NVML energy counter: every GPU figure is integrated power")
        if not dev.get("power_instant_field"):
            self.note("no instantaneous power field: sampled power is NVML's 1 s average, so integration lags the load")
        if dev.get("mig_mode") == "enabled":
            self.note("MIG is enabled: NVML energy is per physical GPU, and carbonbench refuses MIG instances")
        return {}

    def nvml_plan(self) -> dict:
        p = self.profile
        return {
            "device": p.device,
            "idle_s": p.idle_s,
            "load_warmup_s": p.load_warmup_s,
            "windows": [list(w) for w in p.windows],
            "matmul_n": p.matmul_n,
            "matmul_dtype": p.matmul_dtype,
            "burst": 20 if p.device == "cuda" else 2,
            "sample_interval_s": p.sample_interval_s,
            "deadline_unix_s": time.time() + self.budget.left(),
        }

    def step_nvml(self) -> dict:
        out = self.work / "nvml.json"
        res = self.child("nvml", self.child_cmd("nvml", "--result", str(out), "--plan", json.dumps(self.nvml_plan())))
        if not out.exists():
            return {"status": "failed", "note": f"the NVML check exited {res.rc} before its first result"}
        data = json.loads(out.read_text())
        phases = data.get("phases", {})
        self.summary["idle"] = {k: phases.get(k) for k in ("idle_before", "idle_after")}
        self.summary["counter_vs_integrated"] = {
            "power_source": data.get("power_source"),
            "energy_source": data.get("energy_source"),
            "by_window": summarise_windows(data.get("windows", [])),
            "windows": data.get("windows", []),
            "notes": data.get("notes", []),
        }
        self.pack()
        skipped = [k for k, v in phases.items() if v.get("status") != "ok"]
        if res.rc != 0:
            return {
                "status": "timeout" if res.timed_out else "failed",
                "note": f"exited {res.rc}; kept what was measured",
            }
        return {"note": f"skipped inside: {', '.join(skipped)}"} if skipped else {}

    def scenario_for(self, engine: str) -> Path:
        import yaml

        data = yaml.safe_load(SCENARIO.read_text())
        for key, value in self.profile.scenario_overrides.items():
            data[key] = {**data.get(key, {}), **value} if key == "measurement" else value
        data["name"] = f"{data['name']}-{engine}"
        data["engine"] = {**data["engine"], "name": "native"} if engine == "native" else {"name": "transformers"}
        if not self.available("codecarbon"):
            data["measurement"]["codecarbon"] = False
            data["carbon"] = {"grid_g_per_kwh": FALLBACK_GRID_G_PER_KWH, "pue": data["carbon"].get("pue", 1.0)}
        path = self.work / "scenarios" / f"gpu-check-{engine}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        header = f"# written by benchmarks/gpu_check.py from {SCENARIO.relative_to(ROOT)}\n"
        atomic_write(path, header + yaml.safe_dump(data, sort_keys=False))
        return path

    def serve_scenario(self) -> Path:
        """The native scenario with a served load (workloads.serve) instead of the static batches."""
        import yaml

        data = yaml.safe_load(self.scenario_for("native").read_text())
        data["name"] = data["name"].replace("-native", "-serve")
        data["workloads"] = {"serve": self.profile.serve}
        data.pop("batch_sizes", None)
        path = self.work / "scenarios" / "gpu-check-serve.yaml"
        atomic_write(
            path, f"# written by benchmarks/gpu_check.py (run-serve step)\n{yaml.safe_dump(data, sort_keys=False)}"
        )
        return path

    def step_run(self, engine: str) -> dict:
        if engine == "transformers" and not self.available("transformers"):
            return {"status": "skipped", "note": "transformers is not installed here"}
        scenario = self.serve_scenario() if engine == "serve" else self.scenario_for(engine)
        if not self.available("codecarbon") and engine == "native":
            self.note(
                f"codecarbon missing: runs have no codecarbon sidecar and a typed-in grid ({FALLBACK_GRID_SOURCE})"
            )
        before = set(self.runs_dir.glob("*.json")) if self.runs_dir.exists() else set()
        res = self.child(f"run-{engine}", self.carbonbench_cmd("run", str(scenario), "--out", str(self.runs_dir)))
        files = sorted(set(self.runs_dir.glob("*.json")) - before) if self.runs_dir.exists() else []
        self.summary.setdefault("runs", {})[engine] = {
            "exit_code": res.rc,
            "seconds": round(res.seconds, 1),
            "timed_out": res.timed_out,
            "run_files": [f.name for f in files],
            "scenario": scenario.name,
        }
        self.pack()
        if res.timed_out:
            return {"status": "timeout", "note": "stopped at the budget; finished points are kept"}
        if res.rc == 1:
            return {
                "status": "failed",
                "note": "some points failed (their errors are in the run file); the others are kept",
            }
        if res.rc != 0:
            return {"status": "failed", "note": f"carbonbench run exited {res.rc}"}
        return {}

    def step_roofline(self) -> dict:
        out = self.work / "roofline.json"
        p = self.profile
        plan = {
            "device": p.device,
            "dtype": p.matmul_dtype,
            "seconds": p.roofline_s,
            "matmul_n": p.roofline_matmul_n,
            "copy_bytes": p.roofline_copy_bytes,
        }
        res = self.child("roofline", self.child_cmd("roofline", "--result", str(out), "--plan", json.dumps(plan)))
        if res.rc != 0 or not out.exists():
            return {"status": "timeout" if res.timed_out else "failed", "note": f"the probe exited {res.rc}"}
        c = json.loads(out.read_text())
        self.summary["roofline"] = {
            "device_name": c.get("device_name"),
            "matmul_flops_per_s": c["matmul"]["flops_per_s"],
            "matmul": {k: c["matmul"][k] for k in ("n", "dtype")},
            "memory_bytes_per_s": c["memory"]["bytes_per_s"],
            "memory": {k: c["memory"][k] for k in ("copy_bytes", "counts")},
            "seconds_per_probe": c.get("seconds_per_probe"),
        }
        self.pack()
        return {}

    def step_headline(self) -> dict:
        files = sorted(self.runs_dir.glob("*.json")) if self.runs_dir.exists() else []
        if not files:
            return {"status": "skipped", "note": "no run files to read"}
        scenario = self.work / "scenarios" / "gpu-check-native.yaml"
        self.summary["headline"] = headline(
            self.runs_dir, self.summary.get("roofline"), scenario if scenario.exists() else self.scenario_for("native")
        )
        return (
            {"note": "; ".join(self.summary["headline"].get("notes", []))}
            if self.summary["headline"].get("notes")
            else {}
        )

    def step_report(self) -> dict:
        if self.args.no_report:
            return {"status": "skipped", "note": "--no-report"}
        for package, why in (
            ("plotly", "the report draws with plotly"),
            ("codecarbon", "the report prices results under grids from codecarbon's data"),
        ):
            if not self.available(package):
                return {"status": "skipped", "note": f"{package} is missing: {why}"}
        if not (self.runs_dir.exists() and any(self.runs_dir.glob("*.json"))):
            return {"status": "skipped", "note": "no run files to report"}
        target = self.out / "report.html"
        title = f"carbonbench GPU check: {self.summary.get('gpu_name') or self.slug}" + (
            " (DRY RUN)" if self.dry else ""
        )
        res = self.child(
            "report", self.carbonbench_cmd("report", str(self.runs_dir), "-o", str(target), "--title", title)
        )
        if res.rc != 0:
            return {"status": "timeout" if res.timed_out else "failed", "note": f"carbonbench report exited {res.rc}"}
        self.summary["report"] = {"file": target.name, "bytes": target.stat().st_size}
        return {}

    # -- all of it --------------------------------------------------------------------
    def run(self) -> int:
        p = self.profile
        est = p.estimates_s
        self.log(f"gpu check ({p.name}) -> {self.out}; work files in {self.work}; budget {self.budget.total_s:.0f} s")
        self.save()
        stopped = None
        try:
            self.step("packages", est["packages"], self.step_packages)
            self.step("env", est["env"], self.step_env)
            self.step("nvml", p.nvml_estimate_s(), self.step_nvml)
            self.step("run-native", est["run-native"], lambda: self.step_run("native"))
            self.step("run-transformers", est["run-transformers"], lambda: self.step_run("transformers"))
            self.step("roofline", est["roofline"], self.step_roofline)
            self.step("headline", est["headline"], self.step_headline)
            self.step("report", est["report"], self.step_report)
            self.step("run-serve", est["run-serve"], lambda: self.step_run("serve"))
        except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: what is done stays done
            stopped = str(exc) or "interrupted"
            self.note(f"the check was stopped ({stopped}); the files hold what finished")
        statuses = [s["status"] for s in self.summary["steps"]]
        bad = [s["name"] for s in self.summary["steps"] if s["status"] in ("failed", "timeout", "interrupted")]
        self.summary["status"] = (
            "interrupted"
            if stopped
            else "failed"
            if bad
            else "partial"
            if "skipped" in statuses or len(statuses) < len(STEPS)
            else "complete"
        )
        self.summary["finished_utc"] = _utc()
        self.summary["files"] = sorted(f.name for f in self.out.iterdir() if f.is_file() and not f.name.startswith("."))
        for name in ("runs.tar.gz", "summary.json", "README.md", "gpu-check.log"):
            if name not in self.summary["files"]:
                self.summary["files"].append(name)
        self.summary["files"].sort()
        self.pack()
        self.log(f"done: {self.summary['status']} in {self.budget.elapsed():.1f} s; files in {self.out}")
        self.save()
        return 1 if bad or stopped else 0


def _utc() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- figures from the run files -----------------------------------------------------------
def _mean(values) -> Optional[float]:
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    vals = [v for v in vals if math.isfinite(v)]
    return statistics.fmean(vals) if vals else None


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return a / b if a is not None and b else None


def headline(runs_dir: Path, roofline_summary: Optional[dict], scenario_path: Path) -> dict:
    """The engine benchmark's headline points, from the run files alone.

    Reads whatever columns results.load gives: MFU/HFU columns of its own (whatever they
    are named, ``mfu``/``hfu`` or longer) are passed on as they are, next to MFU and HFU
    against the matmul rate measured here.
    """
    import roofline
    import yaml

    import carbonbench.results as results
    from carbonbench.scenario import model_card

    notes: list[str] = []
    with _quiet_warnings():
        try:
            df = results.load([runs_dir], on_error="skip")
        except Exception as exc:  # noqa: BLE001  (pricing needs codecarbon's data; energy does not)
            notes.append(f"results.load with derived columns failed ({type(exc).__name__}: {exc}); read without them")
            df = results.load([runs_dir], on_error="skip", derive=False)
    if df.empty:
        return {"notes": notes + ["the run files hold no points"], "points": []}
    ok = df[df["status"] == "ok"] if "status" in df.columns else df
    scenario = yaml.safe_load(scenario_path.read_text())
    model = scenario["models"][0]
    arch = model_card(model).architecture
    recompute = bool(((scenario.get("workloads") or {}).get("train") or {}).get("activation_checkpointing"))
    peak = (roofline_summary or {}).get("matmul_flops_per_s")
    bandwidth = (roofline_summary or {}).get("memory_bytes_per_s")
    if not roofline_summary:
        notes.append("no roofline probe: fractions of measured ceilings are left out")
    own_efficiency = [c for c in df.columns if re.match(r"^(mfu|hfu)(_|$)", str(c))]

    points = []
    keys = ["model", "engine", "workload", "batch_size", "prompt_tokens", "new_tokens", "seq_len"]
    for key, g in ok.groupby([k for k in keys if k in ok.columns], dropna=False, sort=True):
        row = dict(zip([k for k in keys if k in ok.columns], key))
        row = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
        for k in ("batch_size", "prompt_tokens", "new_tokens", "seq_len"):
            if row.get(k) is not None:
                row[k] = int(row[k])
        dtype = str(g["dtype"].iloc[0]) if "dtype" in g.columns else None
        itemsize = {"float32": 4, "bfloat16": 2, "float16": 2}.get(dtype or "", 4)
        tokens, duration = g["tokens"].astype(float), g["duration_s"].astype(float)
        energy = g["energy_j"].astype(float) if "energy_j" in g.columns else None
        row.update(
            repeats=len(g),
            dtype=dtype,
            engine_options=str(g["engine_options"].iloc[0]) if "engine_options" in g.columns else None,
            window_tokens_per_s=_mean(tokens / duration),
            joules_per_token=_mean(energy / tokens) if energy is not None else None,
            power_w=_mean(energy / duration) if energy is not None else None,
            energy_method=",".join(sorted(set(g["energy_method"].dropna().astype(str))))
            if "energy_method" in g.columns
            else None,
        )
        if "energy_gpu_j" in g.columns and g["energy_gpu_j"].notna().any():
            gpu = g["energy_gpu_j"].astype(float)
            row["gpu_joules_per_token"] = _mean(gpu / tokens)
            row["gpu_power_w"] = _mean(gpu / duration)
            row["gpu_energy_method"] = ",".join(sorted(set(g["energy_gpu_method"].dropna().astype(str))))
        if "active_energy_j" in g.columns:
            row["active_joules_per_token"] = _mean(g["active_energy_j"].astype(float) / tokens)
        if row["workload"] == "decode" and "tpot_s" in g.columns:
            # batch / time per output token, as benchmarks/engines.py: the prompt's prefill
            # is not counted against the decode rate
            row["tokens_per_s"] = _mean(row["batch_size"] / g["tpot_s"].astype(float))
            if bandwidth:
                ceiling = roofline.decode_roofline_tokens_per_s(
                    arch, row["batch_size"], row["prompt_tokens"], row["new_tokens"], itemsize, bandwidth
                )
                row["bandwidth_roofline_tokens_per_s"] = ceiling
                row["fraction_of_bandwidth_roofline"] = _ratio(row["tokens_per_s"], ceiling)
        else:
            row["tokens_per_s"] = row["window_tokens_per_s"]
        if row["workload"] in ("train", "prefill") and peak:
            hardware_flops = g["flops"].astype(float) if "flops" in g.columns else None
            if row["workload"] == "train":
                model_flops = g["steps"].astype(float) * roofline.train_model_flops(
                    arch, row["batch_size"], row["seq_len"]
                )
            else:
                model_flops = hardware_flops
            if model_flops is not None:
                row["mfu_measured_peak"] = _mean(model_flops / duration / peak)
            if hardware_flops is not None:
                # the run's own FLOPs count the recompute when checkpointing is on
                row["hfu_measured_peak"] = _mean(hardware_flops / duration / peak)
        for col in own_efficiency:
            row[f"{col}_results"] = _mean(g[col])  # results.load's own, against its datasheet peak
        points.append(row)

    def find(engine, workload, **match):
        for p in points:
            if p["engine"] == engine and p["workload"] == workload and all(p.get(k) == v for k, v in match.items()):
                return p
        return None

    decode = [p for p in points if p["workload"] == "decode"]
    train = [p for p in points if p["workload"] == "train"]
    out: dict[str, Any] = {
        "model": model,
        "notes": notes,
        "points": points,
        "efficiency_columns_from_results": own_efficiency,
        "peak_matmul_flops_per_s": peak,
        "memory_bytes_per_s": bandwidth,
    }
    if decode:
        prompt, new = decode[0]["prompt_tokens"], decode[0]["new_tokens"]
        native = find("native", "decode", batch_size=1, prompt_tokens=prompt, new_tokens=new)
        hf = find("transformers", "decode", batch_size=1, prompt_tokens=prompt, new_tokens=new)
        out["decode_b1"] = {
            "point": f"{model} decode b1 p{prompt} n{new}",
            "native": native,
            "transformers": hf,
            "native_over_transformers_tokens_per_s": _ratio(
                (native or {}).get("tokens_per_s"), (hf or {}).get("tokens_per_s")
            ),
            "native_over_transformers_joules_per_token": _ratio(
                (native or {}).get("joules_per_token"), (hf or {}).get("joules_per_token")
            ),
            "native_over_transformers_gpu_joules_per_token": _ratio(
                (native or {}).get("gpu_joules_per_token"), (hf or {}).get("gpu_joules_per_token")
            ),
        }
    if train:
        seq = max(p["seq_len"] for p in train)
        out["train"] = {
            "seq_len": seq,
            "recompute": recompute,
            "native": find("native", "train", seq_len=seq),
            "transformers": find("transformers", "train", seq_len=seq),
        }
    return out


class _quiet_warnings:
    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore")

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


# -- the README ---------------------------------------------------------------------------
def _f(x, digits: int = 3) -> str:
    """A figure for a table: 3 significant digits, thousands grouped rather than 1.2e+03."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    if abs(x) >= 10**digits:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _energy(p: dict, prefix: str = "") -> str:
    """J/token with the method that produced it: counter, integrated or estimated."""
    value = p.get(f"{prefix}joules_per_token")
    method = p.get(f"{prefix}energy_method" if prefix else "energy_method")
    return "-" if value is None else f"{_f(value)} ({method or 'no method'})"


def readme(s: dict) -> str:
    dry = s.get("dry_run")
    lines = [
        f"# GPU check: {s.get('gpu_name') or s.get('gpu_slug')}" + (" (DRY RUN, not a measurement)" if dry else ""),
        "",
    ]
    if dry:
        lines += [
            "**Dry run**: the CPU and a fake NVML. These files check that `benchmarks/gpu_check.py` works;",
            "no figure below measures a GPU.",
            "",
        ]
    lines += [
        f"Status **{s.get('status')}**, {s.get('elapsed_s')} s of a {s.get('budget_s'):g} s budget, "
        f"started {s.get('started_utc')}.",
        "",
        "Command (docs/gpu.md has the one line that installs the wheels and runs it on a lent machine):",
        "",
        "```",
        s.get("command", ""),
        "```",
        "",
    ]
    v = s.get("versions", {})
    shown = ", ".join(
        f"{k} {v[k]}"
        for k in (
            "python",
            "torch",
            "cuda",
            "nvidia_driver",
            "transformers",
            "codecarbon",
            "plotly",
            "pandas",
            "numpy",
            "nvidia-ml-py",
        )
        if v.get(k)
    )
    lines += [f"Versions: {shown}. carbonbench from this commit's checkout.", ""]

    h = s.get("headline") or {}
    if h:
        lines += ["## Headline", ""]
        d = h.get("decode_b1")
        if d:
            lines += [
                f"{d['point']}: decode tokens/s are batch / time per output token; J/token is the whole window's"
                " energy over its tokens, prefill included. GPU is the GPU alone; total adds the CPU and DRAM,"
                " and is only as good as its weakest part (each figure names its method).",
                "",
                "| engine | tokens/s | GPU J/token | total J/token | GPU W | % of measured bandwidth roofline |",
                "|---|---|---|---|---|---|",
            ]
            for eng in ("native", "transformers"):
                p = d.get(eng)
                if p:
                    lines.append(
                        f"| {eng} | {_f(p.get('tokens_per_s'))} | {_energy(p, 'gpu_')} | {_energy(p)}"
                        f" | {_f(p.get('gpu_power_w'))} | {_pct(p.get('fraction_of_bandwidth_roofline'))} |"
                    )
                else:
                    lines.append(f"| {eng} | not measured | | | | |")
            lines.append("")
            for eng in ("native", "transformers"):
                if (d.get(eng) or {}).get("engine_options"):
                    lines.append(f"- {eng} as run: `{d[eng]['engine_options']}`")
            lines += [
                "",
                f"native / transformers: tokens/s **{_f(d.get('native_over_transformers_tokens_per_s'))}**,"
                f" GPU J/token **{_f(d.get('native_over_transformers_gpu_joules_per_token'))}**,"
                f" total J/token {_f(d.get('native_over_transformers_joules_per_token'))}.",
                "",
            ]
        t = h.get("train")
        if t:
            lines += [
                f"Training at seq {t['seq_len']} (activation recompute {'on' if t['recompute'] else 'off'}). MFU counts"
                " the model's FLOPs (3 forwards), HFU the FLOPs run; both against the matmul rate measured below."
                " `results.load` adds its own against the datasheet peak where it knows the GPU.",
                "",
                "| engine | batch | tokens/s | MFU | HFU | results.load's own | GPU J/token | total J/token |",
                "|---|---|---|---|---|---|---|---|",
            ]
            for eng in ("native", "transformers"):
                p = t.get(eng)
                if p:
                    own = (
                        ", ".join(f"{k.removesuffix('_results')} {_pct(p[k])}" for k in p if k.endswith("_results"))
                        or "-"
                    )
                    lines.append(
                        f"| {eng} | {p.get('batch_size')} | {_f(p.get('tokens_per_s'))} | {_pct(p.get('mfu_measured_peak'))}"
                        f" | {_pct(p.get('hfu_measured_peak'))} | {own} | {_energy(p, 'gpu_')} | {_energy(p)} |"
                    )
                else:
                    lines.append(f"| {eng} | not measured | | | | | | |")
            lines.append("")
    r = s.get("roofline")
    if r:
        lines += [
            f"Ceilings measured here: matmul {_f(r['matmul_flops_per_s'] / 1e12)} TFLOP/s ({r['matmul']['dtype']}, "
            f"n={r['matmul']['n']}), copy {_f(r['memory_bytes_per_s'] / 1e9)} GB/s (read + write, "
            f"{r['memory']['copy_bytes'] / 2**20:.0f} MiB), best of 5 trials of {r.get('seconds_per_probe')} s.",
            "",
        ]

    cvi = s.get("counter_vs_integrated")
    if cvi:
        lines += [
            "## NVML energy counter against integrated power",
            "",
            f"A steady {s['profile']['matmul_dtype']} matmul load (n={s['profile']['matmul_n']}). Per window, the energy "
            "counter's delta and the trapezoidal integral of the sampler's power readings "
            f"(power source: {cvi.get('power_source')}; every {s['profile']['sample_interval_s']} s).",
            "",
            "| window | windows | counter / integrated: mean [min, max] | max difference | counter W |",
            "|---|---|---|---|---|",
        ]
        for w in cvi.get("by_window", []):
            lines.append(
                f"| {w['window_s']:g} s | {w['windows']} | {_f(w['ratio_mean'], 4)} [{_f(w['ratio_min'], 4)}, "
                f"{_f(w['ratio_max'], 4)}] | {_f(w['max_abs_difference_pct'], 2)}% | {_f(w['counter_power_w_mean'])} |"
            )
        lines.append("")
    idle = s.get("idle") or {}
    if any(idle.values()):
        lines += [
            f"Idle power (this process asleep{'' if dry else ', its CUDA context open'}):",
            "",
            "| when | seconds | counter W | integrated W | SM clock MHz | max temp C |",
            "|---|---|---|---|---|---|",
        ]
        for k, label in (("idle_before", "before the load"), ("idle_after", "right after the load")):
            p = idle.get(k) or {}
            if p.get("status") == "ok":
                lines.append(
                    f"| {label} | {_f(p['duration_s'])} | {_f(p['counter_power_w'])} | {_f(p['integrated_power_w'])} "
                    f"| {_f(p['sm_clock_mhz_mean'], 4)} | {_f(p['temperature_c_max'])} |"
                )
            elif p:
                lines.append(f"| {label} | skipped: {p.get('note')} | | | | |")
        lines.append("")
    pts = (h or {}).get("points") or []
    if pts:
        lines += [
            "## Every point",
            "",
            "| engine | point | tokens/s | GPU J/token | total J/token | GPU W | roofline |",
            "|---|---|---|---|---|---|---|",
        ]
        for p in pts:
            sizes = {
                "prefill": f"b{p['batch_size']} p{p.get('prompt_tokens')}",
                "decode": f"b{p['batch_size']} p{p.get('prompt_tokens')} n{p.get('new_tokens')}",
                "train": f"b{p['batch_size']} s{p.get('seq_len')}",
            }.get(p["workload"], "")
            roof = (
                _pct(p.get("fraction_of_bandwidth_roofline")) + " of bandwidth"
                if p["workload"] == "decode"
                else _pct(p.get("mfu_measured_peak")) + " MFU"
            )
            lines.append(
                f"| {p['engine']} | {p['workload']} {sizes} | {_f(p.get('tokens_per_s'))} | {_energy(p, 'gpu_')} "
                f"| {_energy(p)} | {_f(p.get('gpu_power_w'))} | {roof} |"
            )
        lines.append("")
    lines += ["## Steps", "", "| step | status | seconds | estimate | note |", "|---|---|---|---|---|"]
    for st in s.get("steps", []):
        lines.append(
            f"| {st['name']} | {st['status']} | {st.get('seconds', '-')} | {st.get('estimate_s')} | {st.get('note', '')} |"
        )
    lines.append("")
    if s.get("notes"):
        lines += ["Notes:", ""] + [f"- {n}" for n in s["notes"]] + [""]
    lines += [
        "## Files",
        "",
        "- `summary.json`: everything above, machine-readable (schema carbonbench.gpu_check 1)",
        "- `env.json`: `carbonbench env --json`",
        "- `runs.tar.gz`: the run files and timelines (`carbonbench report` reads them unpacked), the scenarios run,"
        " the NVML check's raw windows and power timeline, the ceilings, and each step's log",
        "- `report.html`: `carbonbench report` over the run files (when plotly was there)",
        "- `gpu-check.log`: the check's own log",
        "",
    ]
    return "\n".join(lines)


# -- command line -------------------------------------------------------------------------
def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog="Steps: " + ", ".join(STEPS) + ". docs/gpu.md has the details."
    )
    parser.add_argument("--dry-run", action="store_true", help="the CPU, a fake NVML and tiny sizes: checks the script")
    parser.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help=f"time budget in seconds (default {DEFAULT_BUDGET_S:g}; {DRY_RUN_BUDGET_S:g} for --dry-run)",
    )
    parser.add_argument("--out", help="the output folder exactly (default: OUT_ROOT/<gpu-slug>)")
    parser.add_argument(
        "--out-root",
        help="where the <gpu-slug> folder goes (default: reports/reference; results/gpu-check for --dry-run)",
    )
    parser.add_argument("--work", help="folder for the working files (default: a new temporary folder)")
    parser.add_argument(
        "--steps",
        type=lambda t: [s.strip() for s in t.split(",") if s.strip()],
        help="only these steps, comma-separated (default: all)",
    )
    parser.add_argument("--no-report", action="store_true", help="skip the HTML report (about 5 MB)")
    parser.add_argument(
        "--without",
        action="append",
        default=[],
        choices=OPTIONAL_PACKAGES,
        help="behave as if this package were missing (to test what a machine without it gets)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--plan", help=argparse.SUPPRESS)
    parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.budget_s is None:
        args.budget_s = DRY_RUN_BUDGET_S if args.dry_run else DEFAULT_BUDGET_S
    unknown = [s for s in args.steps or [] if s not in STEPS]
    if unknown:
        parser.error(f"--steps: unknown step(s) {', '.join(unknown)} (steps: {', '.join(STEPS)})")
    return args


def child_main(args: argparse.Namespace) -> int:
    sys.path.insert(0, str(ROOT))
    if args.without:
        _hide(args.without)
    if args.dry_run:
        install_fake_nvml()
    if args.child == "cli":
        rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
        return child_cli(rest)
    plan = json.loads(args.plan)
    if args.child == "nvml":
        return child_nvml(Path(args.result), plan)
    if args.child == "roofline":
        return child_roofline(Path(args.result), plan)
    raise SystemExit(f"unknown child {args.child}")


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse(argv)
    if args.child:
        return child_main(args)
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    if args.without:
        _hide(args.without)  # here too: reading the results must not lean on them either

    def stop(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, stop)
    return Check(args, argv).run()


if __name__ == "__main__":
    sys.exit(main())
