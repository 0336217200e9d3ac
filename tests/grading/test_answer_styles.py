"""The grader on ``answer_styles.jsonl``: 322 outputs written for this test (not model generations), labelled by hand.

Rows: ``style`` is one of the four classes of grader misses (``position``: several answer markers, the last one
counts; ``prose_final_answer``: "final answer" in a sentence before the real answer; ``sentence_answer``: a
sentence under an answer marker; ``plain_text``: ``18*pi``, ``sqrt(5)/3``, ``4 pi``), ``ending`` (how a model family
ends its answer: ``qwen`` ``\\boxed``, ``llama`` "The final answer is: $\\boxed{..}$", ``deepseek_r1`` ``</think>``
then "**Final Answer**", ``gpt`` "**Answer:** ..", ``minerva`` "Final Answer: The final answer is $x$. I hope it is
correct.", ``prm800k`` "# Answer") or ``item7`` (an ``=`` inside a subscript). ``label`` says whether the output's
final answer equals ``gold``. Most rows come from a template per style filled with 45 problems (``template``
names it: a right answer, a wrong one, or a correction in either direction); ``hand-written`` rows vary the wording.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

from alignrl.grading import GraderConfig

ROWS = [json.loads(line) for line in (Path(__file__).with_name("answer_styles.jsonl")).read_text().splitlines()]


def test_the_set_covers_the_four_classes_and_three_families():
    assert len(ROWS) >= 200 and len({r["id"] for r in ROWS}) == len(ROWS)
    styles = Counter(r["style"] for r in ROWS)
    assert all(styles[s] >= 30 for s in ("position", "prose_final_answer", "sentence_answer", "plain_text"))
    families = Counter(r["family"] for r in ROWS if r["style"] == "ending")
    assert len([f for f, n in families.items() if n >= 10]) >= 3, families
    assert 0.2 < sum(not r["label"] for r in ROWS) / len(ROWS) < 0.5  # wrong answers are there too


def test_answer_styles_agreement(pool):
    verdicts = pool.grade_many([(r["output"], r["gold"]) for r in ROWS], replace(GraderConfig(), timeout=60.0))
    confusion = Counter((r["label"], v.correct) for r, v in zip(ROWS, verdicts))
    misses = [(r["id"], r["style"], r["gold"], v.extracted) for r, v in zip(ROWS, verdicts) if r["label"] != v.correct]
    by_style = Counter(r["style"] for r, v in zip(ROWS, verdicts) if r["label"] != v.correct)
    agreement = 1 - len(misses) / len(ROWS)
    print(f"\nanswer styles: {len(ROWS)} rows; agreement {agreement:.4f}\nconfusion (label, verdict): "
          f"{dict(sorted(confusion.items()))}\nmisses by style: {dict(by_style)}\nmisses: {misses}")
    assert not any(v.reason == "timeout" for v in verdicts)
    assert agreement >= 0.995, misses
