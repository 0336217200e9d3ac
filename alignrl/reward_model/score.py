"""``alignrl score``: score a table of preference pairs or single responses with a reward model.

Pairs mode (``chosen``/``rejected`` columns): ``pairs.jsonl`` (one line per pair), ``summary.json``, ``summary.md``,
``reliability.png``, ``margin_hist.png``. Response mode (a ``response`` column): ``scores.jsonl`` (one line per
row), ``summary.json``, ``summary.md``, ``score_hist.png``. Skipped rows go to ``bad_rows.jsonl``. The output
folder must be empty or new unless ``overwrite``; files are rendered into a staging folder and moved in only when
all of them are ready, so a failed run leaves earlier results as they were.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from alignrl.reward_model import score_metrics as sm
from alignrl.reward_model.pairs import (BadRow, PreferenceDataError, load_table, parse_preference_rows,
                                        parse_response_rows)


class ScoreError(ValueError):
    """A request ``alignrl score`` cannot carry out (output folder, columns, settings); the message says why."""


@dataclass
class ScoreSettings:
    """Everything ``alignrl score`` needs; the fields mirror the command's flags."""

    model: str
    data: str
    out: str
    batch_size: int = 16
    max_length: int | None = None
    truncation_side: str = "left"
    group_by: list[str] = field(default_factory=list)
    length_buckets: list[int] | None = None
    skip_bad_rows: bool = False
    device: str = "auto"
    dtype: str = "auto"
    split: str = "train"
    overwrite: bool = False
    progress: bool = True


def check_out_dir(out: str, overwrite: bool) -> Path:
    """The output folder, validated but not touched: new or empty, or anything with ``overwrite``."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ScoreError(f"--out {out}: exists and is not a folder")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        held = ", ".join(sorted(p.name for p in path.iterdir())[:5])
        raise ScoreError(f"--out {out}: the folder is not empty ({held}); pass --overwrite to replace the "
                         f"results in it, or choose another folder")
    return path


def detect_mode(rows: list[dict[str, Any]], source: str) -> str:
    """``pairs`` when any row has ``chosen`` or ``rejected``, ``responses`` when any has ``response``."""
    columns = _columns(rows)
    if "chosen" in columns or "rejected" in columns:
        return "pairs"
    if "response" in columns:
        return "responses"
    raise PreferenceDataError(f"{source}: no 'chosen'/'rejected' columns (preference pairs) and no 'response' "
                              f"column (single responses); columns: {', '.join(sorted(columns)) or 'none'}")


def _columns(rows: list[dict[str, Any]]) -> set[str]:
    return {str(key) for row in rows for key in row}


SCORED_COLUMNS = {"pairs": ("prompt", "chosen", "rejected", "margin"), "responses": ("prompt", "response")}


def _check_group_by(group_by: list[str], rows: list[dict[str, Any]], source: str, mode: str) -> list[str]:
    """``length_bucket`` then the named columns, each once; unknown columns and the scored texts are refused."""
    columns = _columns(rows)
    unknown = [c for c in group_by if c != sm.LENGTH_BUCKET and c not in columns]
    if unknown:
        raise ScoreError(f"--group-by {' '.join(unknown)}: no such column in {source} (columns: "
                         f"{', '.join(sorted(columns))}; '{sm.LENGTH_BUCKET}' is always available)")
    scored = [c for c in group_by if c in SCORED_COLUMNS[mode]]
    if scored:
        raise ScoreError(f"--group-by {' '.join(scored)}: cannot group by the columns being scored "
                         f"({', '.join(SCORED_COLUMNS[mode])}); name another column")
    return [sm.LENGTH_BUCKET, *dict.fromkeys(c for c in group_by if c != sm.LENGTH_BUCKET)]


def _record_key(column: str, fields: set[str]) -> str:
    """Where a grouping column's value sits in a record (a data column that clashes is prefixed ``data_``)."""
    return column if column == sm.LENGTH_BUCKET or column not in fields else f"data_{column}"


def _passthrough(extra: dict[str, Any], reserved: set[str]) -> dict[str, Any]:
    """The row's other columns; a name that clashes with an output field is prefixed ``data_``."""
    return {(f"data_{k}" if k in reserved else k): v for k, v in extra.items()}


PAIR_FIELDS = {"index", "score_chosen", "score_rejected", "margin", "correct", "tie", "chosen_tokens",
               "rejected_tokens", "chosen_truncated", "rejected_truncated", "chosen_empty", "rejected_empty",
               sm.LENGTH_BUCKET, "label_margin"}
