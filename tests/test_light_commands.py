"""The light commands never import torch or pandas: each runs in a fresh interpreter and
reports what its sys.modules holds afterwards (benchmarks/startup.py has the timings)."""

import json
import subprocess
import sys

import pytest

# Runs the command in this process, then prints which heavy modules it imported.
PROBE = """
import json, sys
from carbonbench.cli import cli
try:
    cli(sys.argv[1:], prog_name="carbonbench", standalone_mode=False)
except SystemExit as exc:
    assert not exc.code, exc.code
print(json.dumps([m for m in ("torch", "pandas", "plotly") if m in sys.modules]))
"""

LIGHT = {
    "help": ["--help"],
    "models": ["models"],
    "models-json": ["models", "--format", "json"],
    "plan": ["plan", "opt-1.3b", "--hardware", "a100-80gb"],
    "estimate-power": ["estimate", "--devices", "8", "--hours", "1", "--hardware", "a100-80gb", "--country", "FRA"],
    "estimate-training": [
        *("estimate", "--model", "opt-175b", "--tokens", "300e9", "--hardware", "a100-80gb"),
        *("--devices", "992", "--achieved-tflops", "147"),
    ],
    "env-cpu": ["env", "--device", "cpu", "--format", "json"],
}


def heavy_modules(args, tmp_path) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", sorted(LIGHT))
def test_a_light_command_imports_neither_torch_nor_pandas(name, tmp_path):
    assert heavy_modules(LIGHT[name], tmp_path) == []


def test_env_without_torch_still_says_which_torch_and_the_auto_threads(tmp_path):
    code = PROBE.replace('print(json.dumps([m for m in ("torch", "pandas", "plotly") if m in sys.modules]))', "")
    done = subprocess.run(
        [sys.executable, "-c", code, "env", "--device", "cpu", "--format", "json"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    info = json.loads(done.stdout)
    import torch  # here, to compare with what env read from torch's files without it

    assert info["torch"] == torch.__version__ and info["cuda"] == torch.version.cuda
    assert info["threads_auto"] >= 1 and info["device_type"] == "cpu"


def test_the_opt_package_still_gives_its_names_on_first_use():
    import carbonbench.opt as opt

    assert opt.load.__module__ == "carbonbench.opt.loading"
    assert opt.Architecture.__module__ == "carbonbench.opt.card"
    with pytest.raises(AttributeError):
        _ = opt.no_such_name
