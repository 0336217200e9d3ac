"""Rollout engine on transformers ``generate``: batched sampling that also returns sampled-token log-probs.

Log-probs follow the contract in :mod:`alignrl.rollout.base`: the distribution actually sampled (constraints,
temperature, top-k, top-p, renormalised). With ``top_k == 0`` and ``top_p == 1`` that is the tempered
``log_softmax(logits / T)`` the learner recomputes, so the PPO ratio starts at 1 (up to numerics). Greedy decoding
(``temperature == 0``) reports log-probs of the untempered distribution. The checkpoint's own
``generation_config.json`` does not change rollouts unless ``use_model_generation_config`` is set.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor
from transformers import (AutoModelForCausalLM, AutoTokenizer, GenerationConfig, LogitsProcessor,
                          LogitsProcessorList, PreTrainedModel, PreTrainedTokenizerBase, StoppingCriteriaList)
from transformers.generation.logits_process import (TemperatureLogitsWarper, TopKLogitsWarper,
                                                    TopPLogitsWarper)

from alignrl.rollout.base import (Completion, RolloutEngine, SamplingParams, WeightUpdate, check_sampling_params,
                                  register_engine, resolve_dtype)
from alignrl.rollout.hf_sampling import Constrain, RecordLogprobs, StopOnStrings, generation_config, seeded
from alignrl.rollout.hf_weights import (generation_module, is_peft_model, load_full, load_lora, unwrap_lora,
                                        wrap_lora)


@dataclass
class HFEngineSettings:
    """Settings of the ``hf`` engine (transformers ``generate``)."""

    generation_batch_size: int | None = None  # prompts per generate call (each with its n samples); None = all
    share_weights: bool = True  # built from an in-memory model: generate with that very module (zero-copy, pushes
    # are free); False = deep-copy it, so the engine owns separate weights that only change through load_weights
    use_model_generation_config: bool = False  # True: the checkpoint's generation_config.json logits processors
    # (repetition penalty, bad words, min length...) apply to rollouts; its sampling fields (temperature, top-k/p,
    # min-p, typical-p...) never do: SamplingParams decides those. False: nothing from it applies


def _left_pad(prompts: list[list[int]], pad_id: int, device: torch.device) -> tuple[Tensor, Tensor]:
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
        mask[row, width - len(prompt):] = 1
    return ids.to(device), mask.to(device)


def _same_device(a: torch.device, b: torch.device) -> bool:
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


class HFEngine(RolloutEngine):
    """Samples with ``model.generate``. Build it with :func:`alignrl.rollout.build_engine` (``"hf"``),
    :meth:`from_model` or :meth:`from_pretrained`; the constructor takes the module to generate with as is."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                 settings: HFEngineSettings | None = None, *, shares_learner_weights: bool = False):
        self.model, self.tokenizer = model, tokenizer
        self.settings = settings or HFEngineSettings()
        self._shares = shares_learner_weights
        self.weights_version = -1
        self.eos_ids = self._eos_ids()
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_ids[0]

    @classmethod
    def from_model(cls, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                   settings: HFEngineSettings | None = None, *, dtype: str | torch.dtype = "auto",
                   device: str | None = None) -> "HFEngine":
        """An engine on the learner's in-memory ``model``: that module (``share_weights``) or a deep copy."""
        settings = settings or HFEngineSettings()
        dtype = resolve_dtype(dtype)
        param = next(model.parameters())
        if settings.share_weights:
            if dtype != "auto" and dtype != param.dtype:
                raise ValueError(f"share_weights=True serves the learner's {param.dtype} module; it cannot run in "
                                 f"{dtype} (set share_weights=False for a converted copy)")
            if device is not None and not _same_device(torch.device(device), param.device):
                raise ValueError(f"share_weights=True serves the learner's module on {param.device}, not {device} "
                                 f"(set share_weights=False for a copy there)")
            return cls(model, tokenizer, settings, shares_learner_weights=True)
        own = copy.deepcopy(model)
        own.requires_grad_(False)
        for param in own.parameters():
            param.grad = None  # deepcopy copies the learner's gradients too
        if dtype != "auto" or device is not None:
            own.to(**({"dtype": dtype} if dtype != "auto" else {}), **({"device": device} if device else {}))
        return cls(own, tokenizer, settings, shares_learner_weights=False)

    @classmethod
    def from_pretrained(cls, path: str, dtype: str | torch.dtype = "auto", device: str | None = None,
                        settings: HFEngineSettings | None = None,
                        tokenizer: PreTrainedTokenizerBase | None = None) -> "HFEngine":
        """An engine that owns its model, loaded from a Hugging Face folder or hub name (CPU unless ``device``)."""
        tokenizer = tokenizer if tokenizer is not None else AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=resolve_dtype(dtype))
        model.requires_grad_(False)
        if device:
            model.to(device)
        return cls(model, tokenizer, settings, shares_learner_weights=False)

    @property
    def shares_learner_weights(self) -> bool:
        return self._shares

    @property
    def generation_batch_size(self) -> int | None:
        return self.settings.generation_batch_size

    def _eos_ids(self) -> list[int]:
        config = generation_module(self.model).generation_config
        ids = config.eos_token_id if config is not None else None
        ids = list(ids) if isinstance(ids, (list, tuple)) else [ids] if ids is not None else []
        if self.tokenizer.eos_token_id is not None and self.tokenizer.eos_token_id not in ids:
            ids.append(self.tokenizer.eos_token_id)
        if not ids:
            raise ValueError("the tokenizer has no eos_token and the model's generation_config none either")
        return ids

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[list[Completion]]:
        check_sampling_params(prompts, params)
        if not prompts:
            return []
        expanded = [p for p in prompts for _ in range(params.n)]
        row_prompt = [i for i in range(len(prompts)) for _ in range(params.n)]
        chunk = (self.settings.generation_batch_size or len(prompts)) * params.n
        module = generation_module(self.model)
        saved_config = module.generation_config
        config = generation_config(params, self.eos_ids, self.pad_id,
                                   saved_config if self.settings.use_model_generation_config else None)
        device = next(self.model.parameters()).device
        flat: list[Completion] = []
        was_training = self.model.training
        self.model.eval()
        module.generation_config = copy.deepcopy(config)  # transformers merges this one's fields in: no leaks
        try:
            with seeded(params.seed, device):
                for start in range(0, len(expanded), chunk):
                    flat.extend(self._generate_chunk(expanded[start:start + chunk], row_prompt[start:start + chunk],
                                                     params, config, device))
        finally:
            module.generation_config = saved_config
            self.model.train(was_training)
        return [flat[i * params.n:(i + 1) * params.n] for i in range(len(prompts))]

    def _processors(self, row_prompt: list[int], params: SamplingParams,
                    prompt_width: int) -> tuple[list[LogitsProcessor], RecordLogprobs]:
        """Constraints -> temperature -> top-k -> top-p -> recorder (last: it sees the sampled distribution)."""
        processors: list[LogitsProcessor] = []
        if params.allowed_token_ids is not None or params.logits_processor is not None:
            processors.append(Constrain(row_prompt, params.allowed_token_ids, params.logits_processor,
                                        prompt_width, self.eos_ids))
        if params.temperature > 0:
            if params.temperature != 1.0:
                processors.append(TemperatureLogitsWarper(params.temperature))
            if params.top_k > 0:
                processors.append(TopKLogitsWarper(params.top_k))
            if params.top_p < 1.0:
                processors.append(TopPLogitsWarper(params.top_p))
        recorder = RecordLogprobs()
        processors.append(recorder)
        return processors, recorder

    def _generate_chunk(self, prompts: list[list[int]], row_prompt: list[int], params: SamplingParams,
                        config: GenerationConfig, device: torch.device) -> list[Completion]:
        input_ids, attention_mask = _left_pad(prompts, self.pad_id, device)
        processors, recorder = self._processors(row_prompt, params, input_ids.shape[1])
        stopping = StoppingCriteriaList()
        if params.stop:
            stopping.append(StopOnStrings(self.tokenizer, params.stop, input_ids.shape[1]))
        output = self.model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config,
                                     logits_processor=LogitsProcessorList(processors), stopping_criteria=stopping)
        generated = output[:, input_ids.shape[1]:].cpu()
        logprobs = recorder.finish(generated[:, -1].to(device)).cpu() if generated.shape[1] else None
        return [self._completion(generated[row], logprobs[row] if logprobs is not None else None, params)
                for row in range(len(prompts))]

    def _completion(self, tokens: Tensor, logprobs: Tensor | None, params: SamplingParams) -> Completion:
        ids = tokens.tolist()
        length, finish = len(ids), "length"
        for pos, tok in enumerate(ids):
            if tok in self.eos_ids:
                length, finish = pos + 1, "stop"
                break
        else:
            if self.pad_id not in self.eos_ids:
                while length and ids[length - 1] == self.pad_id:
                    length -= 1
        ids = ids[:length]
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        if finish == "length" and (length < params.max_new_tokens or any(s in text for s in params.stop)):
            finish = "stop"  # stopped on a stop string
        lps = logprobs[:length].tolist() if logprobs is not None else []
        return Completion(token_ids=ids, logprobs=lps, text=text, finish_reason=finish)

    def load_weights(self, update: WeightUpdate) -> None:
        """Sharing: record the version only. Otherwise copy full weights, or LoRA adapters (wrapping the model
        with peft on the first LoRA update; never merged, so the base weights stay bit-identical)."""
        if self._shares:
            self.weights_version = update.version
            return
        if update.lora is None:
            if is_peft_model(self.model):
                self.model = unwrap_lora(self.model)  # full weights replace base and adapters alike
            load_full(self.model, update.buckets)
        else:
            if not is_peft_model(self.model):
                self.model = wrap_lora(self.model, update.lora)
            load_lora(self.model, update.buckets)
        self.weights_version = update.version

    def close(self) -> None:
        self.model = None  # type: ignore[assignment]


@register_engine("hf", HFEngineSettings)
def _build_hf_engine(settings: HFEngineSettings, *, model: PreTrainedModel | None, model_path: str | None,
                     tokenizer: PreTrainedTokenizerBase | None, dtype: str | torch.dtype,
                     device: str | None) -> HFEngine:
    if model is not None:
        return HFEngine.from_model(model, tokenizer, settings, dtype=dtype, device=device)
    return HFEngine.from_pretrained(model_path, dtype=dtype, device=device, settings=settings, tokenizer=tokenizer)
