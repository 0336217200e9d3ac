"""The ``vllm`` rollout engine, colocated: a vLLM ``LLM`` in the trainer's process, one per rank.

Built from the learner's in-memory model, it first writes the model as a plain Hugging Face folder (vLLM loads
from folders only); built from a folder (``alignrl eval math500 --engine vllm``) it serves that folder. Sampling
maps as :mod:`alignrl.rollout.vllm_sampling` describes; log-probs are vLLM's *processed* log-probs (constraints,
temperature, top-k/top-p applied, renormalised), which is the contract of :mod:`alignrl.rollout.base`.

Weight pushes (:meth:`VLLMEngine.load_weights`), timed in ``last_push_seconds``:

- full weights: in process, the learner's buckets stream lazily into the worker's ``reload_weights``; with
  vLLM's own processes, each bucket travels as safetensors bytes to alignrl's worker extension and all are
  reloaded at once. A tied ``lm_head`` is always sent (see :mod:`alignrl.rollout.vllm_weights`).
- LoRA: the adapters become a new vLLM LoRA request (new id every push, the previous one removed); the base
  weights are never touched, nothing is merged.
- then ALWAYS ``reset_prefix_cache()``: otherwise cached prompt blocks keep the old weights' keys and values.
- ``enable_sleep_mode`` (GPU): the engine sleeps after each ``generate`` (weights and KV cache released while the
  learner updates) and wakes the weights for the push, then the KV cache.

With ``in_process: false`` every call into vLLM runs under ``timeout_s``; an engine that died or hangs raises
:class:`VLLMEngineError` naming the model and the call. In process there is no other process to die or to wait
on; a hang there is a hang of the trainer itself.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import torch

from alignrl.rollout.base import (Completion, RolloutEngine, SamplingParams, WeightUpdate, check_sampling_params,
                                  register_engine)
from alignrl.rollout.vllm_sampling import from_request_outputs, row_logits_processor_class, vllm_params
from alignrl.rollout.vllm_settings import INSTALL_HINT, VLLMEngineSettings
from alignrl.rollout.vllm_weights import (HEAD, adapter_payload, check_names, safetensors_bytes, save_model_folder,
                                          ties_embeddings, vllm_lora_rank, with_tied_head, write_adapter)

EXTENSION = "alignrl.rollout.vllm_worker.WorkerExtension"
T = TypeVar("T")


class VLLMEngineError(RuntimeError):
    """The vLLM engine or server failed, died or did not answer in time."""


def require_vllm() -> None:
    """Raise ModuleNotFoundError with the install command when vLLM is missing."""
    try:
        import vllm  # noqa: F401
    except ImportError as err:
        raise ModuleNotFoundError(INSTALL_HINT) from err


def dtype_name(dtype: str | torch.dtype, model: torch.nn.Module | None, folder: Path) -> str:
    """The dtype vLLM must run in: an explicit one, else the learner's, else the checkpoint's."""
    if isinstance(dtype, torch.dtype):
        return str(dtype).removeprefix("torch.")
    if dtype != "auto":
        return dtype
    if model is not None:
        return str(next(model.parameters()).dtype).removeprefix("torch.")
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    return str(config.get("dtype") or config.get("torch_dtype") or "float32")


def folder_tensors(folder: Path, tied: bool) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor in the folder's safetensors files (the names a full push may use)."""
    from safetensors import safe_open

    shapes: dict[str, tuple[int, ...]] = {}
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as handle:
            for name in handle.keys():
                shapes[name] = tuple(handle.get_slice(name).get_shape())
    if tied and "model.embed_tokens.weight" in shapes:
        shapes.setdefault(HEAD, shapes["model.embed_tokens.weight"])
    return shapes


def _quiet_rotary(record: logging.LogRecord) -> bool:
    """Drop vLLM's warning, on every push, that the rotary embedding (no weights: a computed cache) "failed to
    load"."""
    return "RotaryEmbedding" not in record.getMessage()


