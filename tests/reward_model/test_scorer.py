"""The batched scorer against the model called one sequence at a time, and the loader's checks."""

from __future__ import annotations

import random

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from alignrl.learner.models import ModelLoadError
from alignrl.quickstart.tiny_model import build_model, build_tokenizer
from alignrl.reward_model.scorer import SequenceScorer, load_reward_model


def one_at_a_time(model, sequences: list[list[int]]) -> torch.Tensor:
    with torch.no_grad():
        return torch.tensor([model(input_ids=torch.tensor([ids])).logits[0, 0].item() for ids in sequences])


def random_sequences(n: int, vocab: int, seed: int = 0, lo: int = 1, hi: int = 40) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(4, vocab) for _ in range(rng.randint(lo, hi))] for _ in range(n)]


@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_batched_scores_equal_unbatched(reward_model_dir, batch_size):
    model, tokenizer = load_reward_model(reward_model_dir, device="cpu")
    sequences = random_sequences(23, len(tokenizer))
    sequences[5] = sequences[5][:1] + [tokenizer.eos_token_id]  # a pad-free short one ending in EOS
    calls = []
    scores = SequenceScorer(model, tokenizer, batch_size=batch_size).score_ids(sequences, progress=calls.append)
    reference = AutoModelForSequenceClassification.from_pretrained(reward_model_dir).eval()
    expected = one_at_a_time(reference, sequences)
    assert scores.dtype == torch.float32 and scores.shape == (23,)
    assert torch.allclose(scores, expected, atol=1e-5, rtol=0), (scores - expected).abs().max()
    assert sum(calls) == 23 and len(calls) == -(-23 // batch_size)
    assert expected.std() > 0.1  # the scores differ, so a mix-up of the order would show


def test_score_ids_truncates_long_sequences(reward_model_dir):
    model, tokenizer = load_reward_model(reward_model_dir, device="cpu")
    sequences = random_sequences(4, len(tokenizer), seed=1, lo=20, hi=30)
    for side, kept in (("left", lambda s: s[-8:]), ("right", lambda s: s[:8])):
        scorer = SequenceScorer(model, tokenizer, batch_size=2, max_length=8, truncation_side=side)
        assert torch.allclose(scorer.score_ids(sequences), one_at_a_time(model, [kept(s) for s in sequences]),
                              atol=1e-5, rtol=0)
    assert SequenceScorer(model, tokenizer).max_length == model.config.max_position_embeddings


def test_scorer_restores_training_mode_and_rejects_bad_settings(reward_model_dir):
    model, tokenizer = load_reward_model(reward_model_dir, device="cpu")
    model.train()
    SequenceScorer(model, tokenizer).score_ids([[5, 6, 7]])
    assert model.training
    with pytest.raises(ValueError, match="exceeds the model's context of 128"):
        SequenceScorer(model, tokenizer, max_length=129)
    with pytest.raises(ValueError, match="batch size"):
        SequenceScorer(model, tokenizer, batch_size=0)
    with pytest.raises(ValueError, match="sequence 1 is empty"):
        SequenceScorer(model, tokenizer).score_ids([[5], []])


def test_loader_sets_pad_token_and_eval_mode(tmp_path, make_reward_model):
    tokenizer = build_tokenizer()
    model = make_reward_model(tokenizer)
    model.config.pad_token_id = None
    tokenizer.pad_token = None
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded, loaded_tokenizer = load_reward_model(tmp_path, device="cpu", dtype="float32")
    assert loaded_tokenizer.pad_token == loaded_tokenizer.eos_token
    assert loaded.config.pad_token_id == loaded_tokenizer.eos_token_id
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    assert next(loaded.parameters()).dtype == torch.float32


def test_loader_rejects_what_is_not_a_reward_model(tmp_path, make_reward_model):
    tokenizer = build_tokenizer()
    causal = tmp_path / "causal"
    build_model(tokenizer, preset="test").save_pretrained(causal)
    tokenizer.save_pretrained(causal)
    with pytest.raises(ModelLoadError, match=r"is not a sequence-classification model \(architectures: "
                                             r"LlamaForCausalLM\)"):
        load_reward_model(causal, device="cpu")
    two_labels = tmp_path / "two"
    make_reward_model(tokenizer, num_labels=2).save_pretrained(two_labels)
    with pytest.raises(ModelLoadError, match="one output .* has 2"):
        load_reward_model(two_labels, device="cpu")
    with pytest.raises(ModelLoadError, match="nowhere.*cannot load the model config"):
        load_reward_model(tmp_path / "nowhere", device="cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on machines without a GPU")
def test_asking_for_cuda_without_a_gpu_is_a_clear_error(reward_model_dir):
    with pytest.raises(ModelLoadError, match="no CUDA GPU"):
        load_reward_model(reward_model_dir, device="cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_scores_on_the_gpu_match_the_cpu(reward_model_dir):
    cpu_model, tokenizer = load_reward_model(reward_model_dir, device="cpu")
    gpu_model, _ = load_reward_model(reward_model_dir, device="cuda", dtype="float32")
    sequences = random_sequences(37, len(tokenizer), seed=2)
    on_gpu = SequenceScorer(gpu_model, tokenizer, batch_size=8).score_ids(sequences)
    assert on_gpu.device.type == "cpu"
    assert torch.allclose(on_gpu, SequenceScorer(cpu_model, tokenizer).score_ids(sequences), atol=1e-4, rtol=0)
