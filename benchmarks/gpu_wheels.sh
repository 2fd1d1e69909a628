#!/usr/bin/env bash
# The wheels that benchmarks/gpu_check.py needs on the lent H200 machine and that its
# Python lacks, downloaded into .whl/ (gitignored) for the device tool to carry there.
#
#   bash benchmarks/gpu_wheels.sh        # here, with network; then the one-line command in docs/gpu.md
#
# That machine has Python 3.12 with torch 2.11, transformers, pandas, pyarrow, numpy,
# click, tokenizers, safetensors, pyyaml, psutil, nvidia-ml-py, requests, rich, typer,
# prometheus-client, py-cpuinfo, python-dateutil, narwhals and packaging (the device
# tool's KINDS.md package list), and no registry. Missing: carbonbench's codecarbon and
# plotly, and these of their declared dependencies:
#   codecarbon   -> arrow (-> tzdata), authlib and joserfc (-> cryptography -> cffi ->
#                   pycparser), pydantic (-> pydantic-core, annotated-types,
#                   typing-inspection), questionary (-> prompt-toolkit -> wcwidth),
#                   rapidfuzz, pycountry
#   plotly       -> nothing missing (narwhals, packaging are there)
# A tracker at run time imports only rapidfuzz and pycountry of these; the rest are
# codecarbon's command line and API login, carried anyway so that no import path of it
# fails half-way. Versions are the ones this project's tests run with.
#
# Installed there with --no-deps into a folder of their own (docs/gpu.md), so nothing
# the image holds is replaced. Each name appears once: two versions of one package stop
# pip's whole install.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
DEST=.whl
WHEELS=(
  codecarbon==3.3.2
  plotly==7.1.0
  arrow==1.4.0
  tzdata==2026.6
  authlib==1.9.10
  joserfc==1.8.0
  cryptography==50.0.2
  cffi==2.1.1
  pycparser==3.12
  pydantic==2.14.4
  pydantic-core==2.50.5
  annotated-types==0.8.0
  typing-inspection==0.4.5
  questionary==2.1.1
  prompt-toolkit==3.0.53
  wcwidth==0.9.4
  rapidfuzz==3.14.6
  pycountry==26.2.16
)
# The device tool's limit on what travels: the working tree and the carried wheels together.
LIMIT_BYTES=$((64 * 1024 * 1024))

rm -rf "$DEST"
mkdir -p "$DEST"
# pip matches each manylinux tag exactly, so list the ones wheels are published under.
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform manylinux_2_34_x86_64 \
  --platform manylinux_2_24_x86_64 -d "$DEST" "${WHEELS[@]}"

"$PYTHON" - "$DEST" "$LIMIT_BYTES" "${#WHEELS[@]}" <<'EOF'
import os, re, subprocess, sys
dest, limit, wanted = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
wheels = sorted(f for f in os.listdir(dest) if f.endswith(".whl"))
names = [re.sub(r"[-_.]+", "-", w.split("-")[0]).lower() for w in wheels]
dupes = sorted({n for n in names if names.count(n) > 1})
if dupes or len(wheels) != wanted:
    sys.exit(f"expected {wanted} wheels, one per package; got {len(wheels)} (twice: {', '.join(dupes) or 'none'})")
wheel_bytes = sum(os.path.getsize(os.path.join(dest, w)) for w in wheels)
files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], capture_output=True, check=True).stdout
tree_bytes = sum(os.path.getsize(f) for f in files.decode().split("\0") if f and os.path.isfile(f))
for w in wheels:
    print(f"{os.path.getsize(os.path.join(dest, w)) / 2**20:7.2f} MiB  {w}")
total = wheel_bytes + tree_bytes
print(f"{len(wheels)} wheels: {wheel_bytes / 2**20:.1f} MiB; working tree {tree_bytes / 2**20:.1f} MiB; "
      f"together {total / 2**20:.1f} MiB of the {limit / 2**20:.0f} MiB the device tool carries")
if total > limit:
    sys.exit("too large for the device tool: carry fewer wheels or trim the working tree")
EOF
