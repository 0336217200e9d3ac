"""alignrl's :class:`SamplingParams` in vLLM's terms, and vLLM's outputs back as :class:`Completion` lists.

Mapping (one vLLM request per prompt):

- ``n``, ``temperature``, ``top_p``, ``top_k`` (0 = off in both), ``max_new_tokens`` -> ``max_tokens``, ``stop``
  (kept in the text: ``include_stop_str_in_output``), ``allowed_token_ids`` -> that prompt's
  ``allowed_token_ids``.
- ``seed``: each prompt gets its own seed, a hash of (seed, prompt index), and vLLM gives its ``n`` samples
  ``seed + i``: the same call gives the same completions, prompts do not share random streams.
- greedy (``temperature == 0``): vLLM refuses ``n > 1``, so one request is made and its completion repeated.
- ``logits_processor`` (a Python callable per row): run by :class:`RowLogitsProcessor`, a vLLM logits processor
  that reads the callable from the request's ``extra_args``. vLLM applies it after ``allowed_token_ids`` and before
  the temperature, as the contract says; it only works with the engine core in this process (``in_process``):
  a callable cannot cross into vLLM's worker processes or a server, which is refused with a clear error.
- log-probs: the engine runs with ``logprobs_mode="processed_logprobs"`` and asks for ``logprobs=0`` (the sampled
  token only). vLLM's processed log-probs are ``log_softmax`` of the logits after ``allowed_token_ids``, the logits
  processors, the temperature and top-k/top-p -- the distribution actually sampled, as the contract wants (greedy:
  after the constraints, untempered). The default ``raw_logprobs`` would be the untempered, unconstrained model.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from alignrl.rollout.base import Completion, SamplingParams

_FN_KEY, _PROMPT_KEY = "alignrl_logits_fn", "alignrl_prompt_index"


def request_seed(seed: int, prompt_index: int) -> int:
    """A per-prompt seed (< 2**56, so vLLM's ``seed + sample index`` stays in range)."""
    digest = hashlib.blake2b(f"{seed}:{prompt_index}".encode(), digest_size=7).digest()
    return int.from_bytes(digest, "little")


def request_fields(params: SamplingParams, prompt_index: int) -> dict[str, Any]:
    """The vLLM sampling fields of one prompt's request (shared by the Python API and the HTTP API)."""
    greedy = params.temperature == 0
    fields: dict[str, Any] = dict(n=1 if greedy else params.n, temperature=params.temperature,
                                  top_p=1.0 if greedy else params.top_p, top_k=0 if greedy else params.top_k,
                                  max_tokens=params.max_new_tokens, logprobs=0, skip_special_tokens=True,
                                  include_stop_str_in_output=True)
    if params.stop:
        fields["stop"] = list(params.stop)
    if params.seed is not None:
        fields["seed"] = request_seed(params.seed, prompt_index)
    if params.allowed_token_ids is not None:
        fields["allowed_token_ids"] = list(params.allowed_token_ids[prompt_index])
    return fields


def vllm_params(params: SamplingParams, count: int) -> list[Any]:
    """One ``vllm.SamplingParams`` per prompt (``count`` prompts)."""
    from vllm import SamplingParams as VLLMSamplingParams

    out = []
    for index in range(count):
        fields = request_fields(params, index)
        if params.logits_processor is not None:
            fields["extra_args"] = {_FN_KEY: params.logits_processor, _PROMPT_KEY: index}
        out.append(VLLMSamplingParams(**fields))
    return out


def completion(token_ids: list[int], logprobs: list[float], text: str, finish_reason: str | None,
               context: str) -> Completion:
    """A :class:`Completion`, refusing outputs the contract cannot represent."""
    if finish_reason not in ("stop", "length"):
        raise RuntimeError(f"{context}: vLLM finished a request with reason {finish_reason!r} (aborted or failed)")
    if len(logprobs) != len(token_ids):
        raise RuntimeError(f"{context}: vLLM returned {len(logprobs)} log-probs for {len(token_ids)} tokens")
    return Completion(token_ids=list(token_ids), logprobs=[float(x) for x in logprobs], text=text,
                      finish_reason=finish_reason)  # type: ignore[arg-type]


def from_request_outputs(outputs: list[Any], params: SamplingParams, context: str) -> list[list[Completion]]:
    """vLLM ``RequestOutput`` objects (one per prompt, in order) -> ``params.n`` completions per prompt."""
    groups = []
    for request in outputs:
        group = []
        for out in sorted(request.outputs, key=lambda o: o.index):
            ids = list(out.token_ids)
            lps = [step[token].logprob for step, token in zip(out.logprobs or [], ids)]
            group.append(completion(ids, lps, out.text, out.finish_reason, context))
        groups.append(repeat_greedy(group, params))
    return groups


def repeat_greedy(group: list[Completion], params: SamplingParams) -> list[Completion]:
    """Greedy requests are made once: copy the completion ``n`` times (separate objects)."""
    if params.temperature != 0 or params.n == 1:
        return group
    (only,) = group
    return [Completion(list(only.token_ids), list(only.logprobs), only.text, only.finish_reason)
            for _ in range(params.n)]


def row_logits_processor_class() -> type:
    """:class:`RowLogitsProcessor` (built on first use: it subclasses a vLLM class)."""
    global _ROW_CLASS
    if _ROW_CLASS is None:
        from vllm.v1.sample.logits_processor import AdapterLogitsProcessor

        class RowLogitsProcessor(AdapterLogitsProcessor):
            """Runs ``SamplingParams.logits_processor`` (from the request's ``extra_args``) on that request's row;
            not argmax-invariant, so vLLM applies it before the temperature and for greedy requests too."""

            def is_argmax_invariant(self) -> bool:
                return False

            def new_req_logits_processor(self, params: Any) -> Callable | None:
                extra = params.extra_args or {}
                fn = extra.get(_FN_KEY)
                if fn is None:
                    return None
                prompt_index = int(extra[_PROMPT_KEY])

                def apply(output_ids: list[int], logits: Any) -> Any:
                    out = fn(prompt_index, list(output_ids), logits)
                    if getattr(out, "shape", None) != logits.shape:
                        raise ValueError(f"SamplingParams.logits_processor must return a tensor of shape "
                                         f"{tuple(logits.shape)}, got {getattr(out, 'shape', type(out))}")
                    return out.to(logits.dtype)

                return apply

        _ROW_CLASS = RowLogitsProcessor
    return _ROW_CLASS


_ROW_CLASS: type | None = None
