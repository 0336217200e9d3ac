from __future__ import annotations

import json

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from alignrl.quickstart.task import make_demonstrations
from alignrl.quickstart.tiny_model import build_model, build_tokenizer
from alignrl.sft import SFTParams, build_sft_config, run_sft


def _completion_nll(model, tok, rows) -> float:
    """Mean NLL of the completions (+EOS) given the prompts."""
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for r in rows:
            p = tok(r["prompt"])["input_ids"]
            c = tok(r["completion"])["input_ids"] + [tok.eos_token_id]
            logits = model(torch.tensor([p + c])).logits[0, len(p) - 1 : -1]
            total += torch.nn.functional.cross_entropy(logits, torch.tensor(c), reduction="sum").item()
            count += len(c)
    return total / count


def test_sft_config_is_fast_on_cpu(tmp_path):
    cfg = build_sft_config(tmp_path, SFTParams())
    assert cfg.gradient_checkpointing is False and cfg.packing is False
    assert cfg.completion_only_loss is True
    assert cfg.save_strategy == "no" and cfg.eval_strategy == "no"
    assert cfg.dataloader_num_workers == 0
    if not torch.cuda.is_available():
        assert cfg.bf16 is False
    assert cfg.report_to in ("none", [], ["none"])


def test_tiny_sft_lowers_loss_and_saves_a_loadable_model(tmp_path):
    tok = build_tokenizer()
    model = build_model(tok, preset="test", seed=0)
    rows = make_demonstrations(256, seed=0)
    before = _completion_nll(model, tok, rows[:16])
    params = SFTParams(learning_rate=3e-3, max_steps=25, per_device_train_batch_size=32, logging_steps=5, seed=0)
    out = run_sft(model, tok, rows, tmp_path / "bc", params)
    assert out == tmp_path / "bc"
    assert (out / "model.safetensors").exists() and (out / "tokenizer.json").exists()
    state = json.loads((out / "trainer_state.json").read_text())
    losses = [h["loss"] for h in state["log_history"] if "loss" in h]
    assert state["global_step"] == 25 and losses[-1] < losses[0]
    loaded = AutoModelForCausalLM.from_pretrained(out)
    assert loaded.config.use_cache is True  # Trainer turns it off while training
    tok2 = AutoTokenizer.from_pretrained(out)
    after = _completion_nll(loaded, tok2, rows[:16])
    assert after < before - 1.0  # starts near ln(100) = 4.6
    # the in-memory model is the trained one, with TRL's forward patch removed
    assert "forward" not in vars(model)
    x = torch.tensor([tok(rows[0]["prompt"])["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(model.eval()(x).logits, loaded.eval()(x).logits, atol=1e-5)
    ids = loaded.generate(x, max_new_tokens=4, do_sample=False)
    assert ids.shape[1] > x.shape[1]
