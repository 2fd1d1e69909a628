"""Wall time and peak memory of the light commands: this tree against another (main's code).

    git archive <base-commit> | tar -x -C /tmp/base     # main's code, beside this tree
    python benchmarks/startup.py --base /tmp/base --rounds 5

Each command is a fresh ``python -m carbonbench ...`` process, run alternately with this
tree's code and with ``PYTHONPATH=BASE`` (the same interpreter and packages), round after
round, so that a busy neighbour slows both alike. CPU time (user + system) and peak RSS
are the child's own (``os.wait4``); CPU time depends less on the neighbours than wall time. It also says whether torch or pandas ended up imported (``-X importtime``
of the same command). Prints a Markdown table of medians, with the load average.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = [
    ["--help"],
    ["models"],
    ["plan", "opt-125m", "--hardware", "a100-80gb"],
    ["estimate", "--devices", "8", "--hours", "1", "--hardware", "a100-80gb", "--country", "FRA"],
    ["estimate", "--model", "opt-175b", "--tokens", "300e9", "--hardware", "a100-80gb", "--devices", "992"]
    + ["--achieved-tflops", "147"],
    ["env", "--device", "cpu"],
]


def timed(args: list[str], env: dict) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds (user + system: less sensitive to a busy host) and peak RSS (MiB)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "carbonbench", *args],
        env=env,
        cwd=env["PYTHONPATH"],  # `-m` puts the working directory first on sys.path
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(args)} failed with {env.get('PYTHONPATH', 'this tree')}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def heavy(args: list[str], env: dict) -> str:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "carbonbench", *args],
        env=env,
        cwd=env["PYTHONPATH"],
        capture_output=True,
        text=True,
    )
    names = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    return ", ".join(m for m in ("torch", "pandas") if m in names) or "neither"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", type=Path, required=True, help="a tree of main's code")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    envs = {"main": {**os.environ, "PYTHONPATH": str(args.base)}, "this": {**os.environ, "PYTHONPATH": str(ROOT)}}
    load = os.getloadavg()
    figures: dict = {}
    for r in range(args.rounds):
        for cmd in COMMANDS:
            for which in ("main", "this") if r % 2 == 0 else ("this", "main"):
                figures.setdefault((tuple(cmd), which), []).append(timed(cmd, envs[which]))
    print(f"load average before {[round(x, 2) for x in load]}, after {[round(x, 2) for x in os.getloadavg()]}; ")
    print(f"{args.rounds} interleaved rounds, medians\n")
    print("| command | main: wall | CPU | peak RSS | imports | this: wall | CPU | peak RSS | imports |")
    print("|---|---:|---:|---:|---|---:|---:|---:|---|")
    for cmd in COMMANDS:
        cells = []
        for which in ("main", "this"):
            runs = figures[(tuple(cmd), which)]
            wall, cpu, rss = (statistics.median(r[i] for r in runs) for i in range(3))
            cells += [f"{wall:.2f} s", f"{cpu:.2f} s", f"{rss:.0f} MiB", heavy(cmd, envs[which])]
        print(f"| `carbonbench {' '.join(cmd)}` | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
