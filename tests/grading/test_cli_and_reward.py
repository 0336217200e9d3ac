"""The ``alignrl grade`` command end to end, and the ``math`` reward."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from alignrl.rewards import call_reward, resolve_reward

ROWS = [
    {"id": 0, "output": "so \\boxed{4}", "gold": "4"},
    {"id": 1, "output": "The answer is $\\frac{\\sqrt2}{2}$.", "gold": "\\frac{1}{\\sqrt{2}}"},
    {"id": 2, "output": "I give up", "gold": "3"},
    {"id": 3, "output": "\\boxed{x^2+2x+1}", "gold": "(x+1)^2"},
    {"id": 4, "output": "Final Answer: The final answer is 7. I hope it is correct.", "gold": 8},
]
EXPECTED = [(True, "correct"), (True, "correct"), (False, "no_answer"), (True, "correct"), (False, "wrong")]


def cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "alignrl.grading.cli", "--workers", "1", "--timeout", "5", *args],
                          input=stdin, capture_output=True, text=True, timeout=120)


def jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def test_cli_stdin_to_stdout_in_order():
    rows = ROWS * 3
    done = cli("--keep", "id", stdin=jsonl(rows))
    assert done.returncode == 0, done.stderr
    out = [json.loads(line) for line in done.stdout.splitlines()]
    assert [o["id"] for o in out] == [r["id"] for r in rows]
    assert [(o["correct"], o["reason"]) for o in out] == EXPECTED * 3
    assert out[0]["extracted"] == "4" and out[2]["extracted"] is None
    assert "graded 15 answers" in done.stderr


def test_cli_files_output_and_fields(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text(jsonl([{"completion": r["output"], "answer": r["gold"]} for r in ROWS[:2]]) + "\n")
    b.write_text(jsonl([{"completion": r["output"], "answer": r["gold"]} for r in ROWS[2:]]))
    target = tmp_path / "verdicts.jsonl"
    done = cli(str(a), str(b), "--output", str(target), "--output-field", "completion", "--gold-field", "answer",
               "--no-progress")
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    out = [json.loads(line) for line in target.read_text().splitlines()]
    assert [(o["correct"], o["reason"]) for o in out] == EXPECTED
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jsonl", "b.jsonl", "verdicts.jsonl"]


@pytest.mark.parametrize("bad_line, message", [
    ("{not json", "not valid JSON"),
    ('{"output": "x"}', "no field 'gold'"),
    ('["output", "gold"]', "expected a JSON object"),
    ('{"output": 5, "gold": "5"}', "must be a string"),
])
def test_cli_malformed_line_names_file_and_line(tmp_path, bad_line, message):
    src = tmp_path / "in.jsonl"
    src.write_text(jsonl(ROWS[:2]) + bad_line + "\n" + jsonl(ROWS[2:]))
    target = tmp_path / "out.jsonl"
    done = subprocess.run([sys.executable, "-c", "import sys; from alignrl.grading.cli import main; "
                           "sys.exit(main(sys.argv[1:]))", str(src), "-o", str(target)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert f"{src}:3:" in done.stderr and message in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]  # nothing partial left behind


def test_cli_missing_file(tmp_path):
    done = cli(str(tmp_path / "nope.jsonl"))
    assert done.returncode == 2 and "nope.jsonl: cannot read" in done.stderr


def math(completions, answers, finish=None, **kwargs):
    fn = resolve_reward("math")
    return call_reward("math", fn, ["p"] * len(completions), completions, answer=answers,
                       finish_reasons=finish or ["stop"] * len(completions), **kwargs)


COMPLETIONS = ["\\boxed{2}", "\\boxed{3}", "no answer here at all", "\\boxed{1+1}", "\\boxed{\\frac{4}{2}}"]
GOLDS = ["2"] * 5


def test_math_reward_binary_and_pm1():
    assert math(COMPLETIONS, GOLDS) == [1.0, 0.0, 0.0, 1.0, 1.0]
    assert math(COMPLETIONS, GOLDS, mode="pm1") == [1.0, -1.0, -1.0, 1.0, 1.0]
    assert math(COMPLETIONS, GOLDS, mode="pm1", no_answer_score=-0.5) == [1.0, -1.0, -0.5, 1.0, 1.0]


def test_math_reward_truncated_and_columns():
    finish = ["length", "stop", "stop", "stop", "length"]
    assert math(COMPLETIONS, GOLDS, finish, truncated_score=-1.0) == [-1.0, 0.0, 0.0, 1.0, -1.0]
    assert math(COMPLETIONS, GOLDS, finish) == [1.0, 0.0, 0.0, 1.0, 1.0]  # default: graded like the others
    fn = resolve_reward("math")
    chat = [[{"role": "assistant", "content": c}] for c in COMPLETIONS]
    scores = call_reward("math", fn, ["p"] * 5, chat, solution=GOLDS, answer_field="solution",
                         finish_reasons=["stop"] * 5, completion_ids=[[1]] * 5)
    assert scores == [1.0, 0.0, 0.0, 1.0, 1.0] and len(scores) == len(chat)


def test_math_reward_errors():
    with pytest.raises(Exception, match="no column 'answer'"):
        call_reward("math", resolve_reward("math"), ["p"], ["\\boxed{1}"], gold=["1"], finish_reasons=["stop"])
    with pytest.raises(Exception, match="mode"):
        math(["\\boxed{1}"], ["1"], mode="ternary")
