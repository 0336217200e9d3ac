"""``alignrl score`` end to end: what it reports agrees with an independent computation (the model called directly,
one example at a time without padding; accuracy, margin and ECE computed here), every file is written, and bad
input or a used output folder is refused without losing anything."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from alignrl.quickstart.tiny_model import build_model, build_tokenizer
from alignrl.reward_model import score_metrics as sm
from alignrl.reward_model.score_cli import main as score_main

MAX_LENGTH = 20


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def hand_ece(margins: list[float], bins: int = 10) -> float:
    """ECE written out plainly: both orders of each pair are events; equal-width bins of p over [0, 1]."""
    p = 1 / (1 + np.exp(-np.asarray(margins, dtype=float)))
    predicted = np.concatenate([p, 1 - p])
    labels = np.concatenate([np.ones_like(p), np.zeros_like(p)])
    which = np.minimum((predicted * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            total += members.mean() * abs(labels[members].mean() - predicted[members].mean())
    return float(total)


def test_ece_accuracy_and_interval_on_a_hand_made_example():
    # p = sigmoid(margin): 0.75, 0.75, 0.25, 0.95, 0.5. Events (p, label) in both orders:
    #   bin 7: (.75,1) (.75,1) (.75,0) -> mean p .75, observed 2/3 -> |gap| 1/12, weight 3/10
    #   bin 2: (.25,0) (.25,0) (.25,1) -> mean p .25, observed 1/3 -> |gap| 1/12, weight 3/10
    #   bin 9: (.95,1) -> gap .05, weight 1/10; bin 0: (.05,0) -> gap .05, weight 1/10
    #   bin 5: (.5,1) (.5,0) -> gap 0
    # ECE = 2 * 3/10 * 1/12 + 2 * 1/10 * .05 = 0.05 + 0.01 = 0.06
    margins = [math.log(3), math.log(3), -math.log(3), math.log(19), 0.0]
    assert hand_ece(margins) == pytest.approx(0.06, abs=1e-12)
    assert sm.expected_calibration_error(margins) == pytest.approx(0.06, abs=1e-12)
    block = sm.accuracy_block(margins)
    assert block["accuracy"] == pytest.approx(0.6) and block["ties"] == 1  # the tie counts as wrong
    assert block["accuracy_ties_as_half"] == pytest.approx(0.7)
    assert block["mean_margin"] == pytest.approx(math.log(57) / 5)
    assert block["accuracy_ci95"] == pytest.approx([0.2307, 0.8824], abs=1e-4)  # Wilson, 3 of 5
    bins = sm.calibration_bins(margins)
    assert [b["count"] for b in bins] == [1, 0, 3, 0, 0, 2, 0, 3, 0, 1]
    assert bins[7]["observed"] == pytest.approx(2 / 3) and bins[7]["mean_predicted"] == pytest.approx(0.75)


def chat(role: str, content: str) -> list[dict[str, str]]:
    return [{"role": role, "content": content}]


def pair_rows() -> list[dict]:
    """Pairs in every shape the data contract takes: text with and without a prompt, conversations, a tie (the
    same text twice), an empty chosen response, inputs longer than MAX_LENGTH, and a grouping column."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(30):
        a, b = (int(x) for x in rng.integers(100, 999, size=2))
        right, wrong = f"\\boxed{{{a + b}}}", f"\\boxed{{{a + b + int(rng.integers(1, 99))}}}"
        if i % 5 == 1:  # longer than MAX_LENGTH: truncated from the left
            right, wrong = f"so the sum of {a} and {b} is {right}", f"so the sum of {a} and {b} is {wrong}"
        row = {"prompt": f"{a}+{b}=", "chosen": right, "rejected": wrong, "source": "abc"[i % 3], "row_id": i}
        if i % 4 == 3:
            row = {**row, "prompt": chat("user", row["prompt"]), "chosen": chat("assistant", right)}
        if i == 7:
            del row["prompt"]
        rows.append(row)
    rows[10]["rejected"] = rows[10]["chosen"]  # a tie
    rows[11]["chosen"] = ""  # empty
    return rows


def independent_ids(tokenizer, row: dict, part: str) -> list[int]:
    """Text: prompt + response + EOS. A row with any conversation: every part as messages, chat template."""
    prompt, response = row.get("prompt"), row[part]
    if any(isinstance(value, list) for value in row.values()):
        messages = (prompt if isinstance(prompt, list) else chat("user", prompt) if prompt else []) + (
            response if isinstance(response, list) else chat("assistant", response))
        ids = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    else:
        ids = tokenizer((prompt or "") + response + tokenizer.eos_token)["input_ids"]
    return list(ids)


