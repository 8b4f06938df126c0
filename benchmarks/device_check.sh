#!/usr/bin/env bash
# The GPU check of the learner's speed (ready to run on a machine with a CUDA GPU; the project never needs one):
# O2OSAC's learner on CUDA against the pure-torch reference on CUDA, as JSON.
#   bash benchmarks/device_check.sh [OUT.json [ARGS...]]   (default OUT benchmarks/results/device_check_cuda.json)
# ARGS go to benchmarks/device_check.py, e.g. --compile (also the losses under torch.compile, CUDA graphs):
#   bash benchmarks/device_check.sh benchmarks/results/device_check_cuda.json --compile
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: this check needs a GPU')"
python benchmarks/device_check.py --device cuda --json "${1:-benchmarks/results/device_check_cuda.json}" "${@:2}"