RESPONSE_FIELDS = {"index", "score", "tokens", "truncated", "empty", sm.LENGTH_BUCKET}


def _score(scorer: Any, encoded: list, progress: bool, unit: str) -> list[float]:
    from tqdm import tqdm

    with tqdm(total=len(encoded), unit=unit, desc="score", file=sys.stderr, disable=not progress,
              dynamic_ncols=True) as bar:
        return scorer.score_ids([e.input_ids for e in encoded], progress=bar.update).tolist()


def _scorer(settings: ScoreSettings) -> Any:
    from alignrl.reward_model.scorer import SequenceScorer, load_reward_model

    if settings.batch_size < 1:
        raise ScoreError(f"--batch-size must be >= 1, got {settings.batch_size}")
    if settings.max_length is not None and settings.max_length < 1:
        raise ScoreError(f"--max-length must be >= 1, got {settings.max_length}")
    model, tokenizer = load_reward_model(settings.model, settings.device, settings.dtype, key="--model")
    try:
        return SequenceScorer(model, tokenizer, settings.batch_size, settings.max_length, settings.truncation_side)
    except ValueError as err:
        raise ScoreError(f"--model {settings.model}: {err}") from err


def _score_pairs(settings: ScoreSettings, rows: list[dict[str, Any]], groups: list[str]):
    pairs, bad = parse_preference_rows(rows, settings.data, settings.skip_bad_rows)
    if not pairs:
        raise ScoreError(f"{settings.data}: no usable preference pairs ({len(bad)} bad rows skipped)")
    scorer = _scorer(settings)
    encoded = [scorer.encode(p.prompt, part) for p in pairs for part in (p.chosen, p.rejected)]
    start = time.perf_counter()
    scores = _score(scorer, encoded, settings.progress, "seq")
    seconds = time.perf_counter() - start
    edges = sm.length_edges([max(a.length, b.length) for a, b in zip(encoded[::2], encoded[1::2])],
                            settings.length_buckets)
    records = []
    for i, pair in enumerate(pairs):
        chosen, rejected = encoded[2 * i], encoded[2 * i + 1]
        margin = scores[2 * i] - scores[2 * i + 1]
        record = {"index": pair.index, "score_chosen": scores[2 * i], "score_rejected": scores[2 * i + 1],
                  "margin": margin, "correct": margin > 0, "tie": margin == 0,
                  "chosen_tokens": chosen.length, "rejected_tokens": rejected.length,
                  "chosen_truncated": chosen.truncated, "rejected_truncated": rejected.truncated,
                  "chosen_empty": chosen.empty, "rejected_empty": rejected.empty,
                  sm.LENGTH_BUCKET: sm.length_label(max(chosen.length, rejected.length), edges)}
        if pair.margin is not None:
            record["label_margin"] = pair.margin
        records.append({**_passthrough(pair.extra, PAIR_FIELDS), **record})
    summary = {**pair_summary(records, groups, edges, bad), "length_bucket_edges": edges}
    return records, summary, bad, seconds, scorer


def pair_summary(records: list[dict[str, Any]], groups: list[str], edges: list[int],
                 bad: list[BadRow]) -> dict[str, Any]:
    """Accuracy, calibration, counts and per-group accuracy of scored pairs."""
    margins = [r["margin"] for r in records]
    order = sm.length_labels_in_order(edges)
    return {
        **sm.accuracy_block(margins),
        "ece": sm.expected_calibration_error(margins),
        "calibration_bins": sm.calibration_bins(margins),
        "counts": {"pairs": len(records), "ties": sum(r["tie"] for r in records),
                   "empty_chosen": sum(r["chosen_empty"] for r in records),
                   "empty_rejected": sum(r["rejected_empty"] for r in records),
                   "truncated_chosen": sum(r["chosen_truncated"] for r in records),
                   "truncated_rejected": sum(r["rejected_truncated"] for r in records),
                   "bad_rows_skipped": len(bad)},
        "groups": {g: sm.grouped(records, _record_key(g, PAIR_FIELDS), "margin", sm.accuracy_block,
                                 order if g == sm.LENGTH_BUCKET else None) for g in groups},
    }


