#!/bin/bash
# The GPU checks, as one script for a machine with a CUDA GPU and alignrl's dependencies importable:
#   bash benchmarks/gpu_check.sh [OUT_DIR]
# 1. the gpu-marked tests (bf16 mixed precision with fp32 master weights, the engine on the GPU, SFT in bf16);
# 2. the quickstart on the GPU, for its wall time against the CPU figures in README.md.
# Where the packages travel as wheels in .whl/ (a machine with no package index), they are installed first.
set -o pipefail
PY=${PYTHON:-python3}  # e.g. PYTHON=.venv/bin/python
OUT_DIR=${1:-${OUT:-/tmp/alignrl-gpu-check}}
mkdir -p "$OUT_DIR"
if compgen -G ".whl/*.whl" > /dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PY" -c "import torch, transformers, trl, accelerate, datasets; print('torch', torch.__version__, 'transformers',
transformers.__version__, 'trl', trl.__version__, 'accelerate', accelerate.__version__, 'datasets', datasets.__version__)"
"$PY" -m pytest -m gpu -p no:cacheprovider tests/test_gpu.py -v 2>&1 | tee "$OUT_DIR/gpu_tests.log"
tests_rc=$?
rm -rf /tmp/alignrl-qs-gpu
"$PY" -m alignrl.cli quickstart --out /tmp/alignrl-qs-gpu --seed 0 > "$OUT_DIR/quickstart.log" 2>&1
echo "quickstart exit $?"
cp /tmp/alignrl-qs-gpu/report.json /tmp/alignrl-qs-gpu/report.md "$OUT_DIR/" 2>/dev/null
"$PY" -c "import json; r = json.load(open('$OUT_DIR/report.json')); print({k: r[k] for k in
('bc_pass_at_1', 'rl_pass_at_1', 'wall_seconds', 'bc_seconds', 'rl_seconds')})"
exit $tests_rc
