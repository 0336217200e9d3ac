"""The ``alignrl grade`` command end to end, and the ``math`` reward."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from alignrl.grading.config import DEFAULT_EXTRACTORS, TRAINING_EXTRACTORS
from alignrl.rewards import MathReward, RewardError, RewardInputs, build_reward, call_reward, math_reward, \
    resolve_reward, run_reward

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
    """The TRL-style ``math_reward`` function through the registry's output checks."""
    return call_reward("math", math_reward, ["p"] * len(completions), completions, answer=answers,
                       finish_reasons=finish or ["stop"] * len(completions), **kwargs)


def score(completions, answers, finish=None, **kwargs):
    """The registered ``math`` Reward (MathReward) built from recipe kwargs, through the output checks."""
    n = len(completions)
    inputs = RewardInputs(["p"] * n, completions, {"answer": answers}, finish or ["stop"] * n, [[1]] * n)
    return run_reward("math", build_reward("math", kwargs), inputs)


COMPLETIONS = ["\\boxed{2}", "\\boxed{3}", "no answer here at all", "\\boxed{1+1}", "\\boxed{\\frac{4}{2}}"]
GOLDS = ["2"] * 5


def test_math_is_registered_as_a_reward_class():
    assert resolve_reward("math") is MathReward
    assert isinstance(build_reward("math", {"mode": "pm1"}), MathReward)


def test_math_reward_binary_and_pm1():
    assert math(COMPLETIONS, GOLDS) == [1.0, 0.0, 0.0, 1.0, 1.0]
    assert math(COMPLETIONS, GOLDS, mode="pm1") == [1.0, -1.0, -1.0, 1.0, 1.0]
    assert math(COMPLETIONS, GOLDS, mode="pm1", no_answer_score=-0.5) == [1.0, -1.0, -0.5, 1.0, 1.0]
    assert score(COMPLETIONS, GOLDS).scores == [1.0, 0.0, 0.0, 1.0, 1.0]
    assert score(COMPLETIONS, GOLDS, mode="pm1", no_answer_score=-0.5).scores == [1.0, -1.0, -0.5, 1.0, 1.0]


def test_math_reward_info():
    out = score(COMPLETIONS, GOLDS, finish=["length", "stop", "stop", "stop", "stop"])
    assert out.info == {"correct": [1.0, 0.0, 0.0, 1.0, 1.0], "no_answer": [0.0, 0.0, 1.0, 0.0, 0.0],
                        "truncated": [1.0, 0.0, 0.0, 0.0, 0.0]}


def test_math_reward_truncated_and_columns():
    finish = ["length", "stop", "stop", "stop", "length"]
    assert math(COMPLETIONS, GOLDS, finish, truncated_score=-1.0) == [-1.0, 0.0, 0.0, 1.0, -1.0]
    assert math(COMPLETIONS, GOLDS, finish) == [1.0, 0.0, 0.0, 1.0, 1.0]  # default: graded like the others
    assert score(COMPLETIONS, GOLDS, finish, truncated_score=-1.0).scores == [-1.0, 0.0, 0.0, 1.0, -1.0]
    chat = [[{"role": "assistant", "content": c}] for c in COMPLETIONS]
    scores = call_reward("math", math_reward, ["p"] * 5, chat, solution=GOLDS, answer_field="solution",
                         finish_reasons=["stop"] * 5, completion_ids=[[1]] * 5)
    assert scores == [1.0, 0.0, 0.0, 1.0, 1.0] and len(scores) == len(chat)


PROSE = ["We add them, so the answer is 5.", "Adding gives 5, and that is all.", "Final Answer: 5",
         "# Answer\n\n5", "\\boxed{5}", "The answer is 6."]


def test_training_default_is_strict_and_prose_needs_the_lenient_chain():
    golds = ["5"] * len(PROSE)
    assert TRAINING_EXTRACTORS == ("boxed", "final_answer", "answer_heading")
    assert set(TRAINING_EXTRACTORS) < set(DEFAULT_EXTRACTORS)
    assert math(PROSE, golds) == [0.0, 0.0, 1.0, 1.0, 1.0, 0.0]
    strict = score(PROSE, golds)
    assert strict.scores == [0.0, 0.0, 1.0, 1.0, 1.0, 0.0]
    assert strict.info["no_answer"] == [1.0, 1.0, 0.0, 0.0, 0.0, 1.0]  # prose is no answer, not a wrong one
    lenient = list(DEFAULT_EXTRACTORS)
    assert math(PROSE, golds, extractors=lenient) == [1.0, 1.0, 1.0, 1.0, 1.0, 0.0]
    assert score(PROSE, golds, extractors=lenient).scores == [1.0, 1.0, 1.0, 1.0, 1.0, 0.0]


def test_math_reward_describe_records_the_grader():
    described = build_reward("math", {"mode": "pm1", "timeout": 3}).describe()
    assert described["extractors"] == list(TRAINING_EXTRACTORS) and described["mode"] == "pm1"
    assert described["grader"]["timeout"] == 3.0 and described["grader"]["separators"]
    assert described["class"].endswith("MathReward")
    assert json.loads(json.dumps(described)) == described
    wide = build_reward("math", {"extractors": list(DEFAULT_EXTRACTORS), "separators": ["</s>"]}).describe()
    assert wide["extractors"] == list(DEFAULT_EXTRACTORS) and wide["grader"]["separators"] == ["</s>"]


