#!/usr/bin/env bash
# Install alignrl into ./.venv (or the active virtual environment).
#   bash scripts/install.sh            # the library, the `alignrl` command and the test tools
#   ALIGNRL_EXTRAS=dev,deepspeed bash scripts/install.sh
# PyTorch is installed first and then pinned, so no later requirement can swap in a multi-GB CUDA build:
# a local wheel if pip has one, the CPU build on machines without an NVIDIA GPU, the default (CUDA) build otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_VERSION="${ALIGNRL_TORCH_VERSION:-2.13.0}"
EXTRAS="${ALIGNRL_EXTRAS:-dev}"

if [ -z "${VIRTUAL_ENV:-}" ]; then
  [ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
  # shellcheck disable=SC1091
  . .venv/bin/activate
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1

if ! python -c "import torch" 2>/dev/null; then
  probe="$(mktemp -d)"
  if pip download -q --no-deps --no-index -d "$probe" "torch==${TORCH_VERSION}" >/dev/null 2>&1; then
    pip install -q "torch==${TORCH_VERSION}"            # pip's configured find-links hold a wheel: use it
  elif command -v nvidia-smi >/dev/null 2>&1; then
    pip install -q "torch==${TORCH_VERSION}"
  else
    pip install -q "torch==${TORCH_VERSION}" --index-url https://download.pytorch.org/whl/cpu
  fi
  rm -rf "$probe"
fi
installed="$(python -c 'import torch; print(torch.__version__.split("+")[0])')"
echo "torch==${installed}" > .venv-torch-constraint.txt
DS_BUILD_OPS=0 pip install -q -c .venv-torch-constraint.txt -e ".[${EXTRAS}]"
rm -f .venv-torch-constraint.txt
python -c "import alignrl, torch, transformers, trl; print(f'alignrl ready: torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}')"
