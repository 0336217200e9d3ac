"""``alignrl bench``: files and fields of a minimal run (never timings), bad input, the report helpers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alignrl.bench.report import FIELDS, entry, table, write_report
from alignrl.cli import main

GRADER_ROWS = [{"output": "so the answer is \\boxed{4}", "gold": "4"},
               {"output": "\\boxed{\\frac{1}{2}}", "gold": "0.5"},
               {"output": "I think it is 7", "gold": "8"},
               {"output": "\\boxed{x^2+1}", "gold": "1+x^2"}]


def _data_root(tmp_path: Path, rows: list) -> Path:
    folder = tmp_path / "data" / "grader-dev"
    folder.mkdir(parents=True)
    (folder / "math_test_labelled.jsonl").write_text("".join(
        (r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return tmp_path / "data"


def _check_entries(out: Path) -> list[dict]:
    entries = json.loads((out / "bench.json").read_text())
    assert isinstance(entries, list) and entries
    for e in entries:
        assert set(FIELDS) <= set(e), e
        assert e["device"] and isinstance(e["versions"], dict)
        if e["note"].startswith("skipped"):
            assert e["ours"] is None and e["ratio"] is None
            continue
        assert e["ours"] > 0 and e["peer"] > 0 and e["unit"] and e["better"] in ("higher", "lower")
        assert e["ratio"] == pytest.approx(e["ours"] / e["peer"])
        for side in ("ours", "peer"):
            low, high = e["spread"][side]
            assert low <= e[side] <= high
    md = (out / "bench.md").read_text()
    for e in entries:
        assert f"| {e['name']} |" in md
    return entries


def test_grader_and_skipped_suites_write_every_file(tmp_path, capsys):
    out = tmp_path / "bench"
    status = main(["bench", "--out", str(out), "--suite", "grader,rollout,sync", "--repeats", "1",
                   "--data-root", str(_data_root(tmp_path, GRADER_ROWS))])
    assert status == 0
    entries = _check_entries(out)
    names = {e["name"] for e in entries}
    assert {f"grader/workers={w}/{k}" for w in (1, 2) for k in ("cold", "warm")} <= names
    grader = [e for e in entries if e["name"].startswith("grader/")]
    assert all(e["settings"]["answers"] == len(GRADER_ROWS) and e["settings"]["repeats"] == 1 for e in grader)
    assert all("math-verify" in e["versions"] for e in grader)
    from alignrl.bench.rollout_suite import vllm_available

    reason = vllm_available()
    if reason:  # this machine: both vLLM suites say why they did not run
        skipped = {e["name"]: e["note"] for e in entries if e["note"].startswith("skipped")}
        assert skipped == {"rollout/tokens_per_s": f"skipped: {reason}", "sync/push_s": f"skipped: {reason}"}
    assert (out / "bench_grader.png").stat().st_size > 0
    printed = capsys.readouterr().out
    assert "| grader/workers=2/cold |" in printed


@pytest.mark.slow
def test_minimal_train_suite_against_trl(tmp_path):
    out = tmp_path / "bench"
    status = main(["bench", "--out", str(out), "--suite", "train", "--repeats", "1", "--prompts-per-step", "2",
                   "--n", "2", "--max-new-tokens", "3", "--warmup", "1", "--steps", "1", "--scaling-lengths", "2",
                   "--scaling-n", "2", "--scaling-steps", "1"])
    assert status == 0
    entries = {e["name"]: e for e in _check_entries(out)}
    for key in ("steps_per_s", "tokens_per_s", "generate_s", "score_s", "update_s", "peak_rss_mb"):
        assert f"train/{key}" in entries
    assert {"train/scaling/max_new_tokens=2/step_s", "train/scaling/n=2/step_s"} <= set(entries)
    first = entries["train/steps_per_s"]
    assert first["settings"]["n"] == 2 and first["settings"]["max_new_tokens"] == 3
    assert {"torch", "transformers", "trl", "alignrl"} <= set(first["versions"])
    assert entries["train/peak_rss_mb"]["ours"] > 50  # a Python process with torch: tens of MB at least
    for png in ("bench_train.png", "train_scaling.png"):
        assert (out / png).stat().st_size > 0
    assert "Scaling: seconds per step" in (out / "bench.md").read_text()
    assert not list((out / "train").glob("scratch-*"))  # the children's run folders are removed


def test_bad_grader_row_names_file_and_line(tmp_path, capsys):
    root = _data_root(tmp_path, [GRADER_ROWS[0], '{"output": "x"}'])
    status = main(["bench", "--out", str(tmp_path / "b"), "--suite", "grader", "--data-root", str(root)])
    assert status == 2
    err = capsys.readouterr().err
    assert "alignrl bench: error:" in err and "math_test_labelled.jsonl: line 2" in err and "'gold'" in err
    assert not (tmp_path / "b" / "bench.json").exists()


def test_missing_grader_data_and_bad_options(tmp_path, capsys):
    assert main(["bench", "--out", str(tmp_path / "b"), "--suite", "grader", "--data-root",
                 str(tmp_path / "nowhere")]) == 2
    assert "grader data not found" in capsys.readouterr().err
    assert main(["bench", "--out", str(tmp_path / "b"), "--suite", "grader", "--repeats", "0"]) == 2
    assert "--repeats must be at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "--out", str(tmp_path / "b"), "--suite", "train,warp"])
    assert "unknown suite(s) ['warp']" in capsys.readouterr().err


def test_failed_run_keeps_earlier_report(tmp_path):
    out = tmp_path / "bench"
    out.mkdir()
    (out / "bench.json").write_text("[]\n")
    assert main(["bench", "--out", str(out), "--suite", "grader", "--data-root", str(tmp_path / "none")]) == 2
    assert (out / "bench.json").read_text() == "[]\n"


def test_entry_ratio_spread_and_table(tmp_path):
    e = entry("train/steps_per_s", [2.0, 4.0, 3.0], [1.0, 2.0], "steps/s", "higher", {"n": 8}, {"torch": "x"}, "cpu")
    assert e["ours"] == 3.0 and e["peer"] == 1.5 and e["ratio"] == 2.0
    assert e["spread"] == {"ours": [2.0, 4.0], "peer": [1.0, 2.0]}
    none = entry("grader/x", [5.0], None, "answers/s", "higher", {}, {}, "cpu")
    assert none["peer"] is None and none["ratio"] is None
    text = table([e, none])
    assert "| train/steps_per_s | 3 | 2-4 | 1.5 | 1-2 | 2.00 | steps/s (higher) |" in text
    with pytest.raises(ValueError, match="lacks"):
        write_report(tmp_path, [{"name": "x"}], "header")
