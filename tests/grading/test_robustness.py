"""Adversarial outputs, hard timeouts, worker crashes and calls from other threads: nothing hangs or breaks."""

from __future__ import annotations

import threading
import time

import pytest

from alignrl.grading import GraderConfig, GraderPool, grade, prepare

SLACK = 10.0  # queueing behind a busy or restarting worker (start-up ~1-3 s on a loaded 2-core machine)

ADVERSARIAL = {
    "100k_chars": "x" * 50_000 + "\\boxed{" + "1+" * 25_000 + "1}",
    "100k_plain": "lorem ipsum " * 8_400,
    "10k_nested_braces": "\\boxed{" + "{" * 10_000 + "1" + "}" * 10_000 + "}",
    "10k_unclosed_braces": "\\boxed{" + "{" * 10_000,
    "power_tower": "So the answer is $\\boxed{9^{9^{9^{9}}}}$.",
    "division_by_zero": "\\boxed{\\frac{1}{0}}",
    "malformed_latex": "\\boxed{\\frac{1}{\\sqrt{}}^^_{}\\left( \\right] \\begin{pmatrix} 1 & \\\\ }",
    "unicode_and_control": "答案是 \\boxed{\u200b５\u0000} \x07\x1b[31m ∞ 𝟙 " + "".join(map(chr, range(32))),
    "empty": "",
    "many_open_boxes": "\\boxed{" * 20_000,
    "many_dollars": "$" * 50_000 + "The answer is $",
    "many_parens": "\\(" * 30_000 + " so the answer is \\(",
    "huge_factorial": "\\boxed{1000000!}",
}


REGEX_TRAPS = {  # inputs that make careless regexes backtrack for minutes
    "heading_line_of_spaces": "# Answer\n" + "a" + " " * 100_000 + "b",
    "final_answer_spaces": "Final Answer: a" + " " * 100_000 + "b",
    "unit_words": "\\boxed{1 " + "a" * 990 + "!}",
    "units_text": "\\boxed{" + "1\\text{a}" * 100 + "}",
    "unclosed_math": "\\(" * 1000 + "$a" * 1000 + "**" * 1000,
    "whitespace": " \n" * 50_000,
    "hashes": "#" * 100_000,
    "bare_boxes": "\\boxed " * 15_000 + "\\fbox" * 10_000,
    "equals": "\\boxed{" + "=" * 900 + "}",
    "tuple_run": "(1" + ",1" * 1000,
    "digits": "1" * 100_000,
    "answer_label_stars": "Answer" + "*" * 100_000 + "x",
    "answer_lines": "\n".join(["answer"] * 20_000),
    "hypothetical_answers": "if the answer is " * 10_000,
    "label_lead_blanks": "\n" + " \t" * 50_000 + "so the final answer",
    "plain_math": "sqrt(" * 5_000 + "pi*" * 5_000,
}


@pytest.mark.parametrize("name", list(REGEX_TRAPS) + list(ADVERSARIAL))
def test_in_process_part_is_fast(name):
    """No catastrophic backtracking: CPU time (not wall time, which another job on the machine can stretch) stays
    far below what a quadratic pattern takes on these 10^4-10^5-character inputs (seconds to minutes)."""
    text = {**REGEX_TRAPS, **ADVERSARIAL}[name]
    start = time.process_time()
    prepare(text, "2")
    prepare(text, text[:500])
    assert time.process_time() - start < 2.0


@pytest.mark.parametrize("name", list(ADVERSARIAL))
def test_adversarial_output_returns_in_time(pool, timeout, name):
    start = time.monotonic()
    verdict = pool.grade(ADVERSARIAL[name], "2")
    elapsed = time.monotonic() - start
    assert verdict.reason in ("wrong", "no_answer", "timeout", "unparsable"), verdict
    assert not verdict.correct
    assert elapsed < timeout + SLACK, f"{name}: {elapsed:.1f} s"


