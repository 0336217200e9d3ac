"""How many new tokens fit: the model's context minus the prompt, so generation never runs past the positions the
model was built for (a 128-position model asked for 4,096 new tokens would otherwise spend minutes on garbage)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

CONTEXT_FIELDS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


def model_context(model: str) -> int | None:
    """The context length in the model's config (``max_position_embeddings`` or an alias); None if it has none."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(model)
    except (OSError, ValueError):
        return None
    for config_part in (config, getattr(config, "text_config", None)):
        for name in CONTEXT_FIELDS:
            value = getattr(config_part, name, None)
            if isinstance(value, int) and value > 0:
                return value
    return None


@dataclass(frozen=True)
class TokenBudget:
    """``max_tokens`` requested, capped at ``context`` minus the prompt (no cap when ``context`` is None)."""

    max_tokens: int
    context: int | None

    def room(self, prompt_tokens: int) -> int:
        """New tokens a prompt of ``prompt_tokens`` may get; 0 when the prompt fills the context."""
        if self.context is None:
            return self.max_tokens
        return max(0, min(self.max_tokens, self.context - prompt_tokens))

    def for_batch(self, prompt_lengths: Sequence[int]) -> int:
        """One limit for a batch of prompts that each have room: the smallest room among them."""
        return min(self.room(n) for n in prompt_lengths)

    def summary(self, prompt_lengths: Sequence[int]) -> dict[str, Any]:
        """What the cap does to these prompts (recorded in results.json and report.md)."""
        rooms = [self.room(n) for n in prompt_lengths]
        return {"requested_max_tokens": self.max_tokens, "context_tokens": self.context,
                "capped_problems": sum(r < self.max_tokens for r in rooms),
                "prompt_fills_context": sum(r == 0 for r in rooms),
                "smallest_limit": min(rooms) if rooms else self.max_tokens,
                "longest_prompt_tokens": max(prompt_lengths, default=0)}

    def warning(self, prompt_lengths: Sequence[int]) -> str | None:
        """One line for stderr when the cap changes anything; None otherwise."""
        s = self.summary(prompt_lengths)
        if not s["capped_problems"]:
            return None
        line = (f"warning: the model's context is {self.context} tokens: for {s['capped_problems']} of "
                f"{len(prompt_lengths)} problems the prompt leaves less room than --max-tokens {self.max_tokens}, "
                f"so each batch's new tokens are capped at the room its longest prompt leaves")
        if s["prompt_fills_context"]:
            line += (f"; {s['prompt_fills_context']} prompts fill the context on their own and are scored wrong "
                     f"without generating")
        return line


def describe(summary: dict[str, Any]) -> str:
    """The cap in words, for report.md."""
    text = f"requested {summary['requested_max_tokens']}"
    if summary.get("context_tokens") is None:
        return text + " (the model's config names no context length: not capped)"
    text += f"; model context {summary['context_tokens']} tokens"
    if not summary["capped_problems"]:
        return text + ": never capped"
    text += (f"; {summary['capped_problems']} prompts leave less room (the least: {summary['smallest_limit']}), "
             f"so each batch is capped at the room its longest prompt leaves (per sample: `max_new_tokens` in "
             f"samples.jsonl)")
    if summary["prompt_fills_context"]:
        text += f"; {summary['prompt_fills_context']} prompts fill the context (scored wrong, nothing generated)"
    return text
