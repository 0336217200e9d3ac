"""math-verify equivalence, and the worker process that runs it (``python mvworker.py RFD WFD [MEM_MB [WARM [PPID]]]``;
``WARM``: how many warm-up texts to verify before reporting ready).

This file imports nothing from alignrl but its sibling :mod:`alignrl.grading.quick_checks` (which imports nothing
from alignrl either), so a worker is a bare interpreter plus math-verify, whatever the parent has imported (no
torch, no re-import of the parent's ``__main__``). Two speed-ups keep math-verify's verdicts: its LaTeX parser
tries ANTLR's SLL prediction before full LL (:func:`_two_stage_parsing`), and an answer that
:func:`~alignrl.grading.quick_checks.quick_wrong` shows wrong skips ``verify``. Parent and worker talk through
:class:`multiprocessing.connection.Connection` objects over two pipes: the parent sends
``(answer, gold, float_rounding, strict)`` and receives ``(correct, reason)``; ``None`` asks the worker to exit.

A worker dies with its parent even while math-verify holds the GIL: on Linux it asks the kernel for SIGKILL when
the parent *thread* that started it ends (``prctl(PR_SET_PDEATHSIG)``), so the parent starts workers from a thread
that lives as long as they do; elsewhere a watchdog thread polls the parent (it cannot run while the GIL is held).
"""

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
if __name__ == "__main__" and sys.path and os.path.abspath(sys.path[0]) == _HERE:
    del sys.path[0]  # this folder: its module names must not shadow installed packages

import logging  # noqa: E402  (after the sys.path fix above)
from functools import lru_cache  # noqa: E402

_LOADED = False


def _load() -> None:
    global _LOADED, parse, verify, quick_wrong  # noqa: PLW0603
    if not _LOADED:
        from math_verify import parse, verify  # noqa: F811

        logging.getLogger("math_verify").setLevel(logging.ERROR)  # it warns that we disabled its timeouts
        _two_stage_parsing()
        quick_wrong = _sibling("quick_checks").quick_wrong  # noqa: F811
        _LOADED = True


def _sibling(name: str):  # noqa: ANN202
    """The module ``name`` of this folder, also when this file runs as a script (its folder is off sys.path)."""
    import importlib

    if __package__:
        return importlib.import_module(f"{__package__}.{name}")
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"_alignrl_grading_{name}", os.path.join(_HERE, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[spec.name] = module  # type: ignore[union-attr]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _two_stage_parsing() -> None:
    """Make latex2sympy's ANTLR parser try SLL prediction first and fall back to full LL on a syntax error.

    ANTLR guarantees that an SLL parse that succeeds gives the tree LL would give, and LL's full-context
    prediction is most of math-verify's parse time (2-4x faster on the grader dev set, same results)."""
    try:  # private parts of latex2sympy2_extended: another version without them keeps its own parsing
        from antlr4.atn.PredictionMode import PredictionMode
        from latex2sympy2_extended.latex2sympy2 import _Latex2Sympy

        create = _Latex2Sympy.create_parser
    except (ImportError, AttributeError):
        return
    if hasattr(create, "ll_create_parser"):
        return

    def create_parser(self, latex_str):  # noqa: ANN001, ANN202
        parser = create(self, latex_str)
        parser._interp.predictionMode = PredictionMode.SLL
        sll_math = parser.math

        def math():  # noqa: ANN202
            try:
                return sll_math()
            except Exception:  # noqa: BLE001  (the error listener raises Exception on any syntax error)
                return create(self, latex_str).math()  # a fresh parser, full LL prediction

        parser.math = math
        return parser

    create_parser.ll_create_parser = create  # type: ignore[attr-defined]  (the library's own, for tests)
    _Latex2Sympy.create_parser = create_parser


@lru_cache(maxsize=4096)
def _parse_boxed(text: str) -> tuple:
    """math-verify's parse of ``$\\boxed{text}$`` (bare MATH golds often fail to parse; boxed ones do not)."""
    _load()
    return tuple(parse(f"$\\boxed{{{text}}}$", parsing_timeout=None))


def verify_answer(answer: str, gold: str, float_rounding: int = 6, strict: bool = True) -> tuple[bool, str]:
    """``(correct, reason)`` for an extracted ``answer`` against ``gold`` with math-verify; no time bound."""
    _load()
    gold_parsed = _parse_boxed(gold)
    answer_parsed = _parse_boxed(answer)
    if not answer_parsed:
        return False, "unparsable"
    if not gold_parsed:
        return False, "wrong"
    if quick_wrong(gold_parsed, answer_parsed, strict, float_rounding):  # verify would say False (maybe slowly)
        return False, "wrong"
    ok = verify(list(gold_parsed), list(answer_parsed), float_rounding=float_rounding, strict=strict,
                timeout_seconds=None)
    return bool(ok), "correct" if ok else "wrong"


WARMUP = ("\\frac{\\sqrt{3}}{2}", "(1, -\\frac{1}{2})", "[0, \\infty)", "x^2 + 2x + 1 = 0", "\\text{(A)}",
          "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "3\\pi - \\cos(\\theta)", "2, 3")


def _warm_up(count: int = len(WARMUP)) -> None:
    """Pay math-verify's first-call costs (grammar and sympy caches: 0.3-0.5 s of CPU that an item would
    otherwise pay inside its timeout) before reporting ready; about 1 s of CPU for all ``count`` texts."""
    for text in WARMUP[:count]:
        try:
            verify_answer(text, WARMUP[0])
        except Exception:  # noqa: BLE001
            pass
    _parse_boxed.cache_clear()


def _limit_memory(mem_mb: int) -> None:
    if mem_mb > 0:
        try:
            import resource

            limit = mem_mb * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        except (ImportError, ValueError, OSError):
            pass


def _set_parent_death_signal() -> bool:
    """Linux: SIGKILL this process when the thread that started it ends (no GIL needed); False if unavailable."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(1, int(signal.SIGKILL), 0, 0, 0) == 0  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError, ValueError):
        return False


def _die_with_parent(parent: int) -> None:
    """Ctrl-C is the parent's to handle; the worker exits when the parent process (``parent``) is gone."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    armed = _set_parent_death_signal()
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(0)
    if armed:
        return
    import threading
    import time

    def watch() -> None:  # portable fallback
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def main(argv: list[str]) -> None:
    from multiprocessing.connection import Connection

    _die_with_parent(int(argv[5]) if len(argv) > 5 else os.getppid())
    rfd, wfd = int(argv[1]), int(argv[2])
    _limit_memory(int(argv[3]) if len(argv) > 3 else 0)
    conn_in, conn_out = Connection(rfd, writable=False), Connection(wfd, readable=False)
    _load()
    _warm_up(int(argv[4]) if len(argv) > 4 else len(WARMUP))
    conn_out.send(("ready", None))
    while True:
        try:
            task = conn_in.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        try:
            result = verify_answer(*task)
        except Exception:  # noqa: BLE001  (sympy/antlr raise anything: RecursionError, MemoryError, ...)
            result = (False, "unparsable")
        conn_out.send(result)


if __name__ == "__main__":
    main(sys.argv)