@contextlib.contextmanager
def vllm_environment(settings: VLLMEngineSettings) -> Iterator[None]:
    """vLLM reads these at engine start: multiprocessing on/off, the CPU KV cache size, and with vLLM's own
    processes on a GPU this rank's device (all restored after).

    vLLM caches its environment once an engine core starts in this process; the cache is cleared first so a second
    engine in the same process (tests) sees its own settings.
    """
    import vllm.envs as envs

    envs.disable_envs_cache()
    wanted = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0" if settings.in_process else "1"}
    if torch.cuda.is_available() and not settings.in_process and settings.tensor_parallel_size == 1:
        # vLLM's worker process takes the first visible GPU: make that this rank's GPU (untested: no GPU here)
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        index = torch.cuda.current_device()
        wanted["CUDA_VISIBLE_DEVICES"] = visible.split(",")[index] if visible else str(index)
    if not torch.cuda.is_available():
        wanted["VLLM_CPU_KVCACHE_SPACE"] = os.environ.get("VLLM_CPU_KVCACHE_SPACE", f"{settings.cpu_kv_cache_gb:g}")
    saved = {key: os.environ.get(key) for key in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def trainer_rng_untouched(active: bool) -> Iterator[None]:
    """In process, vLLM seeds the global RNGs (python, numpy, torch) at start and draws from torch's for unseeded
    requests: restore the trainer's RNG states afterwards, so rollouts never shift the training run's randomness."""
    if not active:
        yield
        return
    import random

    import numpy as np

    py_state, np_state = random.getstate(), np.random.get_state()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


class VLLMEngine(RolloutEngine):
    """Colocated vLLM engine. Build it with :func:`alignrl.rollout.build_engine` (``"vllm"``)."""

    def __init__(self, settings: VLLMEngineSettings, model_folder: str | Path, dtype: str,
                 lora_rank: int | None = None, work_dir: str | Path | None = None):
        """Serve ``model_folder`` in ``dtype``; ``lora_rank``: accept LoRA pushes up to that rank; ``work_dir``: a
        folder the engine owns and deletes on close (adapter files go there; default: a new temp folder)."""
        require_vllm()
        self.settings, self.folder, self.dtype = settings, Path(model_folder), dtype
        self.weights_version = -1
        self.last_push_seconds = 0.0
        self._work = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="alignrl-vllm-"))
        self._tied = ties_embeddings(self.folder)
        self._shapes = folder_tensors(self.folder, self._tied)
        self._lora_rank = lora_rank if lora_rank is None else vllm_lora_rank(lora_rank)
        self._lora: Any = None  # the current vLLM LoRARequest
        self._next_lora_id = 1
        self._unusable: str | None = None  # dead, timed out or closed: every later call raises this
        self._failed_push: str | None = None  # a full push failed part-way: generate refuses until one succeeds
        self._asleep = False
        self.vocab_size = int(json.loads((self.folder / "config.json").read_text(encoding="utf-8"))
                              .get("vocab_size", 0)) or None
        try:
            self.llm = self._start()
        except BaseException:
            shutil.rmtree(self._work, ignore_errors=True)
            raise

    # -- start ---------------------------------------------------------------------------------------------------

    def _engine_kwargs(self) -> dict[str, Any]:
        s, gpu = self.settings, torch.cuda.is_available()
        if s.enable_sleep_mode and not gpu:
            raise ValueError("vllm engine: enable_sleep_mode needs a CUDA GPU (vLLM's CPU build has no sleep mode)")
        kwargs: dict[str, Any] = dict(
            model=str(self.folder), dtype=self.dtype, seed=s.seed, logprobs_mode="processed_logprobs",
            enforce_eager=(not gpu) if s.enforce_eager is None else s.enforce_eager,
            enable_prefix_caching=s.enable_prefix_caching, worker_extension_cls=EXTENSION,
            tensor_parallel_size=s.tensor_parallel_size, gpu_memory_utilization=s.gpu_memory_utilization,
            enable_sleep_mode=s.enable_sleep_mode)
        if not gpu:
            # vLLM 0.32 on CPU: a seeded request whose prompt is split over two scheduler steps (chunked prefill)
            # crashes ("CPU Generator does not use offset"), and every rollout request is seeded
            kwargs["enable_chunked_prefill"] = False
        if s.max_model_len is not None:
            kwargs["max_model_len"] = s.max_model_len
        if s.max_num_seqs is not None:
            kwargs["max_num_seqs"] = s.max_num_seqs
        if s.in_process:
            kwargs.update(distributed_executor_backend="uni", logits_processors=[row_logits_processor_class()])
        lora_rank = vllm_lora_rank(s.max_lora_rank) if s.max_lora_rank is not None else self._lora_rank
        if lora_rank is not None:
            kwargs.update(enable_lora=True, max_lora_rank=lora_rank, max_loras=1)
        kwargs.update(s.engine_args)
        return kwargs

    def _start(self) -> Any:
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        from vllm import LLM

        logging.getLogger("vllm.model_executor.model_loader.reload.layerwise").addFilter(_quiet_rotary)

        with vllm_environment(self.settings), trainer_rng_untouched(self.settings.in_process):
            return LLM(**self._engine_kwargs())

    # -- calls into vLLM, guarded --------------------------------------------------------------------------------

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """Run ``fn``; vLLM failures become :class:`VLLMEngineError`. With vLLM's own processes, under timeout_s."""
        if self._unusable:
            raise VLLMEngineError(self._unusable)
        where = f"vLLM engine serving {self.folder}"
        if self.settings.in_process:
            try:
                with trainer_rng_untouched(True):
                    return fn()
            except (ValueError, KeyError, TypeError):
                raise
            except Exception as err:
                raise VLLMEngineError(f"{where}: {what} failed: {type(err).__name__}: {err}") from err
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                box["value"] = fn()
            except BaseException as err:  # noqa: BLE001 - handed to the caller's thread
                box["error"] = err

        worker = threading.Thread(target=target, name=f"alignrl-vllm-{what}", daemon=True)
        worker.start()
        worker.join(self.settings.timeout_s)
        if worker.is_alive():
            self._unusable = f"{where}: {what} did not finish within timeout_s={self.settings.timeout_s:g} s"
            self._shutdown()
            raise VLLMEngineError(f"{self._unusable}; the engine was shut down")
        error = box.get("error")
        if error is None:
            return box["value"]
        if isinstance(error, (ValueError, KeyError, TypeError)) and "EngineDead" not in type(error).__name__:
            raise error
        if "EngineDead" in type(error).__name__:
            self._unusable = f"{where}: the engine process died"
        raise VLLMEngineError(f"{where}: {what} failed: {type(error).__name__}: {error}") from error

    # -- generate ------------------------------------------------------------------------------------------------

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[list[Completion]]:
        check_sampling_params(prompts, params, self.vocab_size)
        if params.logits_processor is not None and not self.settings.in_process:
            raise ValueError("SamplingParams.logits_processor is a Python callable: the vllm engine runs it only "
                             "with in_process: true (it cannot reach vLLM's worker processes or a server)")
        if self._failed_push:
            raise VLLMEngineError(self._failed_push)
        if not prompts:
            return []
        self._wake()
        requests = [{"prompt_token_ids": list(p)} for p in prompts]
        sampling = vllm_params(params, len(prompts))
        lora = self._lora
        outputs = self._call("generate", lambda: self.llm.generate(requests, sampling, use_tqdm=False,
                                                                     lora_request=lora))
        groups = from_request_outputs(outputs, params, f"vLLM engine serving {self.folder}")
        self._sleep()
        return groups

    # -- weights -------------------------------------------------------------------------------------------------

    def load_weights(self, update: WeightUpdate) -> None:
        """Serve ``update`` from now on: full weights reloaded in place, or LoRA adapters as a new LoRA request;
        then the prefix cache is reset (always)."""
        if self._unusable:
            raise VLLMEngineError(self._unusable)
        if self._failed_push and update.lora is not None:
            raise VLLMEngineError(self._failed_push)
        start = time.perf_counter()
        self._wake(["weights"])
        if update.lora is None:
            self._push_full(update)
        else:
            self._push_lora(update)
        self._wake()
        if not self._call("reset_prefix_cache", self.llm.reset_prefix_cache):
            raise VLLMEngineError(f"vLLM engine serving {self.folder}: reset_prefix_cache() refused (requests "
                                  f"still running?); cached prompts would keep the old weights")
        self.weights_version = update.version
        self.last_push_seconds = time.perf_counter() - start

    def _checked(self, update: WeightUpdate) -> Iterator[list[tuple[str, torch.Tensor]]]:
        for bucket in with_tied_head(update.buckets, self._tied):
            check_names(bucket, set(self._shapes))
            for name, tensor in bucket:
                if tuple(tensor.shape) != self._shapes[name]:
                    raise ValueError(f"weight update '{name}' has shape {tuple(tensor.shape)}, the vLLM model "
                                     f"{self._shapes[name]}")
            yield bucket

    def _push_full(self, update: WeightUpdate) -> None:
        self._drop_lora()
        if self.settings.in_process:
            stream = (pair for bucket in self._checked(update) for pair in bucket)
            try:
                self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": stream})
            except BaseException as err:
                # vLLM reloads layer by layer: a push that failed part-way leaves some layers new, some old
                self._failed_push = (f"vLLM engine serving {self.folder}: unusable after a failed weight push "
                                     f"({type(err).__name__}: {err}); push full weights again")
                with contextlib.suppress(Exception):
                    self.llm.collective_rpc("alignrl_abort_reload")
                raise
            self._failed_push = None
            return
        timeout = self.settings.timeout_s
        try:
            for bucket in self._checked(update):
                data = safetensors_bytes(bucket)
                self._call("weight push", lambda: self.llm.collective_rpc("alignrl_receive", timeout=timeout,
                                                                          args=(data,)))
            self._call("weight push", lambda: self.llm.collective_rpc("alignrl_apply", timeout=timeout))
        except (ValueError, KeyError):
            with contextlib.suppress(Exception):
                self.llm.collective_rpc("alignrl_discard", timeout=timeout)
            raise

    def _push_lora(self, update: WeightUpdate) -> None:
        info = self._call("LoRA check", lambda: self.llm.collective_rpc("alignrl_info"))[0]
        if not info["lora"]:
            raise ValueError("vllm engine: a LoRA update reached an engine started without LoRA (it is enabled when "
                             "the engine is built from a peft policy, or with max_lora_rank)")
        from vllm.lora.request import LoRARequest

        config_json, data = adapter_payload(update)
        rank, limit = int(json.loads(config_json).get("r", 0)), int(info["max_lora_rank"])
        if rank > limit:
            raise ValueError(f"LoRA rank {rank} is above the engine's max_lora_rank {limit}")
        lora_id = self._next_lora_id
        self._next_lora_id += 1
        folder = write_adapter(self._work / f"lora-{lora_id}", config_json, data)
        request = LoRARequest(f"alignrl-{lora_id}", lora_id, str(folder))
        if not self._call("LoRA load", lambda: self.llm.llm_engine.add_lora(request)):
            raise VLLMEngineError(f"vLLM engine serving {self.folder}: could not load LoRA adapter {folder}")
        self._drop_lora()
        self._lora = request

    def _drop_lora(self) -> None:
        old, self._lora = self._lora, None
        if old is not None:
            self._call("LoRA removal", lambda: self.llm.llm_engine.remove_lora(old.lora_int_id))
            shutil.rmtree(old.lora_path, ignore_errors=True)

    def base_checksum(self) -> float:
        """A fingerprint of the base weights vLLM serves (sum of its parameters, LoRA slots excluded)."""
        return float(self._call("checksum", lambda: self.llm.collective_rpc("alignrl_checksum"))[0])

    # -- sleep mode, close ---------------------------------------------------------------------------------------

    def _sleep(self) -> None:
        if self.settings.enable_sleep_mode and not self._asleep:
            self._call("sleep", lambda: self.llm.sleep(level=1))
            self._asleep = True

    def _wake(self, tags: list[str] | None = None) -> None:
        if self.settings.enable_sleep_mode and self._asleep:
            self._call("wake_up", lambda: self.llm.wake_up(tags))
            self._asleep = tags is not None

    def engine_pids(self) -> list[int]:
        """Process ids of vLLM's worker processes (empty in process)."""
        if self.settings.in_process:
            return []
        return [int(info["pid"]) for info in self.llm.collective_rpc("alignrl_info", timeout=self.settings.timeout_s)]

    def _shutdown(self) -> None:
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            with contextlib.suppress(Exception):
                llm.llm_engine.engine_core.shutdown()
        shutil.rmtree(self._work, ignore_errors=True)

    def close(self) -> None:
        self._unusable = self._unusable or f"vLLM engine serving {self.folder} was closed"
        self._shutdown()


@register_engine("vllm", VLLMEngineSettings)
def _build_vllm_engine(settings: VLLMEngineSettings, *, model: torch.nn.Module | None, model_path: str | None,
                       tokenizer: Any, dtype: str | torch.dtype, device: str | None) -> RolloutEngine:
    require_vllm()
    if settings.mode == "server":
        from alignrl.rollout.vllm_client import VLLMServerEngine

        return VLLMServerEngine(settings, model=model)
    wanted = settings.dtype if settings.dtype != "auto" else dtype
    if model is None:
        folder = Path(str(model_path))
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"vllm engine: {folder} is not a model folder with a config.json (vLLM serves "
                                    f"local folders; download hub models first)")
        return VLLMEngine(settings, folder, dtype_name(wanted, None, folder))
    work = Path(tempfile.mkdtemp(prefix="alignrl-vllm-"))
    try:
        folder = save_model_folder(model, tokenizer, work / "model")
        lora_config = getattr(model, "peft_config", {}).get("default")
        rank = int(lora_config.r) if lora_config is not None else None
        engine = VLLMEngine(settings, folder, dtype_name(wanted, model, folder), lora_rank=rank, work_dir=work)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return engine
