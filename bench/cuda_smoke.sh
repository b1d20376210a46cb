#!/usr/bin/env bash
# CUDA smoke check (bench/cuda_smoke.py) from the repository root, on a machine with a GPU:
#   bash bench/cuda_smoke.sh [--device cuda] [--data-root DIR] [--cpu-img-s N] [--quick]
# Wheels in .whl/ (packages the GPU machine lacks: hydra-core, omegaconf, optuna, pymoo, ...) are installed into
# /tmp/site first; Fashion-MNIST is read from .data/fashion-mnist when that folder exists.
set -euo pipefail
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
args=("$@")
if [[ -d .data/fashion-mnist && " $* " != *" --data-root "* ]]; then
  args+=(--data-root "$PWD/.data/fashion-mnist")
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
exec python3 bench/cuda_smoke.py "${args[@]}"