def direct_scores(model_dir: Path, rows: list[dict], parts: tuple[str, ...]) -> dict[str, list[float]]:
    """Scores from AutoModelForSequenceClassification called on one unpadded example at a time."""
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    out: dict[str, list[float]] = {part: [] for part in parts}
    out.update({f"{part}_truncated": [] for part in parts})
    with torch.no_grad():
        for row in rows:
            for part in parts:
                ids = independent_ids(tokenizer, row, part)
                out[f"{part}_truncated"].append(len(ids) > MAX_LENGTH)
                logits = model(input_ids=torch.tensor([ids[-MAX_LENGTH:]])).logits
                out[part].append(logits[0, 0].item())
    return out


def test_pairs_report_agrees_with_an_independent_computation(tmp_path, reward_model_dir):
    rows = pair_rows()
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    out = tmp_path / "out"
    code = score_main(["--model", str(reward_model_dir), "--data", str(data), "--out", str(out), "--batch-size", "3",
                       "--max-length", str(MAX_LENGTH), "--group-by", "source", "--device", "cpu", "--no-progress"])
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["margin_hist.png", "pairs.jsonl", "reliability.png",
                                                     "summary.json", "summary.md"]
    for png in ("margin_hist.png", "reliability.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (out / png).stat().st_size > 5000

    truth = direct_scores(reward_model_dir, rows, ("chosen", "rejected"))
    margins = [c - r for c, r in zip(truth["chosen"], truth["rejected"])]
    records = read_jsonl(out / "pairs.jsonl")
    assert [r["index"] for r in records] == list(range(30))
    assert [r["row_id"] for r in records] == list(range(30))  # other columns pass through
    assert np.allclose([r["score_chosen"] for r in records], truth["chosen"], atol=1e-5, rtol=0)
    assert np.allclose([r["score_rejected"] for r in records], truth["rejected"], atol=1e-5, rtol=0)
    assert np.allclose([r["margin"] for r in records], margins, atol=1e-5, rtol=0)
    assert [r["correct"] for r in records] == [m > 0 for m in margins]
    assert [r["chosen_truncated"] for r in records] == truth["chosen_truncated"]
    assert np.std(margins) > 0.5 and 0 < sum(m > 0 for m in margins) < 29  # a non-trivial check

    summary = json.loads((out / "summary.json").read_text())
    assert summary["mode"] == "pairs" and summary["n"] == 30
    assert summary["accuracy"] == pytest.approx(sum(m > 0 for m in margins) / 30)
    assert summary["mean_margin"] == pytest.approx(float(np.mean(margins)), abs=1e-5)
    assert summary["ece"] == pytest.approx(hand_ece(margins), abs=1e-5)
    counts = summary["counts"]
    assert counts["ties"] == 1 and records[10]["tie"] and records[10]["margin"] == 0.0
    assert counts["empty_chosen"] == 1 and records[11]["chosen_empty"]
    assert counts["truncated_chosen"] == sum(truth["chosen_truncated"]) >= 5
    assert counts["truncated_rejected"] == sum(truth["rejected_truncated"])
    for source in "abc":
        members = [m for m, row in zip(margins, rows) if row["source"] == source]
        group = summary["groups"]["source"][source]
        assert group["n"] == len(members) and group["accuracy"] == pytest.approx(np.mean([m > 0 for m in members]))
    assert sum(g["n"] for g in summary["groups"]["length_bucket"].values()) == 30
    assert summary["settings"]["max_length"] == MAX_LENGTH and summary["settings"]["batch_size"] == 3
    text = (out / "summary.md").read_text()
    assert f"{100 * summary['accuracy']:.1f}%" in text and "## Accuracy by source" in text


def test_response_scores_agree_with_direct_calls(tmp_path, reward_model_dir):
    rows = [{"prompt": r.get("prompt"), "response": r["chosen"], "id": f"r{i}"} for i, r in enumerate(pair_rows())]
    data = write_jsonl(tmp_path / "responses.jsonl", rows)
    out = tmp_path / "out"
    assert score_main(["--model", str(reward_model_dir), "--data", str(data), "--out", str(out), "--max-length",
                       str(MAX_LENGTH), "--batch-size", "4", "--no-progress", "--length-buckets", "10", "20"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["score_hist.png", "scores.jsonl", "summary.json", "summary.md"]
    truth = direct_scores(reward_model_dir, rows, ("response",))["response"]
    records = read_jsonl(out / "scores.jsonl")
    assert np.allclose([r["score"] for r in records], truth, atol=1e-5, rtol=0)
    assert [r["id"] for r in records] == [f"r{i}" for i in range(30)]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mean"] == pytest.approx(float(np.mean(truth)), abs=1e-5)
    assert summary["std"] == pytest.approx(float(np.std(truth, ddof=1)), abs=1e-5)
    assert summary["quantiles"]["median"] == pytest.approx(float(np.median(truth)), abs=1e-5)
    assert summary["counts"]["empty"] == 1
    assert set(summary["groups"]["length_bucket"]) <= {"<10", "10-19", ">=20"}


def run_cli(capsys, *args: str) -> tuple[int, str]:
    code = score_main([*args, "--no-progress"])
    return code, capsys.readouterr().err


def test_bad_rows_stop_the_run_or_are_skipped_and_reported(tmp_path, reward_model_dir, capsys):
    rows = pair_rows()[:6]
    rows[4] = {"prompt": "1+1=", "chosen": "2"}
    data = write_jsonl(tmp_path / "bad.jsonl", rows)
    code, err = run_cli(capsys, "--model", str(reward_model_dir), "--data", str(data), "--out", str(tmp_path / "a"))
    assert code == 2 and f"alignrl score: error: {data}, row 4: field 'rejected' is missing" in err
    assert not (tmp_path / "a").exists()
    code, err = run_cli(capsys, "--model", str(reward_model_dir), "--data", str(data), "--out", str(tmp_path / "b"),
                        "--skip-bad-rows")
    assert code == 0
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["n"] == 5 and summary["counts"]["bad_rows_skipped"] == 1
    assert read_jsonl(tmp_path / "b" / "bad_rows.jsonl")[0]["index"] == 4
    assert "row 4: field 'rejected' is missing" in (tmp_path / "b" / "summary.md").read_text()


def test_an_output_folder_is_never_overwritten_without_the_flag(tmp_path, reward_model_dir, capsys, monkeypatch):
    data = write_jsonl(tmp_path / "pairs.jsonl", pair_rows()[:8])
    out = tmp_path / "out"
    args = ("--model", str(reward_model_dir), "--data", str(data), "--out", str(out))
    assert run_cli(capsys, *args)[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    code, err = run_cli(capsys, *args)
    assert code == 2 and "not empty" in err and "--overwrite" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before

    from alignrl.reward_model import score_report

    def broken(*_args, **_kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(score_report, "plot_reliability", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        score_main([*args, "--overwrite", "--no-progress", "--max-length", "8"])
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing replaced, no staging left
    monkeypatch.undo()
    assert run_cli(capsys, *args, "--overwrite", "--max-length", "8")[0] == 0
    assert json.loads((out / "summary.json").read_text())["settings"]["max_length"] == 8


def test_clear_errors_for_columns_models_and_settings(tmp_path, reward_model_dir, capsys):
    data = write_jsonl(tmp_path / "pairs.jsonl", pair_rows()[:4])
    base = ("--model", str(reward_model_dir), "--data", str(data))
    code, err = run_cli(capsys, *base, "--out", str(tmp_path / "a"), "--group-by", "source", "language")
    assert code == 2 and "--group-by language: no such column" in err and "source" in err
    code, err = run_cli(capsys, *base, "--out", str(tmp_path / "b"), "--max-length", "500")
    assert code == 2 and "exceeds the model's context of 128" in err
    neither = write_jsonl(tmp_path / "neither.jsonl", [{"text": "a"}])
    code, err = run_cli(capsys, "--model", str(reward_model_dir), "--data", str(neither), "--out", str(tmp_path / "c"))
    assert code == 2 and "no 'chosen'/'rejected' columns" in err and "columns: text" in err
    causal = tmp_path / "causal"
    tokenizer = build_tokenizer()
    build_model(tokenizer, preset="test").save_pretrained(causal)
    tokenizer.save_pretrained(causal)
    code, err = run_cli(capsys, "--model", str(causal), "--data", str(data), "--out", str(tmp_path / "d"))
    assert code == 2 and "is not a sequence-classification model" in err
    code, err = run_cli(capsys, *base, "--out", str(tmp_path / "e"), "--length-buckets", "0", "5")
    assert code == 2 and "--length-buckets must be positive" in err
    code, err = run_cli(capsys, *base, "--out", str(tmp_path / "f"), "--group-by", "chosen")
    assert code == 2 and "cannot group by the columns being scored" in err
    assert not any((tmp_path / name).exists() for name in "abcdef")


def test_a_data_column_named_like_an_output_field_is_kept_and_groupable(tmp_path, reward_model_dir, capsys):
    rows = [{"response": text, "score": grade} for text, grade in (("a", "A"), ("bb", "B"), ("ccc", "A"))]
    data = write_jsonl(tmp_path / "graded.jsonl", rows)
    out = tmp_path / "out"
    code, _ = run_cli(capsys, "--model", str(reward_model_dir), "--data", str(data), "--out", str(out),
                      "--group-by", "score")
    assert code == 0
    assert [r["data_score"] for r in read_jsonl(out / "scores.jsonl")] == ["A", "B", "A"]
    groups = json.loads((out / "summary.json").read_text())["groups"]["score"]
    assert {label: g["n"] for label, g in groups.items()} == {"A": 2, "B": 1}


def test_the_alignrl_command_runs_score(tmp_path, reward_model_dir):
    from alignrl.cli import main

    data = write_jsonl(tmp_path / "pairs.jsonl", pair_rows()[:4])
    assert main(["score", "--model", str(reward_model_dir), "--data", str(data), "--out", str(tmp_path / "out"),
                 "--no-progress"]) == 0
    assert (tmp_path / "out" / "summary.json").is_file()
