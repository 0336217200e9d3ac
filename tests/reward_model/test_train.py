"""`alignrl rm train` and `alignrl rm data`: the built-in preference data, a real (tiny) RewardTrainer run, its
outputs, refusal to clobber, resume, LoRA, and margins."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForSequenceClassification

from alignrl.cli import main
from alignrl.grading import grade
from alignrl.quickstart.task import TaskSpec, column_add, parse_prompt, split_of
from alignrl.quickstart.tiny_model import build_model, build_tokenizer
from alignrl.reward_model.preference_data import SyntheticSettings, labelled_output_pairs, synthetic_pairs


def test_synthetic_pairs_are_right_wrong_and_flipped_as_asked():
    settings = SyntheticSettings(flip_rate=0.2)
    rows = synthetic_pairs(400, seed=3, split="train", settings=settings)
    assert rows == synthetic_pairs(400, seed=3, split="train", settings=settings)  # deterministic
    flipped = 0
    for row in rows:
        a, b = parse_prompt(row["prompt"])
        correct = f"\\boxed{{{a + b}}}"
        good, bad = (row["rejected"], row["chosen"]) if row["flipped"] else (row["chosen"], row["rejected"])
        assert good.endswith(correct) and not bad.endswith(correct), row
        assert grade(bad, row["answer"]).correct is False and grade(good, row["answer"]).correct is True
        flipped += row["flipped"]
    assert 0.12 < flipped / len(rows) < 0.28
    assert {r["error_kind"] for r in rows} == {"dropped_carry", "flipped_carry", "wrong_digit"}


def test_dropped_carry_pairs_match_the_demonstrators_bug():
    rows = synthetic_pairs(200, 0, "train", SyntheticSettings(flip_rate=0.0, error_kinds=("dropped_carry",)))
    spec = TaskSpec()
    for row in rows:
        if row["error_kind"] != "dropped_carry":  # no tens carry in this prompt: replaced by a wrong digit
            assert column_add(*parse_prompt(row["prompt"]), spec.n_digits)[0][spec.bug_column] == 0
            continue
        assert int(row["rejected"].split("{")[1].rstrip("}")) == int(row["answer"]) - 100


def test_held_out_pairs_use_held_out_prompts_and_are_never_flipped():
    rows = synthetic_pairs(300, 1000, "heldout", SyntheticSettings(flip_rate=0.4))
    assert not any(r["flipped"] for r in rows)
    assert all(split_of(*parse_prompt(r["prompt"])) == "heldout" for r in rows)


def test_labelled_pairs_split_by_problem():
    rows = [{"problem": f"p{i}", "output": f"good {i}.{j}", "label": True} for i in range(10) for j in range(2)]
    rows += [{"problem": f"p{i}", "output": f"bad {i}", "label": False} for i in range(10)]
    rows += [{"problem": "only-good", "output": "x", "label": True}, {"problem": "p0", "output": "?", "label": None}]
    train, test = labelled_output_pairs(rows, test_share=0.3, seed=0, chat=False)
    assert len(train) + len(test) == 20 and len(test) == 6
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in test}
    assert all(r["chosen"].startswith("good") and r["rejected"].startswith("bad") for r in train + test)


def _tiny_causal_lm(folder: Path) -> Path:
    tokenizer = build_tokenizer()
    build_model(tokenizer, preset="test").save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _recipe(tmp_path: Path, **rm: object) -> Path:
    data = tmp_path / "prefs"
    assert main(["rm", "data", "synthetic", "--out", str(data), "--seed", "0", "--n-train", "256",
                 "--n-test", "64", "--flip-rate", "0"]) == 0
    recipe = {"model": {"path": str(_tiny_causal_lm(tmp_path / "base"))},
              "data": {"train": str(data / "train.jsonl"), "test": str(data / "test.jsonl")},
              "rm": {"learning_rate": 3e-3, "max_steps": 4, "per_device_train_batch_size": 16, "save_steps": 2,
                     "logging_steps": 1, "progress_bar": False, **rm},
              "output_dir": str(tmp_path / "rm")}
    path = tmp_path / "rm.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_rm_train_writes_a_loadable_model_a_card_and_metrics_then_refuses_and_resumes(tmp_path, capsys):
    recipe = _recipe(tmp_path)
    out = tmp_path / "rm"
    assert main(["rm", "train", str(recipe)]) == 0
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.num_labels == 1
    figures = json.loads((out / "eval.json").read_text())
    assert figures["test_pairs"] == 64 and figures["steps"] == 4 and 0 <= figures["test_accuracy"] <= 1
    card = (out / "README.md").read_text()
    assert "Held-out accuracy" in card and f"{figures['test_accuracy']:.1%}" in card and "rm.learning_rate" in card
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in logged if "loss" in m][:4] == [1, 2, 3, 4]
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]

    before = (out / "model.safetensors").read_bytes()
    assert main(["rm", "train", str(recipe)]) == 2  # a used folder is refused, nothing is touched
    assert "--resume" in capsys.readouterr().err
    assert (out / "model.safetensors").read_bytes() == before

    assert main(["rm", "train", str(recipe), "rm.max_steps=6", "--resume"]) == 0  # continues from checkpoint-4
    assert json.loads((out / "eval.json").read_text())["steps"] == 6
    state = json.loads((out / "checkpoint-6" / "trainer_state.json").read_text())
    assert state["global_step"] == 6


def test_rm_train_learns_the_synthetic_task(tmp_path):
    """A real signal: with a few dozen steps on a from-scratch tiny model, held-out accuracy beats chance."""
    recipe = _recipe(tmp_path, max_steps=40, learning_rate=3e-3, save_steps=0)
    assert main(["rm", "train", str(recipe)]) == 0
    figures = json.loads((tmp_path / "rm" / "eval.json").read_text())
    assert figures["test_accuracy"] > 0.6, figures


def test_rm_train_with_lora_saves_a_merged_model_and_the_adapter(tmp_path):
    recipe = _recipe(tmp_path, max_steps=2, save_steps=0)
    assert main(["rm", "train", str(recipe), "model.lora.r=4", "model.lora.alpha=8"]) == 0
    out = tmp_path / "rm"
    assert (out / "adapter" / "adapter_config.json").is_file()
    model = AutoModelForSequenceClassification.from_pretrained(out)  # plain folder, no peft needed
    assert not any("lora" in name for name in model.state_dict())


def test_margin_column_reaches_the_loss(tmp_path):
    from alignrl.reward_model.train import RMDataConfig, encode_pairs

    rows = [{"prompt": "1+1=", "chosen": "2", "rejected": "3", "gap": 0.5}]
    split = encode_pairs(rows, "mem", RMDataConfig(train="mem", margin_field="gap"), build_tokenizer(), None, "left")
    dataset = split.dataset(with_margin=True)
    assert dataset[0]["margin"] == 0.5
    with pytest.raises(ValueError, match="row 0"):
        encode_pairs([{"prompt": "1+1=", "chosen": "2", "rejected": "3"}], "mem",
                     RMDataConfig(train="mem", margin_field="gap"), build_tokenizer(), None, "left")


def test_long_inputs_are_truncated_and_counted_not_dropped():
    from alignrl.reward_model.train import RMDataConfig, encode_pairs

    rows = [{"prompt": "x" * 50, "chosen": "a", "rejected": "b"}, {"prompt": "", "chosen": "a", "rejected": "b"}]
    split = encode_pairs(rows, "mem", RMDataConfig(train="mem"), build_tokenizer(), 20, "left")
    assert len(split.chosen_ids) == 2 and split.truncated == 2
    assert all(len(ids) <= 20 for ids in split.chosen_ids + split.rejected_ids)


def test_bad_recipe_key_is_a_one_line_error(tmp_path, capsys):
    recipe = _recipe(tmp_path)
    assert main(["rm", "train", str(recipe), "rm.learning_rat=1"]) == 2
    assert "learning_rat" in capsys.readouterr().err


def test_pair_metrics_agree_with_alignrl_score_conventions():
    from alignrl.reward_model.train import pair_metrics

    figures = pair_metrics(torch.tensor([1.0, -1.0, 0.0, 2.0]))
    assert figures["accuracy"] == pytest.approx(2 / 4) and figures["ties"] == 1  # a tie is wrong, as in TRL
    assert figures["accuracy_ties_as_half"] == pytest.approx(2.5 / 4) and 0 <= figures["ece"] <= 1
    assert figures["accuracy_low"] < figures["accuracy"] < figures["accuracy_high"]


def test_a_bad_lora_setting_fails_before_the_folder_is_claimed(tmp_path, capsys):
    recipe = _recipe(tmp_path)
    assert main(["rm", "train", str(recipe), "model.lora.layers_to_transform=[0]"]) == 2  # needs a module list
    assert "model.lora" in capsys.readouterr().err
    assert not (tmp_path / "rm").exists()