def test_adversarial_batch_keeps_normal_items_right(pool, timeout):
    normal = [("\\boxed{2}", "2", True), ("\\boxed{x^2+1}", "1+x^2", True), ("\\boxed{3}", "2", False),
              ("The answer is $\\frac{\\sqrt{2}}{2}$.", "\\frac{1}{\\sqrt2}", True)]
    pairs = [(o, "3") for o in ADVERSARIAL.values()] + [(o, g) for o, g, _ in normal]  # "3": not cached yet
    start = time.monotonic()
    verdicts = pool.grade_many(pairs)
    assert len(verdicts) == len(pairs)
    assert time.monotonic() - start < len(ADVERSARIAL) * timeout + SLACK
    assert not any(v.correct for v in verdicts[:len(ADVERSARIAL)])
    assert [v.correct for v in verdicts[len(ADVERSARIAL):]] == [c for _, _, c in normal]


def test_timeout_kills_worker_and_pool_recovers(pool):
    config = GraderConfig(timeout=1.0)
    before = pool.stats["timeouts"]
    start = time.monotonic()
    verdict = pool.grade("\\boxed{10^{10^{10^{10}}}+x}", "1", config)
    assert verdict.reason == "timeout" and verdict.method == "timeout" and not verdict.correct
    assert time.monotonic() - start < 1.0 + SLACK
    assert pool.stats["timeouts"] == before + 1
    assert pool.grade("\\boxed{(x+1)^2}", "x^2+2x+1").correct


def test_cache_serves_repeats(pool):
    pair = ("\\boxed{\\frac{\\sqrt{3}}{3}}", "\\frac{1}{\\sqrt{3}}")
    first = pool.grade(*pair)
    hits = pool.stats["cache_hits"]
    again = pool.grade(f"Thus the answer is {pair[0]}.", pair[1])  # another output, same extracted answer
    assert first.correct and again.correct and pool.stats["cache_hits"] == hits + 1


def test_worker_crash_only_fails_its_item(pool):
    config = GraderConfig(timeout=60.0)

    def kill_busy_worker() -> None:
        for _ in range(600):  # once a worker holds the hanging item (workers may still be starting)
            busy = [w for w in list(pool._workers) if w.job == 0]
            if busy:
                time.sleep(0.5)
                busy[0].proc.kill()
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_busy_worker)
    killer.start()
    verdicts = pool.grade_many([("\\boxed{9^{9^{9^{9}}}+y}", "1"), ("\\boxed{x+1}", "1+x")], config)
    killer.join()
    assert (verdicts[0].reason, verdicts[0].method) == ("unparsable", "crash")
    assert verdicts[1].correct
    idle = pool._workers[0]  # an idle worker that died is replaced without failing anything
    idle.proc.kill()
    idle.proc.wait()
    verdicts = pool.grade_many([("\\boxed{2x}", "x+x"), ("\\boxed{3x}", "x+2x"), ("\\boxed{4y}", "2y+2y")])
    assert all(v.correct for v in verdicts), verdicts


def test_grade_from_threads():
    """The module-level grade() works off the main thread (math-verify's signal timeouts would not)."""
    results: dict[int, object] = {}

    def work(i: int) -> None:
        results[i] = grade(f"\\boxed{{{i}x + x}}", f"{i + 1}x")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    slow = threading.Thread(target=lambda: results.update(
        slow=grade("\\boxed{9^{9^{9^{9}}}}", "1", GraderConfig(timeout=1.0))))
    for t in [*threads, slow]:
        t.start()
    for t in [*threads, slow]:
        t.join(timeout=60)
        assert not t.is_alive()
    assert all(results[i].correct for i in range(4)), results
    assert results["slow"].reason == "timeout"


def test_closed_pool_refuses():
    own = GraderPool(num_workers=1)
    own.close()
    with pytest.raises(RuntimeError, match="closed"):
        own.grade("\\boxed{x+1}", "1+x")
