"""Fixtures of the rollout-engine tests: the tiny model, prompt encoding, teacher-forced logits, bucketing."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import pytest
import torch
from torch import Tensor

from alignrl.learner.weights import buckets as learner_buckets
from alignrl.quickstart.tiny_model import build_model, build_tokenizer


@pytest.fixture(scope="session")
def tokenizer():
    return build_tokenizer()


@pytest.fixture()
def make_model(tokenizer) -> Callable[..., torch.nn.Module]:
    """``make_model(seed=0)``: a fresh tiny float32 Llama."""
    return lambda seed=0: build_model(tokenizer, preset="test", seed=seed)


@pytest.fixture()
def encode(tokenizer) -> Callable[[list[str]], list[list[int]]]:
    return lambda texts: [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


def _completion_logits(model: torch.nn.Module, prompt: list[int], completion: list[int]) -> Tensor:
    was_training = model.training
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt + completion])).logits[0].float()
    model.train(was_training)
    return logits[len(prompt) - 1:len(prompt) - 1 + len(completion)]


@pytest.fixture()
def completion_logits() -> Callable[[torch.nn.Module, list[int], list[int]], Tensor]:
    """``completion_logits(model, prompt, completion)``: [len(completion), V] teacher-forced logits, row i being
    the distribution completion[i] was drawn from (one unpadded sequence, no cache)."""
    return _completion_logits


@pytest.fixture()
def recompute() -> Callable[..., Tensor]:
    """``recompute(model, prompt, completion, temperature)``: log_softmax(logits / T) of the completion tokens
    (T == 0: untempered), what the learner computes."""

    def fn(model: torch.nn.Module, prompt: list[int], completion: list[int], temperature: float) -> Tensor:
        logits = _completion_logits(model, prompt, completion)
        logits = logits / temperature if temperature > 0 else logits
        return torch.log_softmax(logits, -1).gather(-1, torch.tensor(completion)[:, None]).squeeze(-1)

    return fn


def bucketize(named: Iterable[tuple[str, Tensor]], bucket_bytes: int = 64 * 1024) -> Iterator[list[tuple[str, Tensor]]]:
    """The learner's bucketing, each tensor cloned (a test push must not alias the policy's storage)."""
    return learner_buckets(((name, tensor.detach().clone()) for name, tensor in named), bucket_bytes)


@pytest.fixture()
def buckets() -> Callable[..., Iterator[list[tuple[str, Tensor]]]]:
    """``buckets(state_dict_items, bucket_bytes=64 KiB)``: see :func:`bucketize`."""
    return bucketize


# -- vLLM ----------------------------------------------------------------------------------------------------------
# Tests marked `vllm` need vLLM (the CPU build lives in its own environment: .venv-vllm). Without it they are skipped
# with the install command; with ALIGNRL_REQUIRE_VLLM=1 (CI) a missing vLLM is an error instead.

def _have_vllm() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def pytest_collection_modifyitems(config, items) -> None:
    marked = [item for item in items if item.get_closest_marker("vllm")]
    if not marked or _have_vllm():
        return
    import os

    if os.environ.get("ALIGNRL_REQUIRE_VLLM") == "1":
        raise pytest.UsageError("ALIGNRL_REQUIRE_VLLM=1 but vLLM is not importable in this environment")
    from alignrl.rollout.vllm_settings import INSTALL_HINT

    skip = pytest.mark.skip(reason=INSTALL_HINT)
    for item in marked:
        item.add_marker(skip)


def train_steps(model: torch.nn.Module, batch: Tensor, steps: int, lr: float = 1e-2) -> None:
    """``steps`` AdamW steps (a fresh optimizer each call) of next-token loss on ``batch``, leaving ``model`` in eval."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=batch, labels=batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


@pytest.fixture()
def trainer() -> Callable[..., None]:
    """``trainer(model, batch, steps, lr=1e-2)``: see :func:`train_steps`."""
    return train_steps
