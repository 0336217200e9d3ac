"""The ``vllm`` engine in server mode: a running ``alignrl serve`` (vLLM's OpenAI server with alignrl's worker
extension and its development endpoints) reached over HTTP.

- generate: ``POST /v1/completions``, one request per prompt (its own seed; ``max_concurrent_requests`` in flight),
  token ids in, ``return_token_ids`` and ``logprobs: 0`` out. The server runs with
  ``--logprobs-mode processed_logprobs`` (checked at connection), so log-probs follow the engine contract.
- full weights: each bucket as safetensors through ``POST /collective_rpc`` (base64 text: the endpoint takes JSON
  strings), or as a file in ``shared_dir`` (``weight_transfer: folder``); the worker extension reloads them all
  at once; then ``POST /reset_prefix_cache``. No NCCL path is built: on GPUs this still goes through HTTP/disk.
- LoRA: the extension writes the adapter files on the server's machine, ``POST /v1/load_lora_adapter`` loads them
  under a new name every push, the previous adapter is unloaded; requests name the adapter as their model.

Every call has ``timeout_s``; a refused connection, an HTTP error or a timeout raises :class:`VLLMEngineError`
naming the server URL and the call. Nothing is retried: a dead server stops the run.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from alignrl.rollout.base import Completion, RolloutEngine, SamplingParams, WeightUpdate, check_sampling_params
from alignrl.rollout.vllm_engine import VLLMEngineError
from alignrl.rollout.vllm_sampling import completion, repeat_greedy, request_fields
from alignrl.rollout.vllm_settings import VLLMEngineSettings
from alignrl.rollout.vllm_weights import adapter_payload, plain_state_dict, safetensors_bytes, with_tied_head
from alignrl.rollout.vllm_worker import PROTOCOL_VERSION

INITIAL_BUCKET_BYTES = 256 * 2**20


class VLLMServerEngine(RolloutEngine):
    """Generates on and pushes weights to an ``alignrl serve`` server. With ``model`` (the learner's policy), its
    weights are pushed once at connection, so the server serves exactly the policy from the first step."""

    def __init__(self, settings: VLLMEngineSettings, model: torch.nn.Module | None = None):
        self.settings = settings
        self.url = settings.server_url.rstrip("/")
        self.weights_version = -1
        self.last_push_seconds = 0.0
        self._lora_name: str | None = None
        self._lora_path: str | None = None
        self._wait_healthy()
        self.info = self._rpc("alignrl_info")[0]
        if not isinstance(self.info, dict) or self.info.get("protocol") != PROTOCOL_VERSION:
            raise VLLMEngineError(f"vLLM server {self.url}: its alignrl worker extension speaks protocol "
                                  f"{self.info.get('protocol') if isinstance(self.info, dict) else self.info!r}, "
                                  f"this alignrl {PROTOCOL_VERSION}; start it with the same alignrl")
        if self.info.get("logprobs_mode") != "processed_logprobs":
            raise VLLMEngineError(f"vLLM server {self.url} runs with logprobs_mode {self.info.get('logprobs_mode')}; "
                                  f"start it with `alignrl serve` (or --logprobs-mode processed_logprobs)")
        self.model_name = self._models()[0]
        if model is not None:
            state = list(plain_state_dict(model).items())
            self.load_weights(WeightUpdate(version=-1, buckets=_chunks(state, INITIAL_BUCKET_BYTES)))

    # -- HTTP ----------------------------------------------------------------------------------------------------

    def _http(self, method: str, path: str, what: str, body: Any = None, timeout: float | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout or self.settings.timeout_s) as response:
                payload = response.read()
        except urllib.error.HTTPError as err:
            detail = err.read().decode(errors="replace")[:500]
            raise VLLMEngineError(f"vLLM server {self.url}: {what} failed: HTTP {err.code} on {path}: {detail}") \
                from err
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise VLLMEngineError(f"vLLM server {self.url}: {what} failed: {reason} (is `alignrl serve` running "
                                  f"there? timeout_s={self.settings.timeout_s:g})") from err
        if not payload:
            return None
        try:
            return json.loads(payload)
        except json.JSONDecodeError:
            return payload.decode(errors="replace")  # e.g. /v1/load_lora_adapter answers in plain text

    def _wait_healthy(self) -> None:
        """Poll ``/health`` until the server answers (it may still be starting) or ``timeout_s`` passes."""
        deadline = time.monotonic() + self.settings.timeout_s
        while True:
            try:
                self._http("GET", "/health", "health check", timeout=min(10.0, self.settings.timeout_s))
                return
            except VLLMEngineError as err:
                if time.monotonic() + 1 > deadline:
                    raise VLLMEngineError(f"vLLM server {self.url} did not become healthy within "
                                          f"timeout_s={self.settings.timeout_s:g} s: {err}") from err
                time.sleep(1.0)

    def _rpc(self, method: str, *args: str) -> list[Any]:
        body = {"method": method, "args": list(args), "timeout": self.settings.timeout_s}
        out = self._http("POST", "/collective_rpc", f"{method} (collective_rpc; the server needs "
                         f"VLLM_SERVER_DEV_MODE=1 and alignrl's worker extension, as `alignrl serve` sets)", body)
        return list((out or {}).get("results", []))

    def _models(self) -> list[str]:
        out = self._http("GET", "/v1/models", "listing models")
        names = [m["id"] for m in (out or {}).get("data", []) if m.get("parent") is None]
        if not names:
            raise VLLMEngineError(f"vLLM server {self.url}: serves no model")
        return names

    # -- generate ------------------------------------------------------------------------------------------------

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[list[Completion]]:
        check_sampling_params(prompts, params)
        if params.logits_processor is not None:
            raise ValueError("SamplingParams.logits_processor is a Python callable: a vLLM server cannot run it "
                             "(use the vllm engine colocated with in_process: true, or the hf engine)")
        if not prompts:
            return []
        model = self._lora_name or self.model_name
        bodies = [{"model": model, "prompt": list(p), "return_token_ids": True, **request_fields(params, i)}
                  for i, p in enumerate(prompts)]
        with ThreadPoolExecutor(max_workers=min(self.settings.max_concurrent_requests, len(bodies))) as pool:
            answers = list(pool.map(lambda b: self._http("POST", "/v1/completions", "generate", b), bodies))
        return [repeat_greedy(self._group(answer), params) for answer in answers]

    def _group(self, answer: dict) -> list[Completion]:
        group = []
        for choice in sorted(answer.get("choices", []), key=lambda c: c["index"]):
            ids = choice.get("token_ids")
            if ids is None:
                raise VLLMEngineError(f"vLLM server {self.url}: completions carry no token_ids (vLLM too old for "
                                      f"return_token_ids?)")
            logprobs = (choice.get("logprobs") or {}).get("token_logprobs") or []
            group.append(completion(ids, logprobs, choice.get("text", ""), choice.get("finish_reason"),
                                    f"vLLM server {self.url}"))
        return group

    # -- weights -------------------------------------------------------------------------------------------------

    def load_weights(self, update: WeightUpdate) -> None:
        start = time.perf_counter()
        if update.lora is None:
            self._push_full(update)
        else:
            self._push_lora(update)
        self._http("POST", "/reset_prefix_cache", "reset_prefix_cache")
        self.weights_version = update.version
        self.last_push_seconds = time.perf_counter() - start

    def _push_full(self, update: WeightUpdate) -> None:
        if self._lora_name is not None:
            self._unload_lora()
        folder = None
        if self.settings.weight_transfer == "folder":
            folder = Path(str(self.settings.shared_dir)) / f"alignrl-push-{uuid.uuid4().hex}"
            folder.mkdir(parents=True)
        try:
            for index, bucket in enumerate(with_tied_head(update.buckets, bool(self.info.get("tie_word_embeddings")))):
                data = safetensors_bytes(bucket)
                if folder is None:
                    self._rpc("alignrl_receive", base64.b64encode(data).decode())
                else:
                    path = folder / f"bucket-{index:05d}.safetensors"
                    path.write_bytes(data)
                    self._rpc("alignrl_receive_file", str(path))
            self._rpc("alignrl_apply")
        except BaseException:
            try:
                self._rpc("alignrl_discard")
            except VLLMEngineError:
                pass
            raise
        finally:
            if folder is not None:
                for path in folder.glob("*"):
                    path.unlink()
                folder.rmdir()

    def _push_lora(self, update: WeightUpdate) -> None:
        if not self.info.get("lora"):
            raise ValueError(f"vLLM server {self.url} was started without LoRA: restart `alignrl serve` with "
                             f"--enable-lora --max-lora-rank R")
        config_json, data = adapter_payload(update)
        name = f"alignrl-lora-{uuid.uuid4().hex[:12]}"
        path = self._rpc("alignrl_write_adapter", name, config_json, base64.b64encode(data).decode())[0]
        self._http("POST", "/v1/load_lora_adapter", "loading a LoRA adapter (the server needs "
                   "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True, as `alignrl serve` sets)",
                   {"lora_name": name, "lora_path": path})
        if self._lora_name is not None:
            self._unload_lora()
        self._lora_name, self._lora_path = name, path

    def _unload_lora(self) -> None:
        name, path = self._lora_name, self._lora_path
        self._lora_name = self._lora_path = None
        self._http("POST", "/v1/unload_lora_adapter", "unloading a LoRA adapter", {"lora_name": name})
        self._rpc("alignrl_remove_adapter_files", str(path))

    def base_checksum(self) -> float:
        """A fingerprint of the base weights the server serves (sum of its parameters, LoRA slots excluded)."""
        return float(self._rpc("alignrl_checksum")[0])

    def close(self) -> None:
        """The server keeps running (it is not the trainer's to stop); only the current adapter is unloaded."""
        if self._lora_name is not None:
            try:
                self._unload_lora()
            except VLLMEngineError:
                pass


def _chunks(pairs: list[tuple[str, torch.Tensor]], limit: int) -> list[list[tuple[str, torch.Tensor]]]:
    out: list[list[tuple[str, torch.Tensor]]] = [[]]
    size = 0
    for name, tensor in pairs:
        nbytes = tensor.numel() * tensor.element_size()
        if out[-1] and size + nbytes > limit:
            out.append([])
            size = 0
        out[-1].append((name, tensor))
        size += nbytes
    return out
