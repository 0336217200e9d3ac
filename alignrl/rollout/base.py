"""The rollout engine interface: token ids in, sampled completions with their token log-probs out.

Engines know nothing of algorithms, rewards or the learner. The loop (and evaluation) only calls ``generate``,
``load_weights`` and ``close``. A new engine (vLLM, a remote server) registers a factory together with a dataclass
of its own settings with :func:`register_engine` and is built by name with :func:`build_engine`.

The log-prob contract, whatever the sampling settings: ``Completion.logprobs[i]`` is the log-probability of
``token_ids[i]`` under the distribution the engine actually sampled it from, i.e. the model's logits after, in this
order, the constraints (``allowed_token_ids``, then ``logits_processor``), the temperature, top-k and top-p
truncation, renormalised. With ``top_k == 0``, ``top_p == 1`` and no constraints this is exactly
``log_softmax(logits / temperature)``, what the learner recomputes. Greedy decoding (``temperature == 0``) reports
log-probs of the untempered (constrained) distribution ``log_softmax(logits)``.

Weights flow one way: after each update the learner hands the engine a :class:`WeightUpdate`. An engine that
generates with the learner's own module (``shares_learner_weights``) only records its version; any other engine
copies the tensors into its own model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedModel

FinishReason = Literal["stop", "length"]
# fn(prompt_index, generated_token_ids_so_far, logits[V]) -> logits[V]; see SamplingParams.logits_processor
RowLogitsProcessor = Callable[[int, list[int], Tensor], Tensor]


@dataclass
class SamplingParams:
    """How to sample. ``temperature == 0`` means greedy decoding."""

    n: int = 1  # completions per prompt
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0  # nucleus truncation; 1 = off
    top_k: int = 0  # keep the k most likely tokens; 0 = off
    max_new_tokens: int = 256
    stop: list[str] = field(default_factory=list)  # stop strings; the stop string is kept in the completion
    seed: int | None = None  # None: the engine's default RNG; an int: sample from an RNG seeded by it (same seed,
    # same prompts, same settings -> same completions), leaving the global RNG untouched
    allowed_token_ids: list[list[int]] | None = None  # one list per prompt of the generate call: only these ids may
    # be sampled in that prompt's completions (exactly these: include an EOS id for the completion to be able to
    # stop before max_new_tokens); None = no constraint
    logits_processor: RowLogitsProcessor | None = None  # called per row and step as fn(prompt_index,
    # generated_token_ids_so_far, logits[V]) -> logits[V], after allowed_token_ids and before temperature (e.g. a
    # debater limited to evidence it has not revealed yet); -inf bans a token. None = off


@dataclass
class Completion:
    """One sampled completion."""

    token_ids: list[int]  # completion tokens, EOS included when the model stopped on EOS
    logprobs: list[float]  # log-prob of each sampled token under the distribution actually sampled: after the
    # constraints, temperature, top-k and top-p, renormalised (greedy: the untempered, constrained distribution)
    text: str  # decoded completion (special tokens skipped)
    finish_reason: FinishReason  # "stop": EOS or a stop string; "length": hit max_new_tokens


@dataclass
class WeightUpdate:
    """New policy weights, pushed by the learner to the engine after an update."""

    version: int  # number of learner updates behind these weights (0 = initial or restored-from-checkpoint)
    buckets: Iterable[list[tuple[str, Tensor]]]  # lazy; each bucket a list of (name, tensor) of at most
    # ~bucket_bytes
    lora: dict | None = None  # None: full weights with Hugging Face base-model parameter names (model.state_dict()
    # names of a plain AutoModelForCausalLM). A dict: the buckets hold ONLY LoRA adapter tensors, named as
    # peft.get_peft_model_state_dict(peft_model) returns them, and this dict is the adapter's peft LoraConfig as
    # `peft_config.to_dict()` (json-able)


def check_sampling_params(prompts: list[list[int]], params: SamplingParams, vocab_size: int | None = None) -> None:
    """Raise ValueError with a clear message on settings no engine could honour (every engine calls this first);
    with ``vocab_size``, also on allowed token ids outside the vocabulary."""
    checks = [(params.n >= 1, f"n must be >= 1, got {params.n}"),
              (params.temperature >= 0, f"temperature must be >= 0, got {params.temperature}"),
              (0 < params.top_p <= 1, f"top_p must be in (0, 1], got {params.top_p}"),
              (params.top_k >= 0, f"top_k must be >= 0 (0 = off), got {params.top_k}"),
              (params.max_new_tokens >= 1, f"max_new_tokens must be >= 1, got {params.max_new_tokens}"),
              (all(len(p) > 0 for p in prompts), "every prompt needs at least one token")]
    allowed = params.allowed_token_ids
    if allowed is not None:
        checks += [(len(allowed) == len(prompts), f"allowed_token_ids has {len(allowed)} lists for "
                    f"{len(prompts)} prompts (one list per prompt)"),
                   (all(len(ids) > 0 for ids in allowed), "every allowed_token_ids list needs at least one id")]
    for ok, message in checks:
        if not ok:
            raise ValueError(f"SamplingParams: {message}")
    if allowed is not None and vocab_size is not None:
        for index, ids in enumerate(allowed):
            bad = [i for i in ids if not 0 <= i < vocab_size]
            if bad:
                raise ValueError(f"allowed_token_ids[{index}] has ids outside the vocabulary (size {vocab_size}): "
                                 f"{bad}")


class RolloutEngine:
    """Base class for engines. ``generate`` returns, for each prompt, ``params.n`` completions."""

    weights_version: int = -1  # version of the last WeightUpdate loaded; -1 before the first

    @property
    def shares_learner_weights(self) -> bool:
        """True when the engine generates with the learner's own module: the loop never iterates the buckets."""
        return False

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[list[Completion]]:
        raise NotImplementedError  # pragma: no cover

    def load_weights(self, update: WeightUpdate) -> None:
        """Serve ``update``'s weights from now on and set ``weights_version``. Called after each policy update."""
        raise NotImplementedError  # pragma: no cover

    def close(self) -> None:
        """Release processes and memory."""


