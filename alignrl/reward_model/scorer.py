"""Load a sequence-classification reward model and score token sequences in batches, on the model's device."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from alignrl.learner.models import ModelLoadError, resolve_dtype
from alignrl.reward_model.pairs import TRUNCATION_SIDES, Encoded, Part, TruncationSide, encode, truncate


def resolve_device(device: str) -> torch.device:
    """``auto`` = the first CUDA GPU when there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"device '{device}' was asked for but no CUDA GPU is available (use cpu or auto)")
    try:
        return torch.device(device)
    except RuntimeError as err:
        raise ModelLoadError(f"device '{device}': {err}") from err


def _check_architecture(path: str, key: str) -> None:
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as err:
        hint = " (a LoRA adapter folder? merge it into the base model first)" \
            if (Path(path) / "adapter_config.json").is_file() else ""
        raise ModelLoadError(f"{key} '{path}': cannot load the model config{hint}: {err}") from err
    names = list(getattr(config, "architectures", None) or [])
    if names and not any(name.endswith("ForSequenceClassification") for name in names):
        raise ModelLoadError(f"{key} '{path}' is not a sequence-classification model (architectures: "
                             f"{', '.join(names)}); a reward model is saved by `alignrl rm train` or with "
                             f"AutoModelForSequenceClassification.save_pretrained")
    if getattr(config, "num_labels", 1) != 1:
        raise ModelLoadError(f"{key} '{path}': a reward model has one output (num_labels 1), "
                             f"this one has {config.num_labels}")