def test_math_reward_errors():
    with pytest.raises(Exception, match="no column 'answer'"):
        call_reward("math", math_reward, ["p"], ["\\boxed{1}"], gold=["1"], finish_reasons=["stop"])
    with pytest.raises(RewardError, match="reward 'math' raised KeyError.*no column 'answer'"):
        run_reward("math", MathReward(), RewardInputs(["p"], ["\\boxed{1}"], {"gold": ["1"]}, ["stop"], [[1]]))
    with pytest.raises(Exception, match="mode"):
        math(["\\boxed{1}"], ["1"], mode="ternary")
    with pytest.raises(RewardError, match="reward 'math'.*mode must be one of"):
        build_reward("math", {"mode": "ternary"})
    with pytest.raises(RewardError, match="reward 'math': unknown keyword argument 'extractor' for MathReward"):
        build_reward("math", {"extractor": ["boxed"]})
    with pytest.raises(RewardError, match="unknown extractor.*nope"):
        build_reward("math", {"extractors": ["boxed", "nope"]})
    with pytest.raises(RewardError, match="timeout must be > 0"):
        build_reward("math", {"timeout": 0})


def test_cli_explain_says_which_extractor_fired_and_why():
    rows = [{"output": "Final Answer: The area is 46 square meters.\n\nOops, 6*8 = 48.\nThe answer is: 48.",
             "gold": "48"},
            {"output": "no answer in here", "gold": "1"}]
    done = cli("--explain", "--no-progress", stdin=jsonl(rows))
    assert done.returncode == 0, done.stderr
    first, second = [json.loads(line) for line in done.stdout.splitlines()]
    assert first["correct"] and first["extracted"] == "48"
    explain = first["explain"]
    assert explain["extractor"] == "answer_is" and rows[0]["output"][explain["offset"]:].startswith("48")
    assert [c["extractor"] for c in explain["candidates"]] == ["final_answer", "answer_is"]
    assert explain["candidates"][0]["value"] == "46" and explain["why"] and explain["compared_as"] == "48"
    assert second["explain"]["extractor"] is None and "no fallback" in second["explain"]["why"]
    assert "explain" not in json.loads(cli("--no-progress", stdin=jsonl(rows[:1])).stdout)
    by_order = json.loads(cli("--ranking", "order", "--no-progress", stdin=jsonl(rows[:1])).stdout)
    assert by_order["extracted"] == "46" and not by_order["correct"]  # final_answer comes first in the order


def test_cli_lone_surrogate_is_escaped_and_named(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text('{"id": "a\\udc00", "output": "\\\\boxed{5\\ud800}", "gold": "5"}\n' + jsonl(ROWS[:1]))
    for target in (None, tmp_path / "out.jsonl"):
        done = cli(str(src), "--keep", "id", "--no-progress", *(["-o", str(target)] if target else []))
        assert done.returncode == 0, done.stderr
        assert f"{src}:1" in done.stderr and "surrogate" in done.stderr
        text = target.read_text(encoding="utf-8") if target else done.stdout
        out = [json.loads(line) for line in text.splitlines()]
        assert out[0]["id"] == "a\udc00" and out[0]["extracted"] == "5\ud800" and out[1]["correct"]


def test_cli_refuses_an_unwritable_output_before_grading(tmp_path):
    done = cli("-o", str(tmp_path / "missing" / "out.jsonl"), stdin=jsonl(ROWS))
    assert done.returncode == 2 and "alignrl grade: error: --output" in done.stderr and "does not exist" in done.stderr
    assert "graded" not in done.stderr
    done = cli("-o", str(tmp_path), stdin=jsonl(ROWS))
    assert done.returncode == 2 and "is a folder" in done.stderr
    done = cli("--extractors", "boxed,nope", stdin=jsonl(ROWS))
    assert done.returncode == 2 and "alignrl grade: error: unknown extractor(s) nope" in done.stderr


def test_cli_ctrl_c_exits_quietly_with_130(tmp_path):
    slow = [{"output": f"\\boxed{{9^{{9^{{9^{{9}}}}}}+{i}y}}", "gold": "1"} for i in range(40)]
    target = tmp_path / "out.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "alignrl.grading.cli", "--workers", "1", "--timeout", "30",
                             "-o", str(target)], stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # a background
    # shell (nohup, `&` in a script) starts its children with Ctrl-C ignored; a user's terminal does not
    proc.stdin.write(jsonl(slow))
    proc.stdin.close()
    seen = ""
    while "grade:" not in seen:  # the progress bar appears once the workers are being used
        char = proc.stderr.read(1)
        assert char, f"exited early: {seen}"
        seen += char
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    rest = proc.stderr.read()
    assert proc.wait(timeout=60) == 130
    assert "Traceback" not in seen + rest and "interrupted" in rest
    assert list(tmp_path.iterdir()) == []  # nothing partial written


def test_training_reward_ranks_its_markers_by_position():
    outputs = ["\\boxed{3}\n\nNo wait, I misread.\n\nFinal Answer: 5", "Final Answer: 3\n\nBoxed: \\boxed{5}",
               "\\boxed{5}\n\nSo the answer is 3.", "# Answer\n\nThe answer has 5 letters."]
    assert math(outputs, ["5"] * 4) == [1.0, 1.0, 1.0, 1.0]
    assert score(outputs, ["3"] * 4).scores == [0.0, 0.0, 0.0, 0.0]