# factory(settings, *, model, model_path, tokenizer, dtype, device) -> RolloutEngine
EngineFactory = Callable[..., RolloutEngine]
_ENGINES: dict[str, tuple[EngineFactory, type]] = {}


def register_engine(name: str, settings: type) -> Callable[[EngineFactory], EngineFactory]:
    """Decorator registering ``factory`` as engine ``name`` with ``settings``, the dataclass of its own settings.

    The factory is called as ``factory(settings_instance, model=..., model_path=..., tokenizer=..., dtype=...,
    device=...)`` (see :func:`build_engine`).
    """
    if not (isinstance(settings, type) and dataclasses.is_dataclass(settings)):
        raise TypeError(f"engine '{name}': settings must be a dataclass type, got {settings!r}")

    def decorate(factory: EngineFactory) -> EngineFactory:
        _ENGINES[name] = (factory, settings)
        return factory

    return decorate


def _load_builtin() -> None:
    import alignrl.rollout  # noqa: F401  (registers the built-in engines)


def registered_engines() -> list[str]:
    """The names of the registered engines, sorted."""
    _load_builtin()
    return sorted(_ENGINES)


def engine_settings_class(name: str) -> type:
    """The settings dataclass of engine ``name``."""
    _load_builtin()
    if name not in _ENGINES:
        raise KeyError(f"unknown rollout engine '{name}'; registered: {', '.join(sorted(_ENGINES))}")
    return _ENGINES[name][1]


def _coerce_settings(name: str, cls: type, settings: object | None) -> object:
    if settings is None:
        return cls()
    if isinstance(settings, Mapping):  # e.g. a recipe section
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise TypeError(f"engine '{name}': unknown settings {unknown}; {cls.__name__} has {sorted(known)}")
        return cls(**settings)
    if not isinstance(settings, cls):
        raise TypeError(f"engine '{name}' takes {cls.__name__} settings, got {type(settings).__name__}")
    return settings


def resolve_dtype(dtype: str | torch.dtype) -> str | torch.dtype:
    """``"auto"`` stays ``"auto"``; a name such as ``"bfloat16"`` becomes ``torch.bfloat16``."""
    if isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    resolved = getattr(torch, str(dtype), None)
    if not isinstance(resolved, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}; use 'auto', a torch dtype or its name (e.g. 'bfloat16')")
    return resolved


def build_engine(name: str, settings: object | None = None, *, model: PreTrainedModel | None = None,
                 model_path: str | None = None, tokenizer: Any = None, dtype: str | torch.dtype = "auto",
                 device: str | None = None) -> RolloutEngine:
    """Build the engine registered as ``name`` (``hf`` is built in).

    Exactly one of ``model`` (serve the learner's in-memory module; ``tokenizer`` required) and ``model_path``
    (load its own model, and the tokenizer unless given, from a folder or hub name). ``settings`` is an instance
    of the engine's settings dataclass (or a mapping of its fields); None = its defaults. ``dtype``: "auto" keeps
    the model's / checkpoint's dtype. ``device``: None keeps an in-memory model where it is and loads a folder on
    CPU.
    """
    cls = engine_settings_class(name)
    if (model is None) == (model_path is None):
        raise ValueError("build_engine needs exactly one of model= (in-memory module) and model_path= (a folder)")
    if model is not None and tokenizer is None:
        raise ValueError("build_engine(model=...) needs the tokenizer too")
    factory = _ENGINES[name][0]
    return factory(_coerce_settings(name, cls, settings), model=model, model_path=model_path, tokenizer=tokenizer,
                   dtype=resolve_dtype(dtype), device=device)
