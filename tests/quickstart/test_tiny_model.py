from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

from alignrl.quickstart.task import make_demonstrations
from alignrl.quickstart.tiny_model import BOXED, CHARACTERS, PRESETS, build_model, build_tokenizer, count_parameters


def test_every_task_character_round_trips():
    tok = build_tokenizer()
    rows = make_demonstrations(200, seed=0)
    used = set("".join(str(r["prompt"]) + str(r["completion"]) for r in rows))
    assert used <= set(CHARACTERS)
    assert tok.unk_token_id not in tok("".join(sorted(used)))["input_ids"]
    for r in rows[:50]:
        text = str(r["prompt"]) + str(r["completion"])
        ids = tok(text)["input_ids"]
        # one token per character, except "\\boxed{" (one token); no BOS/EOS added
        assert len(ids) == len(text) - (len(BOXED) - 1) * text.count(BOXED)
        assert tok.decode(ids) == text
    every = "".join(CHARACTERS)
    assert tok.decode(tok(every)["input_ids"]) == every  # spaces and newlines survive
    assert tok.convert_ids_to_tokens(tok("x\\boxed{1}")["input_ids"]) == ["x", BOXED, "1", "}"]
    assert tok.decode(tok("\\boxed \\boxed{")["input_ids"]) == "\\boxed \\boxed{"
    assert {tok.pad_token, tok.bos_token, tok.eos_token, tok.unk_token} == {"<pad>", "<s>", "</s>", "<unk>"}
    assert len({tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id}) == 4
    assert tok.decode(tok("12+3=")["input_ids"] + [tok.eos_token_id], skip_special_tokens=True) == "12+3="


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_are_llama_with_vllm_head_dim(preset):
    model = build_model(build_tokenizer(), preset=preset, seed=0)
    assert isinstance(model, LlamaForCausalLM)
    head_dim = model.config.head_dim
    assert head_dim >= 32 and head_dim in (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)
    assert model.config.max_position_embeddings >= 64  # prompt + completion + EOS is < 30 tokens


def test_quickstart_preset_size():
    assert 0.9e6 < count_parameters(build_model(build_tokenizer(), preset="quickstart")) < 1.1e6


def test_head_dim_below_32_refused():
    with pytest.raises(ValueError):
        build_model(build_tokenizer(), preset="test", hidden_size=64, num_attention_heads=4, head_dim=16)


def test_seeded_init():
    tok = build_tokenizer()
    a, b, c = (build_model(tok, preset="test", seed=s) for s in (0, 0, 1))
    assert torch.equal(a.lm_head.weight, b.lm_head.weight)
    assert not torch.equal(a.lm_head.weight, c.lm_head.weight)


def test_save_pretrained_round_trip(tmp_path):
    tok = build_tokenizer()
    model = build_model(tok, preset="test", seed=0).eval()
    tok.save_pretrained(tmp_path)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    tok2 = AutoTokenizer.from_pretrained(tmp_path)
    model2 = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    text = "4821+3967=0010 \\boxed{8788} a B\n"
    assert tok2(text)["input_ids"] == tok(text)["input_ids"]
    assert tok2.decode(tok2(text)["input_ids"]) == text
    assert (tok2.pad_token_id, tok2.eos_token_id) == (tok.pad_token_id, tok.eos_token_id)
    assert tok2.apply_chat_template([{"role": "user", "content": "12+3="}], tokenize=False) == "12+3="
    x = torch.tensor([tok(text)["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(model(x).logits, model2(x).logits, atol=1e-6)
    out = model2.generate(x[:, :10], max_new_tokens=3, do_sample=False)
    assert out.shape[0] == 1 and 10 < out.shape[1] <= 13
