"""alignrl's vLLM worker extension: weight pushes that cross a process or HTTP boundary, and small probes.

vLLM mixes this class into each of its workers (``worker_extension_cls="alignrl.rollout.vllm_worker.
WorkerExtension"``; ``alignrl serve`` passes it), so its methods run in the worker with ``self`` the worker and
are called through ``collective_rpc`` (in process, from vLLM's worker processes, or over a server's
``POST /collective_rpc``, whose arguments are JSON strings). Weight transfers:

- ``alignrl_receive(data)``: one bucket as ``safetensors`` bytes (or their base64 text over HTTP), kept until
- ``alignrl_apply()``: reloads every received tensor in ONE ``reload_weights`` call. vLLM reloads layer by layer and
  a layer whose tensors arrive over two calls would be rebuilt from half its weights, so buckets are never applied
  one at a time.
- ``alignrl_write_adapter(name, config, data)``: writes a LoRA adapter folder on the worker's machine (for a
  server's ``/v1/load_lora_adapter``) and returns its path.

This module imports neither alignrl's trainer nor vLLM at import time: it must load cheaply in every worker.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
from typing import Any

# a bump when the methods below change, so a client can tell it talks to a matching server
PROTOCOL_VERSION = 1


def decode_payload(data: bytes | str) -> bytes:
    """``safetensors`` bytes from raw bytes or their base64 text (JSON transports carry text only)."""
    return base64.b64decode(data) if isinstance(data, str) else bytes(data)


class WorkerExtension:
    """Methods mixed into vLLM's worker (``self`` is the worker: ``self.model_runner``, ``self.vllm_config``)."""

    _alignrl_pending: dict | None = None
    _alignrl_adapter_root: str | None = None

    def alignrl_info(self) -> dict[str, Any]:
        """What the client checks before trusting the server: protocol, logprobs mode, LoRA, process id."""
        config = self.vllm_config  # type: ignore[attr-defined]
        lora = config.lora_config
        return {"protocol": PROTOCOL_VERSION, "logprobs_mode": str(config.model_config.logprobs_mode),
                "model": str(config.model_config.model), "lora": lora is not None,
                "max_lora_rank": int(lora.max_lora_rank) if lora is not None else 0, "pid": os.getpid(),
                "tie_word_embeddings": bool(getattr(config.model_config.hf_text_config, "tie_word_embeddings",
                                                    False))}

    def alignrl_receive(self, data: bytes | str) -> int:
        """Keep one bucket (safetensors bytes or base64 text) for :meth:`alignrl_apply`; returns tensors held."""
        from safetensors.torch import load

        if self._alignrl_pending is None:
            self._alignrl_pending = {}
        self._alignrl_pending.update(load(decode_payload(data)))
        return len(self._alignrl_pending)

    def alignrl_receive_file(self, path: str) -> int:
        """:meth:`alignrl_receive` from a safetensors file on this machine (``weight_transfer: folder``)."""
        with open(path, "rb") as handle:
            return self.alignrl_receive(handle.read())

    def alignrl_apply(self) -> int:
        """Reload every received tensor into the model at once; returns how many were loaded."""
        pending, self._alignrl_pending = self._alignrl_pending or {}, None
        if not pending:
            raise ValueError("alignrl_apply: no weights were received")
        self.reload_weights(weights_iterator=iter(pending.items()))  # type: ignore[attr-defined]
        return len(pending)

    def alignrl_abort_reload(self) -> None:
        """After a reload that failed part-way: put back the layers not reloaded and end vLLM's reload state."""
        from vllm.model_executor.model_loader.reload.layerwise import finalize_layerwise_reload

        model_runner = self.model_runner  # type: ignore[attr-defined]
        finalize_layerwise_reload(model_runner.get_model(), self.vllm_config.model_config)  # type: ignore[attr-defined]

    def alignrl_discard(self) -> None:
        """Drop received tensors (a push that failed half-way)."""
        self._alignrl_pending = None

    def alignrl_write_adapter(self, name: str, config: str, data: bytes | str) -> str:
        """Write a peft adapter folder (``adapter_config.json`` + ``adapter_model.safetensors``); returns its path."""
        if self._alignrl_adapter_root is None:
            self._alignrl_adapter_root = tempfile.mkdtemp(prefix="alignrl-lora-")
        if not name.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"adapter name {name!r}: use letters, digits, '-' and '_' only")
        folder = os.path.join(self._alignrl_adapter_root, name)
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "adapter_model.safetensors"), "wb") as handle:
            handle.write(decode_payload(data))
        with open(os.path.join(folder, "adapter_config.json"), "w", encoding="utf-8") as handle:
            json.dump(json.loads(config), handle)
        return folder

    def alignrl_remove_adapter_files(self, path: str) -> None:
        """Delete an adapter folder this extension wrote (vLLM has loaded it into memory by then)."""
        import shutil

        root = self._alignrl_adapter_root
        if root and os.path.dirname(os.path.abspath(path)) == os.path.abspath(root):
            shutil.rmtree(path, ignore_errors=True)

    def alignrl_checksum(self) -> float:
        """Sum of the model's base parameters (LoRA slots excluded) in float64: a fingerprint of the base weights."""
        import torch

        model = self.model_runner.model  # type: ignore[attr-defined]
        with torch.no_grad():
            return float(sum(p.detach().double().sum() for name, p in model.named_parameters()
                             if p.is_floating_point() and "lora" not in name))
