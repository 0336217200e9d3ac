"""Rollout engine on transformers ``generate``: batched sampling that also returns sampled-token log-probs.

Log-probs are of the tempered distribution ``log_softmax(logits / T)`` before top-k/top-p truncation, which is
exactly what the learner recomputes, so the PPO ratio starts at 1 (up to numerics). Greedy decoding
(``temperature == 0``) reports log-probs of the untempered distribution.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor
from transformers import (AutoModelForCausalLM, AutoTokenizer, GenerationConfig, LogitsProcessor,
                          LogitsProcessorList, PreTrainedModel, PreTrainedTokenizerBase, StoppingCriteria,
                          StoppingCriteriaList)
from transformers.generation.logits_process import (TemperatureLogitsWarper, TopKLogitsWarper,
                                                    TopPLogitsWarper)

from alignrl.rollout.base import Completion, RolloutEngine, SamplingParams, register_engine


class _RecordLogprobs(LogitsProcessor):
    """Keeps log_softmax of the scores it sees; at the next step gathers the token that was sampled from them."""

    def __init__(self) -> None:
        self.previous: Tensor | None = None
        self.chosen: list[Tensor] = []

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        if self.previous is not None:
            self.chosen.append(self.previous.gather(-1, input_ids[:, -1:]).squeeze(-1))
        self.previous = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def finish(self, last_tokens: Tensor) -> Tensor:
        """[B, steps] log-probs of the generated tokens, given the tokens of the last step."""
        if self.previous is not None:
            self.chosen.append(self.previous.gather(-1, last_tokens[:, None]).squeeze(-1))
        return torch.stack(self.chosen, dim=1) if self.chosen else torch.zeros(last_tokens.shape[0], 0)


class _StopOnStrings(StoppingCriteria):
    """Stops a row once a stop string appears in its newest tokens (works with any tokenizer, multi-character
    tokens included: the string may end inside the last token)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, stop: list[str], prompt_width: int):
        self.tokenizer, self.stop, self.prompt_width = tokenizer, stop, prompt_width
        self.window = max(len(s) for s in stop) + 2  # a token spans at least one character, bar specials

    def __call__(self, input_ids: Tensor, scores: Tensor, **kwargs) -> Tensor:
        tails = input_ids[:, max(self.prompt_width, input_ids.shape[1] - self.window):].tolist()
        texts = self.tokenizer.batch_decode(tails, skip_special_tokens=True)
        return torch.tensor([any(s in t for s in self.stop) for t in texts], device=input_ids.device)


def _left_pad(prompts: list[list[int]], pad_id: int, device: torch.device) -> tuple[Tensor, Tensor]:
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
        mask[row, width - len(prompt):] = 1
    return ids.to(device), mask.to(device)


class HFEngine(RolloutEngine):
    """Samples with ``model.generate``. By default it shares the learner's module, so weight pushes are free."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, *, shares_weights: bool = True,
                 generation_batch_size: int | None = None):
        self.model, self.tokenizer = model, tokenizer
        self.shares_weights = shares_weights
        self.generation_batch_size = generation_batch_size
        self.eos_ids = self._eos_ids()
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_ids[0]

    @classmethod
    def from_pretrained(cls, path: str, dtype: torch.dtype | str = "auto", device: str | None = None,
                        **kwargs) -> "HFEngine":
        """An engine that owns its model (for evaluation of any Hugging Face folder or hub name)."""
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        if device:
            model.to(device)
        return cls(model, tokenizer, shares_weights=False, **kwargs)

    def _eos_ids(self) -> list[int]:
        ids = self.model.generation_config.eos_token_id if self.model.generation_config is not None else None
        ids = ids if isinstance(ids, list) else [ids] if ids is not None else []
        if self.tokenizer.eos_token_id is not None and self.tokenizer.eos_token_id not in ids:
            ids.append(self.tokenizer.eos_token_id)
        if not ids:
            raise ValueError("the tokenizer has no eos_token and the model's generation_config none either")
        return ids

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[list[Completion]]:
        expanded = [p for p in prompts for _ in range(params.n)]
        chunk = (self.generation_batch_size or len(prompts)) * params.n
        flat: list[Completion] = []
        was_training = self.model.training
        self.model.eval()
        try:
            for start in range(0, len(expanded), chunk):
                flat.extend(self._generate_chunk(expanded[start:start + chunk], params))
        finally:
            self.model.train(was_training)
        return [flat[i * params.n:(i + 1) * params.n] for i in range(len(prompts))]

    def _generate_chunk(self, prompts: list[list[int]], params: SamplingParams) -> list[Completion]:
        device = next(self.model.parameters()).device
        input_ids, attention_mask = _left_pad(prompts, self.pad_id, device)
        greedy = params.temperature == 0
        recorder = _RecordLogprobs()
        processors: list[LogitsProcessor] = []
        if not greedy and params.temperature != 1.0:
            processors.append(TemperatureLogitsWarper(params.temperature))
        processors.append(recorder)
        if not greedy and params.top_k > 0:
            processors.append(TopKLogitsWarper(params.top_k))
        if not greedy and params.top_p < 1.0:
            processors.append(TopPLogitsWarper(params.top_p))
        config = GenerationConfig(do_sample=not greedy, temperature=1.0, top_p=1.0, top_k=None,
                                  max_new_tokens=params.max_new_tokens, eos_token_id=self.eos_ids,
                                  pad_token_id=self.pad_id, use_cache=True)
        stopping = StoppingCriteriaList()
        if params.stop:
            stopping.append(_StopOnStrings(self.tokenizer, params.stop, input_ids.shape[1]))
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

    def load_weights(self, weights: Iterable[tuple[str, Tensor]]) -> None:
        if self.shares_weights:
            return  # same module as the learner: nothing to copy
        state = dict(weights)
        missing, unexpected = self.model.load_state_dict(state, strict=False)
        if unexpected:
            raise KeyError(f"weights not in the rollout model: {unexpected[:5]}")

    def close(self) -> None:
        self.model = None  # type: ignore[assignment]


@register_engine("hf")
def _build_hf_engine(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, **kwargs) -> HFEngine:
    return HFEngine(model, tokenizer, generation_batch_size=kwargs.get("generation_batch_size"))
