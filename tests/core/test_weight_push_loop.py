"""The learner-driven weight push in a real run: an engine with its own weights receives bucketed pushes after
every update and after a restore; with LoRA it receives adapters, and its base weights never change."""

from __future__ import annotations

import torch

from alignrl.config import load_config
from alignrl.learner.forward import token_logprobs
from alignrl.learner.weights import buckets, full_weights
from alignrl.logging.metrics import read_metrics
from alignrl.loop import train
from alignrl.rollout import SamplingParams


def _engine_matches_learner(step, components, metrics, log):
    """The engine's recorded log-probs of its own samples equal the learner's recomputation."""
    engine, learner = components.engine, components.learner
    assert not engine.shares_learner_weights and engine.weights_version == step
    prompts = [components.prompts.token_ids[i] for i in range(4)]
    groups = engine.generate(prompts, SamplingParams(n=2, temperature=1.0, max_new_tokens=8, seed=step))
    from alignrl.batch import build_batch

    batch = build_batch(prompts, groups, [""] * 4, [{}] * 4, components.tokenizer.pad_token_id)
    with torch.no_grad():
        logp, _ = token_logprobs(learner.unwrapped, batch, temperature=1.0)
    log.append(float(((logp - batch.sampler_logp) * batch.completion_mask).abs().max()))


def test_engine_with_its_own_weights_follows_the_policy(base_recipe):
    log: list[float] = []
    overrides = ["rollout.engine={name: hf, share_weights: false}", "rollout.weight_bucket_mb=0.05",
                 "trainer.max_steps=3", "eval.every_steps=0", "reward.functions=[{name: test_sevens}]",
                 "trainer.lr=1e-2"]
    run = train(load_config(base=base_recipe, overrides=overrides),
                callbacks=[lambda s, c, m: _engine_matches_learner(s, c, m, log)])
    assert len(log) == 3 and max(log) < 1e-5, log
    records = read_metrics(run / "metrics.jsonl")
    assert all(r["time/sync"] > 0 for r in records)


def test_lora_pushes_adapters_and_the_engine_base_never_changes(base_recipe):
    log: list[float] = []
    bases = []

    def record_base(step, components, metrics):
        engine_model = components.engine.model
        base = engine_model.get_base_model() if hasattr(engine_model, "get_base_model") else engine_model
        bases.append({k: v.clone() for k, v in base.state_dict().items() if "lora_" not in k})
        _engine_matches_learner(step, components, metrics, log)

    overrides = ["model.lora={r: 4, alpha: 8}", "rollout.engine={name: hf, share_weights: false}",
                 "trainer.max_steps=3", "eval.every_steps=0", "reward.functions=[{name: test_sevens}]",
                 "trainer.lr=5e-2"]
    train(load_config(base=base_recipe, overrides=overrides), callbacks=[record_base])
    assert max(log) < 1e-5, log
    assert all(torch.equal(bases[0][k], b[k]) for b in bases[1:] for k in bases[0])


def test_buckets_respect_the_size_limit():
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Linear(64, 8))
    named = list(full_weights(model))
    assert [n for n, _ in named] == list(model.state_dict())
    out = list(buckets(named, bucket_bytes=64 * 64 * 4))
    assert [[n for n, _ in b] for b in out] == [["0.weight"], ["0.bias", "1.weight", "1.bias"]]