def load_reward_model(path: str | Path, device: str = "auto", dtype: str | torch.dtype = "auto",
                      key: str = "reward model") -> tuple[Any, Any]:
    """``(model, tokenizer)`` of a saved sequence-classification reward model, in eval mode on ``device``.

    ``dtype``: ``auto`` (bf16 on GPUs that have it, float32 elsewhere), ``float32``, ``bfloat16``, ``float16`` or a
    ``torch.dtype``. A missing pad token is set to EOS, and the model's ``pad_token_id`` to the tokenizer's when the
    config has none (the head reads the last token that is not padding). Errors are :class:`ModelLoadError` naming
    ``key`` and the path."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = str(path)
    target = resolve_device(device)
    _check_architecture(path, key)
    torch_dtype = dtype if isinstance(dtype, torch.dtype) else _dtype(dtype, target, key)
    try:
        model, info = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch_dtype,
                                                                         output_loading_info=True)
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"{key} '{path}': cannot load the model: {err}") from err
    missing = list(info.get("missing_keys") or [])
    if missing:
        raise ModelLoadError(f"{key} '{path}': weights missing from the folder ({', '.join(sorted(missing)[:4])}"
                             f"{', ...' if len(missing) > 4 else ''}); it is not a trained reward model")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"{key} '{path}': cannot load the tokenizer: {err}") from err
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelLoadError(f"{key} '{path}': the tokenizer has neither a pad nor an EOS token")
        tokenizer.pad_token = tokenizer.eos_token
    text_config = model.config.get_text_config()
    if text_config.pad_token_id is None:
        text_config.pad_token_id = tokenizer.pad_token_id
        model.config.pad_token_id = tokenizer.pad_token_id
    model.requires_grad_(False)
    return model.to(target).eval(), tokenizer


def _dtype(name: str, device: torch.device, key: str) -> torch.dtype:
    if name == "auto":
        if device.type == "cuda":
            return resolve_dtype("auto")
        return torch.float32
    try:
        return resolve_dtype(name)
    except KeyError:
        raise ModelLoadError(f"{key}: dtype must be auto, float32, bfloat16 or float16, got {name!r}") from None


class SequenceScorer:
    """Scores token sequences with a sequence-classification model: batches of ``batch_size`` sequences, longest
    first (less padding), right-padded with an attention mask, no gradients, on the model's device; scores come
    back as float32 on the CPU in input order. Sequences longer than ``max_length`` (default: the model's
    ``max_position_embeddings``) are truncated from ``truncation_side``."""

    def __init__(self, model: Any, tokenizer: Any, batch_size: int = 16, max_length: int | None = None,
                 truncation_side: TruncationSide = "left") -> None:
        if batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size}")
        if truncation_side not in TRUNCATION_SIDES:
            raise ValueError(f"truncation side must be 'left' or 'right', got {truncation_side!r}")
        if getattr(model.config, "num_labels", 1) != 1:
            raise ValueError(f"a reward model has one output; this one has {model.config.num_labels}")
        context = getattr(model.config.get_text_config(), "max_position_embeddings", None)
        if max_length is not None and max_length < 1:
            raise ValueError(f"max length must be >= 1, got {max_length}")
        if max_length is not None and context is not None and max_length > context:
            raise ValueError(f"max length {max_length} exceeds the model's context of {context} tokens")
        pad_id = model.config.get_text_config().pad_token_id
        self.pad_id = tokenizer.pad_token_id if pad_id is None else pad_id
        if self.pad_id is None:
            raise ValueError("the model and tokenizer define no pad token id; batches cannot be padded")
        self.model, self.tokenizer = model, tokenizer
        self.batch_size = batch_size
        self.max_length = max_length if max_length is not None else context
        self.truncation_side: TruncationSide = truncation_side

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode(self, prompt: Part | None, response: Part) -> Encoded:
        """:func:`~alignrl.reward_model.pairs.encode` with this scorer's max length and truncation side."""
        return encode(self.tokenizer, prompt, response, self.max_length, self.truncation_side)

    @torch.inference_mode()
    def score_ids(self, sequences: list[list[int]], progress: Callable[[int], None] | None = None) -> torch.Tensor:
        """One float32 score per sequence (CPU tensor, input order). ``progress(n)`` is called after each batch with
        the number of input sequences it scored."""
        for position, ids in enumerate(sequences):
            if len(ids) == 0:
                raise ValueError(f"sequence {position} is empty: there is no token for the reward head to read")
        was_training = self.model.training
        self.model.eval()  # no dropout, whoever calls (e.g. held-out accuracy in the middle of training)
        try:
            return self._score_sorted(sequences, progress)
        finally:
            self.model.train(was_training)

    def _score_sorted(self, sequences: list[list[int]], progress: Callable[[int], None] | None) -> torch.Tensor:
        """Each distinct (truncated) sequence is scored once, so identical inputs get identical scores whatever the
        batching (a pair of identical responses is an exact tie); longest first; scattered back to input order."""
        slots: dict[tuple[int, ...], int] = {}
        where = [slots.setdefault(tuple(truncate(ids, self.max_length, self.truncation_side)), len(slots))
                 for ids in sequences]
        unique = [list(ids) for ids in slots]
        scores = self._score_unique(unique, None if progress is None else _Repeat(progress, where, len(unique)))
        return scores[torch.tensor(where, dtype=torch.long)] if sequences else scores

    def _score_unique(self, sequences: list[list[int]], progress: Callable[[list[int]], None] | None) -> torch.Tensor:
        scores = torch.empty(len(sequences), dtype=torch.float32)
        order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
        device = self.device
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            batch = [sequences[i] for i in chunk]
            width = max(len(ids) for ids in batch)
            input_ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, ids in enumerate(batch):
                input_ids[row, :len(ids)] = torch.tensor(ids, dtype=torch.long)
                mask[row, :len(ids)] = 1
            logits = self.model(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                                use_cache=False).logits
            scores[torch.tensor(chunk)] = logits[:, 0].float().cpu()
            if progress is not None:
                progress(chunk)
        return scores


class _Repeat:
    """Progress in input sequences: a batch of distinct sequences counts every input that repeats one of them."""

    def __init__(self, report: Callable[[int], None], where: list[int], n_unique: int) -> None:
        self.report = report
        self.copies = [0] * n_unique
        for slot in where:
            self.copies[slot] += 1

    def __call__(self, chunk: list[int]) -> None:
        self.report(sum(self.copies[i] for i in chunk))
