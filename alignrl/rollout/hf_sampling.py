"""The pieces of the transformers engine's sampling step: constraints, the log-prob recorder, stop strings, the
generation config that keeps a checkpoint's ``generation_config.json`` out of rollouts, and per-call seeding.

Processor order in every ``generate`` call (the engine passes them; transformers adds none of its own, see
:func:`generation_config`): constraints -> temperature -> top-k -> top-p -> recorder. The recorder is last, so
it sees the distribution tokens are actually sampled from.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor
from transformers import GenerationConfig, LogitsProcessor, PreTrainedTokenizerBase, StoppingCriteria

from alignrl.rollout.base import RowLogitsProcessor, SamplingParams

# Fields of GenerationConfig that pick the sampling distribution. The engine applies temperature/top-k/top-p itself
# (before its recorder), so transformers must add none of these: they are pinned to their "off" values.
_SAMPLING_OFF = dict(temperature=1.0, top_k=0, top_p=1.0, min_p=None, top_h=None, typical_p=1.0,
                     epsilon_cutoff=0.0, eta_cutoff=0.0)
# Fields the engine controls in both modes (one sequence per row, plain outputs, our own stop strings).
_CONTROLLED = dict(num_beams=1, num_return_sequences=1, stop_strings=None, output_scores=False,
                   output_logits=False, return_dict_in_generate=False, renormalize_logits=False,
                   watermarking_config=None, use_cache=True)


def generation_config(params: SamplingParams, eos_ids: list[int], pad_id: int,
                      model_config: GenerationConfig | None = None) -> GenerationConfig:
    """The config to generate with, also to be installed as the model's ``generation_config`` during the call.

    ``model_config`` None: every field at its neutral value, nothing from the checkpoint. Otherwise a copy of
    ``model_config`` (its repetition penalty, bad words, minimum length... apply) with the sampling fields still
    pinned off. transformers' ``_prepare_generation_config`` fills the ``None`` fields of the passed config from
    ``model.generation_config``; with this config installed there too, nothing else can leak in.
    """
    greedy = params.temperature == 0
    config = copy.deepcopy(model_config) if model_config is not None else GenerationConfig()
    sampling = _SAMPLING_OFF if not greedy else dict.fromkeys(_SAMPLING_OFF)  # greedy: unused, left unset
    config.update(**sampling, **_CONTROLLED, do_sample=not greedy, max_new_tokens=params.max_new_tokens,
                  max_length=None, eos_token_id=list(eos_ids), pad_token_id=pad_id)
    return config


class Constrain(LogitsProcessor):
    """``allowed_token_ids`` (a -inf mask per row) then the per-row ``logits_processor``, rows mapped to prompts."""

    def __init__(self, row_prompt: list[int], allowed: list[list[int]] | None, fn: RowLogitsProcessor | None,
                 prompt_width: int, eos_ids: list[int]):
        self.row_prompt, self.allowed, self.fn = row_prompt, allowed, fn
        self.prompt_width, self.eos_ids = prompt_width, set(eos_ids)
        self.banned: Tensor | None = None

    def _mask(self, scores: Tensor) -> Tensor:
        vocab = scores.shape[-1]
        banned = torch.ones(scores.shape, dtype=torch.bool)
        for row, prompt in enumerate(self.row_prompt):
            ids = self.allowed[prompt]  # type: ignore[index]
            bad = [i for i in ids if not 0 <= i < vocab]
            if bad:
                raise ValueError(f"allowed_token_ids[{prompt}] has ids outside the vocabulary (size {vocab}): {bad}")
            banned[row, ids] = False
        return banned.to(scores.device)

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        if self.allowed is not None:
            if self.banned is None:
                self.banned = self._mask(scores)
            scores = scores.masked_fill(self.banned, float("-inf"))
        if self.fn is not None:
            scores = scores.clone()
            generated = input_ids[:, self.prompt_width:].tolist()
            for row, tokens in enumerate(generated):
                if self.eos_ids.intersection(tokens):
                    continue  # finished on EOS: its next token is padding whatever the logits say
                out = self.fn(self.row_prompt[row], tokens, scores[row])
                if not isinstance(out, Tensor) or out.shape != scores[row].shape:
                    raise ValueError(f"SamplingParams.logits_processor must return a tensor of shape "
                                     f"{tuple(scores[row].shape)}, got {getattr(out, 'shape', type(out))}")
                scores[row] = out.to(scores.dtype)
        return scores


class RecordLogprobs(LogitsProcessor):
    """Keeps log_softmax of the scores it sees (the last processor: the sampled distribution); at the next step
    gathers the token that was sampled from them."""

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


class StopOnStrings(StoppingCriteria):
    """Stops a row once a stop string appears in its newest tokens (works with any tokenizer, multi-character
    tokens included: the string may end inside the last token)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, stop: list[str], prompt_width: int):
        self.tokenizer, self.stop, self.prompt_width = tokenizer, stop, prompt_width
        self.window = max(len(s) for s in stop) + 2  # a token spans at least one character, bar specials

    def __call__(self, input_ids: Tensor, scores: Tensor, **kwargs) -> Tensor:
        tails = input_ids[:, max(self.prompt_width, input_ids.shape[1] - self.window):].tolist()
        texts = self.tokenizer.batch_decode(tails, skip_special_tokens=True)
        return torch.tensor([any(s in t for s in self.stop) for t in texts], device=input_ids.device)


@contextmanager
def seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """Within the block, the CPU RNG (and ``device``'s CUDA RNG) start from ``seed``; both are restored after.

    ``seed`` None: no-op (the global RNG is used and advanced).
    """
    if seed is None:
        yield
        return
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.random.default_generator.manual_seed(seed)
        for index in cuda:
            with torch.cuda.device(index):
                torch.cuda.manual_seed(seed)
        yield
