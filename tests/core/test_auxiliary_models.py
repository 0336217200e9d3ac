"""Several trainable models per run: an auxiliary scalar-head model trains beside the policy, the policy is
bit-identical through its freeze steps, and every model has its own folder in each checkpoint."""

from __future__ import annotations

import torch
from safetensors.torch import load_file

from alignrl.checkpoint import list_checkpoints
from alignrl.config import load_config
from alignrl.logging.metrics import read_metrics
from alignrl.loop import train


def _snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_freeze_schedule_keeps_the_policy_bit_identical(base_recipe):
    config = load_config(base=base_recipe, overrides=[
        "algorithm={name: test_token_rm, freeze_steps: 2}", "trainer.max_steps=3", "trainer.save_steps=1",
        "trainer.weight_decay=0.1", "eval.every_steps=0", "reward.functions=[{name: test_sevens}]"])
    seen = {}

    def record(step, components, metrics):
        seen[step] = {name: _snapshot(m.unwrapped) for name, m in components.learner.models.items()}
        seen[step]["metrics"] = metrics

    initial = load_file(f"{base_recipe['model']['path']}/model.safetensors")
    run = train(config, callbacks=[record])
    for step in (1, 2):  # frozen: no optimiser step at all, so not even weight decay moves it
        assert all(torch.equal(seen[step]["policy"][k], initial[k]) for k in initial), step
    assert any(not torch.equal(seen[3]["policy"][k], initial[k]) for k in initial)
    head = "lm_head.weight"
    assert seen[1]["token_rm"][head].shape[0] == 1 and seen[1]["token_rm"][head].abs().sum() > 0
    assert not torch.equal(seen[1]["token_rm"][head], seen[2]["token_rm"][head])

    records = read_metrics(run / "metrics.jsonl")
    assert {"aux/token_rm/bce", "aux/token_rm/grad_norm", "aux/token_rm/lr"} <= set(records[0])
    assert "clip_fraction" not in records[0] and "clip_fraction" in records[2]
    checkpoint = list_checkpoints(run)[-1]
    assert (checkpoint / "model.safetensors").is_file()  # the policy: a Hugging Face folder at the top
    assert (checkpoint / "token_rm" / "model.safetensors").is_file()
    assert (checkpoint / "token_rm" / "optimizer.pt").is_file()
    saved = load_file(checkpoint / "token_rm" / "model.safetensors")
    assert torch.equal(saved[head], seen[3]["token_rm"][head])


def test_a_step_with_nothing_kept_takes_no_optimiser_step(base_recipe):
    """With every sample filtered out on every rank there is nothing to learn from: no Adam step (whose momentum
    and weight decay would still move the weights), and the run goes on."""
    config = load_config(base=base_recipe, overrides=[
        "algorithm={name: test_keep_none}", "trainer.max_steps=2", "trainer.weight_decay=0.1", "eval.every_steps=0",
        "reward.functions=[{name: test_sevens}]"])
    initial = load_file(f"{base_recipe['model']['path']}/model.safetensors")
    seen = {}
    run = train(config, callbacks=[lambda s, c, m: seen.update({s: _snapshot(c.learner.unwrapped)})])
    assert all(torch.equal(seen[2][k], initial[k]) for k in initial)
    assert [r["kept_fraction"] for r in read_metrics(run / "metrics.jsonl")] == [0.0, 0.0]
