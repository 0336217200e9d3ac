"""The judge: invariant to unrevealed units (§4 test 5), its views, caching, and a tiny BT training run whose folder
`alignrl score` scores like any reward model."""

from __future__ import annotations

import json
import random

import pytest
import torch

from alignrl.debate.domain import column_view
from alignrl.debate.judge import Judge, JudgeInfo, judge_input
from alignrl.debate.judge_train import JudgeGameConfig, SubsetCollator, draw_subset, load_judge_config, train_judge


@pytest.mark.parametrize("view", ["plain", "columns"])
def test_judge_is_invariant_to_edits_of_unrevealed_units(problems, judge_dir, view):
    """§4 test 5: editing a hidden unit never changes J(e, a); editing a revealed one does (the check can fail)."""
    judge = Judge.load(judge_dir, device="cpu")
    judge.view = view
    rng = random.Random(0)
    units, revealed, edited, answers = [], [], [], []
    for p in problems:
        shown = sorted(rng.sample(range(6), 3))
        hidden = [i for i in range(6) if i not in shown]
        changed = list(p.units)
        for i in hidden:
            changed[i] = "9+9=18" if i < 3 else "c7"
        units.append(p.units)
        edited.append(changed)
        revealed.append(shown)
        answers.append(p.gold)
    assert torch.equal(judge.score(units, revealed, answers), judge.score(edited, revealed, answers))
    touched = [[("9+9=18" if i == r[0] and i < 3 else "c7" if i == r[0] else u) for i, u in enumerate(p)]
               for p, r in zip(units, revealed)]
    assert not torch.allclose(judge.score(units, revealed, answers), judge.score(touched, revealed, answers))


def test_views_and_judge_input(problems):
    p = problems[0]
    prompt, text = judge_input(p.units, [1], p.gold, 6, "plain")
    assert prompt.endswith("|") and p.units[1] in prompt and text == p.gold
    prompt, text = judge_input(p.units, [1, 3], p.gold, 6, "columns")
    assert prompt is None and text == column_view(p.units, [1, 3], p.gold)
    groups = text.split(";")
    assert len(groups) == 4 and groups[1] == f"{p.units[1]}{p.units[3]}>{p.gold[-2]}" and groups[3].endswith(">_")
    assert groups[0] == f"______  >{p.gold[-1]}" and groups[2] == f"________>{p.gold[-3]}"
    assert column_view(p.units, [], "1" + p.gold).endswith(">1")  # an extra leading digit sits in the top group
    with pytest.raises(ValueError, match="view"):
        judge_input(p.units, [], "1", 8, "bogus")


def test_scores_are_cached_and_batched_consistently(problems, judge_dir):
    judge = Judge.load(judge_dir, device="cpu", batch_size=3)
    units = [p.units for p in problems[:10]]
    revealed = [[0, 4]] * 10
    first = judge.score(units, revealed, [p.foil for p in problems[:10]])
    assert judge.forwards == 10
    again = judge.score(units + units, revealed + revealed, [p.foil for p in problems[:10]] * 2)
    assert judge.forwards == 10 and judge.calls == 30
    assert torch.equal(again, torch.cat([first, first]))
    single = Judge.load(judge_dir, device="cpu", batch_size=1).score(units[:1], revealed[:1], [problems[0].foil])
    assert torch.allclose(single, first[:1], atol=1e-5)


def test_subset_collator_draws_fresh_subsets(problems, tokenizer):
    game = JudgeGameConfig(length=4, subset="exact", view="columns")
    rng = random.Random(0)
    assert all(len(draw_subset(6, game, rng)) == 4 for _ in range(20))
    assert len(draw_subset(3, game, rng)) == 3  # capped at N
    sizes = {len(draw_subset(6, JudgeGameConfig(subset="up_to"), rng)) for _ in range(300)}
    assert sizes == set(range(7))
    collator = SubsetCollator(problems, tokenizer, game, max_length=128, truncation_side="left", seed=0)
    batch = [{"problem": i} for i in range(8)]
    a, b = collator(batch), collator(batch)
    assert a["input_ids"].shape[0] == 16 and not torch.equal(a["input_ids"], b["input_ids"])  # fresh draws
    masks = (a["input_ids"] == tokenizer.convert_tokens_to_ids("_")).sum(-1)
    assert bool((masks[:8] == masks[8:]).all())  # gold and foil behind the same evidence


def test_tiny_judge_training_writes_a_scoreable_folder(tmp_path):
    from alignrl.reward_model.score_cli import main as score_main

    out = tmp_path / "judge"
    config = load_judge_config("reward_models/debate_judge_quickstart.yaml", [
        "rm.max_steps=3", "rm.per_device_train_batch_size=8", "rm.logging_steps=1", "data.train_problems=64",
        "data.test_problems=16", f"output_dir={out}", "tiny={num_hidden_layers: 1}"])
    figures = train_judge(config)
    assert figures["steps"] == 3 and set(figures["heldout"]) == {"full", "random_L", "none"}
    assert JudgeInfo.read(out).view == "columns" and json.loads((out / "eval.json").read_text())["steps"] == 3
    assert len((out / "metrics.jsonl").read_text().splitlines()) >= 3 and (out / "README.md").is_file()
    judge = Judge.load(out, device="cpu")
    assert judge.view == "columns" and judge.slot_width == 6
    code = score_main(["--model", str(out), "--data", str(out / "heldout_pairs.jsonl"), "--out", str(tmp_path / "s"),
                       "--device", "cpu", "--no-progress", "--group-by", "kind"])
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert code == 0 and summary["n"] == 16 and set(summary["groups"]["kind"]) <= {"dropped", "spurious"}
    # `alignrl score` reads the pairs exactly as the judge does
    rows = [json.loads(line) for line in (out / "heldout_pairs.jsonl").read_text().splitlines()]
    scored = [json.loads(line) for line in (tmp_path / "s" / "pairs.jsonl").read_text().splitlines()]
    ids = [tuple(judge.tokenizer(r["chosen"] + judge.tokenizer.eos_token)["input_ids"]) for r in rows]
    assert torch.allclose(judge.score_ids(ids), torch.tensor([s["score_chosen"] for s in scored]), atol=1e-5)
