#!/usr/bin/env bash
# Download, here, the wheels bench/gpu_smoke.sh installs on the GPU machine, which has no network:
# the cp312 manylinux (or pure-Python) wheels of exactly the packages in bench/gpu_wheels.txt, no
# dependencies (the machine's image holds the rest), into bench/.gpu-wheels (ignored by git; the
# device call carries it). Fails if they come to 64 MiB or more, the most a device call carries.
# Usage: bash bench/gpu_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PIP=${PIP:-.venv/bin/pip}
DEST=bench/.gpu-wheels
rm -rf "$DEST" && mkdir -p "$DEST"
"$PIP" download --quiet --no-deps --only-binary=:all: --dest "$DEST" \
  --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any \
  -r bench/gpu_wheels.txt
want=$(grep -cv '^\s*\(#\|$\)' bench/gpu_wheels.txt)
got=$(ls "$DEST"/*.whl | wc -l)
bytes=$(du -cb "$DEST"/*.whl | tail -1 | cut -f1)
echo "gpu_wheels: $got wheels of $want packages, $((bytes / 1024 / 1024)) MiB in $DEST"
[ "$got" -eq "$want" ] || { echo "gpu_wheels: expected $want wheels" >&2; exit 1; }
[ "$bytes" -lt $((64 * 1024 * 1024)) ] || { echo "gpu_wheels: 64 MiB or more; a device call carries at most 64 MiB" >&2; exit 1; }
