"""MATH-500 evaluation: load the problems, build prompts, sample through a rollout engine, grade, resume.

A run writes ``run_settings.json`` first, then appends the graded samples of every finished batch to
``samples.jsonl``; an interrupted run started again with the same settings skips the problems already there.
``results.json``, ``report.md`` and ``accuracy_by_level.png`` are (re)written at the end. The output folder's
bookkeeping (resume checks, provenance, the report) lives in ``report.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from alignrl.data import DataError, decode_utf8, parse_jsonl
from alignrl.evaluation.budget import TokenBudget, model_context
from alignrl.evaluation.metrics import compute_metrics, default_ks
from alignrl.evaluation.report import (EvalError, package_versions, prepare_out_dir, weights_fingerprint,
                                      write_outputs)
from alignrl.rollout.base import RolloutEngine, SamplingParams, build_engine, registered_engines

HUB_DATASET = "HuggingFaceH4/MATH-500"
DEFAULT_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass
class Math500Config:
    """Every setting of a MATH-500 run (the CLI flags and ``eval/math500.yaml`` keys use the same names)."""

    model: str
    out: str
    data: str | None = None  # local JSON/JSONL file; None = the hub dataset HuggingFaceH4/MATH-500 (test)
    engine: str = "hf"
    dtype: str = "auto"
    device: str | None = None  # None: cuda when available, else cpu
    instruction: str = DEFAULT_INSTRUCTION
    system_prompt: str | None = None
    chat_template: bool = True
    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 4096
    seed: int = 0
    batch_size: int = 32
    limit: int | None = None
    k: list[int] = field(default_factory=list)  # empty: powers of two <= n
    grader_workers: int = 2
    grader_timeout: float | None = None  # None: the grader's default (GraderConfig.timeout)
    overwrite: bool = False
    progress: bool = True

    def validate(self) -> None:
        checks = [(self.n >= 1, "--n must be >= 1"), (self.temperature >= 0, "--temperature must be >= 0"),
                  (0 < self.top_p <= 1, "--top-p must be in (0, 1]"),
                  (self.max_tokens >= 1, "--max-tokens must be >= 1"),
                  (self.batch_size >= 1, "--batch-size must be >= 1"),
                  (self.limit is None or self.limit >= 1, "--limit must be >= 1"),
                  (all(1 <= k <= self.n for k in self.k), f"every --k must be between 1 and --n ({self.n})"),
                  (self.grader_workers >= 1, "--grader-workers must be >= 1"),
                  (self.grader_timeout is None or self.grader_timeout > 0, "--grader-timeout must be > 0"),
                  (self.engine in registered_engines(),
                   f"unknown --engine {self.engine!r}; available: {', '.join(registered_engines())}"),
                  (self.dtype in DTYPES, f"unknown --dtype {self.dtype!r}; one of {', '.join(DTYPES)}")]
        from alignrl.requirements import MissingPackageError, check, engine_requirements

        try:  # before the engine check: an optional engine whose package is missing may not be registered
            check(f"--engine {self.engine}", "", engine_requirements(self.engine))
        except MissingPackageError as err:
            raise EvalError(str(err)) from err
        for ok, message in checks:
            if not ok:
                raise EvalError(message)
        if not self.k:
            self.k = default_ks(self.n)
        self.k = sorted(set(self.k))


def _check_row(row: Any, where: str, index: int) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
    for key in ("problem", "answer"):
        if not isinstance(row.get(key), (str, int, float)) or not str(row[key]).strip():
            have = ", ".join(map(str, row)) or "nothing"
            raise DataError(f"{where}: missing or empty '{key}' field (row has: {have})")
    return {**row, "problem": str(row["problem"]), "answer": str(row["answer"]),
            "unique_id": str(row.get("unique_id", f"row-{index}")),
            "level": row.get("level", "unknown"), "subject": row.get("subject", "unknown")}


def _read_file(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise DataError(f"{path}: data file not found")
    text = decode_utf8(path.read_bytes(), path)
    if text.lstrip().startswith("["):  # a JSON array
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}, line {err.lineno}: not valid JSON ({err.msg})") from err
        return [_check_row(row, f"{path}, item {i}", i) for i, row in enumerate(rows)]
    problems = []
    for number, row in parse_jsonl(text.splitlines(), path):
        problems.append(_check_row(row, f"{path}, line {number}", len(problems)))
    return problems


def load_problems(data: str | None = None, limit: int | None = None) -> tuple[list[dict[str, Any]], str]:
    """The problems (first ``limit`` of them) and an identity of the source (file sha256 or hub fingerprint)."""
    if data is not None:
        path = Path(data).expanduser()
        problems = _read_file(path)
        identity = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    else:
        try:
            import datasets

            dataset = datasets.load_dataset(HUB_DATASET, split="test")
        except Exception as err:  # noqa: BLE001 - no network, no cache, bad hub state: all mean "pass --data"
            raise DataError(f"could not load the hub dataset {HUB_DATASET} ({type(err).__name__}: {err}); "
                            f"pass --data PATH to a local MATH-500 JSON/JSONL file instead") from err
        problems = [_check_row(dict(row), f"{HUB_DATASET} row {i}", i) for i, row in enumerate(dataset)]
        identity = f"hub:{HUB_DATASET}:test:{getattr(dataset, '_fingerprint', 'unknown')}"
    if not problems:
        raise DataError(f"{data or HUB_DATASET}: no problems")
    seen: set[str] = set()
    for p in problems:
        if p["unique_id"] in seen:
            raise DataError(f"{data or HUB_DATASET}: unique_id {p['unique_id']!r} appears twice")
        seen.add(p["unique_id"])
    return problems[:limit] if limit else problems, identity


def build_prompt(tokenizer: Any, problem: str, instruction: str, system_prompt: str | None,
                 chat_template: bool) -> str:
    """``problem``, a blank line, ``instruction``; in the chat template unless ``chat_template`` is False."""
    content = f"{problem}\n\n{instruction}" if instruction else problem
    if not chat_template:
        return f"{system_prompt}\n\n{content}" if system_prompt else content
    if not getattr(tokenizer, "chat_template", None):
        raise EvalError("the model's tokenizer has no chat template; pass --no-chat-template for a base model")
    messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + \
        [{"role": "user", "content": content}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def resolve_chat_template(cfg: Math500Config, tokenizer: Any) -> bool:
    """Whether prompts go through the chat template: as asked, except that a tokenizer without one gets raw text
    (with a warning on stderr)."""
    if cfg.chat_template and not getattr(tokenizer, "chat_template", None):
        print("warning: the model's tokenizer has no chat template, so the prompts are raw text (as with "
              "--no-chat-template, which silences this warning)", file=sys.stderr)
        return False
    return cfg.chat_template


def prompt_format(tokenizer: Any, chat_template: bool) -> str:
    """Which template the prompts used, in words (for results.json and report.md)."""
    if not chat_template:
        return "raw text: problem, blank line, instruction (no chat template)"
    digest = hashlib.sha256(tokenizer.chat_template.encode()).hexdigest()[:12]
    return f"the tokenizer's chat template (sha256 {digest}…), problem and instruction as one user message"


def make_engine(name: str, model: str, dtype: str = "auto", device: str | None = None) -> RolloutEngine:
    """Build the registered rollout engine ``name`` serving the model folder or hub name ``model`` (its default
    settings; ``device`` None: cuda when available, else cpu)."""
    import torch

    if name not in registered_engines():
        raise EvalError(f"unknown --engine {name!r}; available: {', '.join(registered_engines())}")
    device = device or ("cuda" if torch.cuda.is_available() else None)
    return build_engine(name, None, model_path=model, dtype=dtype, device=device)


def grader_config(cfg: Math500Config) -> Any:
    """The grader's default ``GraderConfig`` (the lenient ``DEFAULT_EXTRACTORS`` chain, recorded as
    ``settings.extractors`` in results.json and in report.md) with ``--grader-timeout`` applied."""
    from alignrl.grading import GraderConfig

    config = GraderConfig()
    return config if cfg.grader_timeout is None else replace(config, timeout=cfg.grader_timeout)


def run_settings(cfg: Math500Config, tokenizer: Any, data_identity: str) -> dict[str, Any]:
    """Everything that changes the samples; a resumed run must match these exactly."""
    template = getattr(tokenizer, "chat_template", None) if cfg.chat_template else None
    settings = {"weights": weights_fingerprint(cfg.model), "engine": cfg.engine, "dtype": cfg.dtype,
                "data": data_identity,
                "prompt": {"chat_template": cfg.chat_template, "instruction": cfg.instruction,
                           "system_prompt": cfg.system_prompt,
                           "template_sha256": hashlib.sha256(template.encode()).hexdigest() if template else None},
                "sampling": {"n": cfg.n, "temperature": cfg.temperature, "top_p": cfg.top_p,
                             "max_tokens": cfg.max_tokens, "seed": cfg.seed},
                "grader": asdict(grader_config(cfg))}
    return json.loads(json.dumps(settings))  # as recorded in run_settings.json (tuples become lists)


def run_math500(cfg: Math500Config) -> dict[str, Any]:
    """Evaluate (or resume evaluating) ``cfg.model`` on MATH-500 and write every output file; returns results."""
    from transformers import AutoTokenizer

    start_time = time.perf_counter()
    cfg.validate()
    if cfg.temperature == 0 and cfg.n > 1:
        print(f"note: temperature 0 is greedy, so the {cfg.n} samples per problem are identical", file=sys.stderr)
    problems, data_identity = load_problems(cfg.data, cfg.limit)
    try:
        tokenizer = AutoTokenizer.from_pretrained(cfg.model)
    except (OSError, ValueError) as err:
        raise EvalError(f"cannot load the tokenizer of --model {cfg.model!r}: {err}") from err
    cfg = replace(cfg, chat_template=resolve_chat_template(cfg, tokenizer))
    prompts = {p["unique_id"]: build_prompt(tokenizer, p["problem"], cfg.instruction, cfg.system_prompt,
                                            cfg.chat_template) for p in problems}
    prompt_ids = {uid: tokenizer(text, add_special_tokens=not cfg.chat_template)["input_ids"]
                  for uid, text in prompts.items()}
    budget = TokenBudget(cfg.max_tokens, model_context(cfg.model))
    lengths = [len(prompt_ids[p["unique_id"]]) for p in problems]
    settings = run_settings(cfg, tokenizer, data_identity)
    out = Path(cfg.out)
    finished = prepare_out_dir(out, settings, cfg.n, cfg.overwrite)
    pending = [(i, p) for i, p in enumerate(problems) if p["unique_id"] not in finished]
    if not pending and (out / "results.json").exists():
        print(f"{out}: every requested problem is already evaluated; nothing to do (--overwrite redoes the run)",
              file=sys.stderr)
        return json.loads((out / "results.json").read_text())
    stats: dict[str, int] = {}
    if pending:
        warning = budget.warning([len(prompt_ids[p["unique_id"]]) for _, p in pending])
        if warning:
            print(warning, file=sys.stderr)
        finished.update(_generate(cfg, pending, prompts, prompt_ids, budget, out, len(problems), stats))
    records = [{"level": p["level"], "subject": p["subject"], "samples": finished[p["unique_id"]]} for p in problems]
    results = {"suite": "math500", "out": str(out), **compute_metrics(records, cfg.k),
               "settings": {**settings, "model": cfg.model, "device": cfg.device, "batch_size": cfg.batch_size,
                            "prompt_format": prompt_format(tokenizer, cfg.chat_template),
                            "max_new_tokens": budget.summary(lengths),
                            "limit": cfg.limit, "k": cfg.k, "data_source": cfg.data or f"{HUB_DATASET} (test)",
                            "prompt_example": prompts[problems[0]["unique_id"]],
                            "extractors": list(settings["grader"]["extractors"]),
                            "grader": {**settings["grader"], "workers": cfg.grader_workers}},
               "grader_stats": stats,
               "versions": package_versions(), "problems": len(problems), "generated_problems": len(pending),
               "resumed_problems": len(problems) - len(pending),
               "wall_time_s": round(time.perf_counter() - start_time, 2)}
    write_outputs(out, results)
    return results


def _generate(cfg: Math500Config, pending: list[tuple[int, dict[str, Any]]], prompts: dict[str, str],
              prompt_ids: dict[str, list[int]], budget: TokenBudget, out: Path, total: int,
              stats: dict[str, int]) -> dict[str, list[dict[str, Any]]]:
    """Sample, grade and append every pending problem, one batch at a time. A batch's new tokens are capped at the
    room its longest prompt leaves in the context; a prompt that fills the context is scored wrong unsampled."""
    from tqdm.auto import tqdm

    from alignrl.grading import GraderPool

    engine = make_engine(cfg.engine, cfg.model, cfg.dtype, cfg.device)
    grader = GraderPool(num_workers=cfg.grader_workers, config=grader_config(cfg))
    done: dict[str, list[dict[str, Any]]] = {}
    bar = tqdm(total=total, initial=total - len(pending), unit="problem", desc="math500", file=sys.stderr,
               disable=not cfg.progress, dynamic_ncols=True)
    correct = graded = 0
    try:
        for start in range(0, len(pending), cfg.batch_size):
            batch = pending[start:start + cfg.batch_size]
            seed = cfg.seed + batch[0][0]  # the batch's first problem index: reproducible for a given batching
            fits = [(i, p) for i, p in batch if budget.room(len(prompt_ids[p["unique_id"]])) > 0]
            limit = budget.for_batch([len(prompt_ids[p["unique_id"]]) for _, p in fits]) if fits else 0
            params = SamplingParams(n=cfg.n, temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=limit,
                                    seed=seed)
            generated = dict(zip((p["unique_id"] for _, p in fits),
                                 engine.generate([prompt_ids[p["unique_id"]] for _, p in fits], params)
                                 if fits else []))
            pairs = [(c.text, p["answer"]) for _, p in fits for c in generated[p["unique_id"]]]
            verdicts = iter(grader.grade_many(pairs))
            lines = []
            for _, p in batch:
                samples = []
                group = generated.get(p["unique_id"])
                for index in range(cfg.n):
                    sample = {"unique_id": p["unique_id"], "sample_index": index, "level": p["level"],
                              "subject": p["subject"], "answer": p["answer"], "prompt": prompts[p["unique_id"]]}
                    if group is None:  # the prompt alone fills the model's context
                        sample.update(output="", extracted=None, reason="prompt_fills_context", method="none",
                                      correct=False, finish_reason="length", num_tokens=0, max_new_tokens=0)
                    else:
                        completion, verdict = group[index], next(verdicts)
                        sample.update(output=completion.text, extracted=verdict.extracted, reason=verdict.reason,
                                      method=verdict.method, correct=bool(verdict.correct),
                                      finish_reason=completion.finish_reason,
                                      num_tokens=len(completion.token_ids), max_new_tokens=limit)
                    samples.append(sample)
                done[p["unique_id"]] = samples
                lines += [json.dumps(s, ensure_ascii=False) for s in samples]
                correct += sum(s["correct"] for s in samples)
                graded += len(samples)
            with (out / "samples.jsonl").open("a", encoding="utf-8") as handle:
                handle.write("".join(line + "\n" for line in lines))
                handle.flush()
                os.fsync(handle.fileno())
            bar.update(len(batch))
            bar.set_postfix(pass1=f"{correct / graded:.3f}")
    finally:
        bar.close()
        engine.close()
        stats.update(grader.stats)
        grader.close()
    return done