def _score_responses(settings: ScoreSettings, rows: list[dict[str, Any]], groups: list[str]):
    items, bad = parse_response_rows(rows, settings.data, settings.skip_bad_rows)
    if not items:
        raise ScoreError(f"{settings.data}: no usable responses ({len(bad)} bad rows skipped)")
    scorer = _scorer(settings)
    encoded = [scorer.encode(item.prompt, item.response) for item in items]
    start = time.perf_counter()
    scores = _score(scorer, encoded, settings.progress, "seq")
    seconds = time.perf_counter() - start
    edges = sm.length_edges([e.length for e in encoded], settings.length_buckets)
    records = [{**_passthrough(item.extra, RESPONSE_FIELDS),
                "index": item.index, "score": score, "tokens": e.length, "truncated": e.truncated,
                "empty": e.empty, sm.LENGTH_BUCKET: sm.length_label(e.length, edges)}
               for item, e, score in zip(items, encoded, scores)]
    order = sm.length_labels_in_order(edges)
    summary = {**sm.score_block(scores),
               "counts": {"responses": len(records), "empty": sum(r["empty"] for r in records),
                          "truncated": sum(r["truncated"] for r in records), "bad_rows_skipped": len(bad)},
               "groups": {g: sm.grouped(records, _record_key(g, RESPONSE_FIELDS), "score", sm.score_block,
                                        order if g == sm.LENGTH_BUCKET else None) for g in groups},
               "length_bucket_edges": edges}
    return records, summary, bad, seconds, scorer


def run_score(settings: ScoreSettings) -> dict[str, Any]:
    """Score ``settings.data`` with ``settings.model`` and write the results to ``settings.out``; returns the
    summary (as written to ``summary.json``)."""
    from alignrl.reward_model.score_report import write_outputs

    if settings.truncation_side not in ("left", "right"):
        raise ScoreError(f"--truncation-side must be left or right, got {settings.truncation_side!r}")
    if settings.length_buckets is not None and any(edge < 1 for edge in settings.length_buckets):
        raise ScoreError(f"--length-buckets must be positive token counts, got {settings.length_buckets}")
    out = check_out_dir(settings.out, settings.overwrite)
    rows = load_table(settings.data, settings.split)
    if not rows:
        raise ScoreError(f"{settings.data}: no rows (split '{settings.split}')")
    mode = detect_mode(rows, settings.data)
    groups = _check_group_by(list(settings.group_by), rows, settings.data, mode)
    run = _score_pairs if mode == "pairs" else _score_responses
    records, summary, bad, seconds, scorer = run(settings, rows, groups)
    unit = "pairs" if mode == "pairs" else "responses"
    edges = summary.pop("length_bucket_edges")
    summary = {
        "mode": mode, **summary,
        "settings": {**{k: v for k, v in asdict(settings).items() if k not in ("progress", "overwrite")},
                     "max_length": scorer.max_length, "device": str(scorer.device),
                     "dtype": str(next(scorer.model.parameters()).dtype).replace("torch.", ""),
                     "length_bucket_edges": edges},
        "conventions": conventions(mode),
        "bad_rows": [asdict(b) for b in bad[:50]],
        "seconds": seconds,
        f"{unit}_per_second": len(records) / seconds if seconds > 0 else None,
    }
    summary = sm.clean_numbers(summary)
    write_outputs(out, mode, records, summary, bad)
    return summary


def conventions(mode: str) -> dict[str, str]:
    """How the figures are defined, written into every summary."""
    length = ("the longer of the pair's two inputs, in tokens before truncation (prompt + response)"
              if mode == "pairs" else "the input's tokens before truncation (prompt + response)")
    length += "; edges from --length-buckets, else the quartiles of the data"
    common = {"length_bucket": length,
              "truncation": "an input longer than max_length loses tokens on the truncation side (left: the start "
                            "is dropped and the end, which the reward head reads, kept; right: the end is dropped); "
                            "such inputs are scored and counted, never dropped",
              "empty": "a response whose text (every message's content) is blank; scored and counted"}
    if mode != "pairs":
        return {**common, "std": "sample standard deviation (n - 1)",
                "quantiles": "linear interpolation between closest ranks"}
    return {**common,
            "correct": "score_chosen > score_rejected; a tie (margin exactly 0) counts as wrong, as in TRL's "
                       "RewardTrainer; accuracy_ties_as_half counts it as 0.5",
            "accuracy_ci95": "Wilson score interval, 95%",
            "ece": "each pair is two binary events, 'chosen beats rejected' with p = sigmoid(margin) (label 1) "
                   "and 'rejected beats chosen' with 1 - p (label 0); 10 equal-width bins of p over [0, 1]; "
                   "ECE = sum over bins of (events in bin / all events) * |observed frequency - mean p|"}
