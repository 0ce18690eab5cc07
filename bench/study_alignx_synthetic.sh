#!/usr/bin/env bash
# The AlignX study on synthetic users: DPO on the ica, pba and none views at the same budget,
# evaluated on held-out users (bench/study_alignx_synthetic.py documents the protocol).
#   bash bench/study_alignx_synthetic.sh cpu   # about an hour on a 2-core CPU; writes results/alignx-synthetic.md
#   bash bench/study_alignx_synthetic.sh gpu   # thousands of steps, bf16; run it on a GPU machine
set -euo pipefail
cd "$(dirname "$0")/.."
size="${1:-cpu}"
PY="${PYTHON:-.venv/bin/python}"
exec "$PY" bench/study_alignx_synthetic.py --size "$size" --write-results
