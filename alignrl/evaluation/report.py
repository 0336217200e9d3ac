"""An evaluation's output folder: resume bookkeeping (``run_settings.json``, ``samples.jsonl``), provenance
(weights hash, package versions) and the results: ``results.json``, ``report.md``, ``accuracy_by_level.png``."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from alignrl.evaluation.budget import describe as describe_budget

OUTPUT_FILES = ("run_settings.json", "samples.jsonl", "results.json", "report.md", "accuracy_by_level.png")


class EvalError(ValueError):
    """The evaluation cannot run as asked; the message says why and what to change."""


def _diff(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _diff(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


def read_finished(samples_path: Path, n: int) -> dict[str, list[dict[str, Any]]]:
    """Problems with all ``n`` samples in ``samples.jsonl``; the file is rewritten without partial problems or
    a torn last line, so appending stays consistent."""
    if not samples_path.exists():
        return {}
    by_id: dict[str, dict[int, dict[str, Any]]] = {}
    lines = samples_path.read_text(encoding="utf-8").splitlines()
    for line in lines:
        try:
            record = json.loads(line)
            by_id.setdefault(record["unique_id"], {})[int(record["sample_index"])] = record
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            continue  # a line torn by an interruption
    finished = {uid: [s[i] for i in range(n)] for uid, s in by_id.items() if set(s) == set(range(n))}
    kept = [json.dumps(r, ensure_ascii=False) for samples in finished.values() for r in samples]
    if len(kept) != len(lines):
        tmp = samples_path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        os.replace(tmp, samples_path)
    return finished


def prepare_out_dir(out: Path, settings: dict[str, Any], n: int, overwrite: bool) -> dict[str, list[dict[str, Any]]]:
    """Claim ``out``: start it, or check that it holds a run with the same settings. Returns finished problems.
    ``overwrite`` deletes this command's own output files (``OUTPUT_FILES``) and nothing else."""
    if overwrite:
        for name in OUTPUT_FILES:
            (out / name).unlink(missing_ok=True)
    settings_path = out / "run_settings.json"
    if settings_path.exists():
        recorded = json.loads(settings_path.read_text())
        changed = _diff(recorded, settings)
        if changed:
            raise EvalError(f"{out} holds a run with different settings ({'; '.join(changed)}); refusing to mix "
                            f"them: use another --out, or --overwrite to start over")
        return read_finished(out / "samples.jsonl", n)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise EvalError(f"{out} is not empty and holds no run_settings.json; use another --out, or --overwrite to "
                        f"write the evaluation beside what is there (only its own output files are ever replaced)")
    out.mkdir(parents=True, exist_ok=True)
    settings_path.write_text(json.dumps(settings, indent=2) + "\n")
    return {}


def weights_fingerprint(model: str) -> str:
    """sha256 over a local folder's weight files (names and bytes), or the cached hub revision of a hub name."""
    path = Path(model).expanduser()
    if path.is_dir():
        files = sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin")) or sorted(path.glob("*.pt"))
        if not files:
            raise EvalError(f"{path}: no *.safetensors / *.bin weight files in the model folder")
        digest = hashlib.sha256()
        for file in files:
            digest.update(file.name.encode())
            with file.open("rb") as handle:
                while chunk := handle.read(1 << 24):
                    digest.update(chunk)
        return "sha256:" + digest.hexdigest()
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(model, "config.json")
    return f"hub:{model}@{Path(cached).parent.name}" if isinstance(cached, str) else f"hub:{model}@unknown"


def package_versions() -> dict[str, str | None]:
    """Versions of the packages that shape the numbers (None: not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, str | None] = {"python": sys.version.split()[0]}
    for name in ("alignrl", "torch", "transformers", "math-verify", "vllm"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _metric_columns(summary: dict[str, Any]) -> list[str]:
    ks = sorted(int(key[5:]) for key in summary if key.startswith("pass@") and key != "pass@1")
    majs = sorted(int(key[4:]) for key in summary if key.startswith("maj@") and key != "maj@1")
    return ["pass@1", *[f"pass@{k}" for k in ks], *[f"maj@{k}" for k in majs]]


def _table(title: str, rows: dict[str, dict[str, Any]], columns: list[str]) -> list[str]:
    head = [title, "problems", *columns, "mean tokens", "truncated", "no answer"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, s in rows.items():
        cells = [str(name), str(s["problems"]), *[f"{100 * s[c]:.1f}" for c in columns],
                 f"{s['mean_response_tokens']:.0f}", f"{100 * s['truncated_share']:.1f}%",
                 f"{100 * s['no_answer_share']:.1f}%"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def render_markdown(results: dict[str, Any]) -> str:
    """A readable report: the settings that define the number, then overall / by level / by subject tables."""
    settings, sampling, prompt = results["settings"], results["settings"]["sampling"], results["settings"]["prompt"]
    overall = results["overall"]
    columns = _metric_columns(overall)
    lines = [
        "# MATH-500 evaluation", "",
        f"**{settings['model']}**: pass@1 **{100 * overall['pass@1']:.1f}%** on {overall['problems']} problems "
        f"({overall['samples']} samples).", "",
        "| setting | value |", "|---|---|",
        f"| weights | `{settings['weights']}` |",
        f"| engine / dtype | {settings['engine']} / {settings['dtype']} |",
        f"| data | {settings['data_source']} (`{settings['data']}`), limit {settings['limit']} |",
        f"| sampling | n={sampling['n']}, temperature={sampling['temperature']}, top_p={sampling['top_p']}, "
        f"max_tokens={sampling['max_tokens']}, seed={sampling['seed']} |",
        *([f"| max new tokens | {describe_budget(settings['max_new_tokens'])} |"]
          if settings.get("max_new_tokens") else []),
        f"| prompt | {settings.get('prompt_format') or ('chat template: ' + str(prompt['chat_template']))}; "
        f"system prompt: {prompt['system_prompt']!r}; instruction: "
        f"{'`' + prompt['instruction'] + '`' if prompt['instruction'] else '(none)'} |",
        f"| answer extraction | {describe_extractors(_extractors(settings))} |",
        f"| grader | {settings['grader']} |",
        f"| versions | {', '.join(f'{k} {v}' for k, v in results['versions'].items() if v)} |",
        f"| wall time | {results['wall_time_s']:.0f} s ({results['generated_problems']} problems generated, "
        f"{results['resumed_problems']} resumed) |",
        "", "Metrics in %. pass@k: unbiased estimator (Chen et al. 2021); maj@k: majority vote over the extracted "
        f"answers of the first k samples (ties: earliest; grouped by {results.get('maj_grouping', {}).get('method')}).", "",
        *(["The first prompt as the model saw it:", "", "```text", str(settings["prompt_example"]), "```", ""]
          if settings.get("prompt_example") else []),
        "## Overall", "", *_table("set", {"all": overall}, columns), "",
        "## By level", "", *_table("level", results["by_level"], columns), "",
        "## By subject", "", *_table("subject", results["by_subject"], columns), "",
    ]
    return "\n".join(lines)


def _extractors(settings: dict[str, Any]) -> list[str]:
    return list(settings.get("extractors") or settings.get("grader", {}).get("extractors") or [])


def describe_extractors(extractors: list[str]) -> str:
    """The extractor chain in order, named when it is the lenient default or the strict training chain."""
    from alignrl.grading.config import DEFAULT_EXTRACTORS, TRAINING_EXTRACTORS

    chain = " → ".join(f"`{name}`" for name in extractors) or "(none)"
    if tuple(extractors) == DEFAULT_EXTRACTORS:
        return f"{chain} (`DEFAULT_EXTRACTORS`: lenient, also reads answers stated in prose)"
    if tuple(extractors) == TRAINING_EXTRACTORS:
        return f"{chain} (`TRAINING_EXTRACTORS`: strict, boxed or explicit final answers only)"
    return f"{chain} (custom)"


def plot_accuracy_by_level(results: dict[str, Any], path: Path) -> Path:
    """Bar chart of pass@1 (and the largest maj@k when n > 1) per difficulty level."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    levels = results["by_level"]
    names = list(levels)
    series = [("pass@1", [100 * levels[k]["pass@1"] for k in names])]
    majs = [c for c in _metric_columns(results["overall"]) if c.startswith("maj@")]
    if majs:
        series.append((majs[-1], [100 * levels[k][majs[-1]] for k in names]))
    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
    width = 0.8 / len(series)
    for i, (label, values) in enumerate(series):
        xs = [x + (i - (len(series) - 1) / 2) * width for x in range(len(names))]
        bars = ax.bar(xs, values, width, label=label)
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
    ax.set_xticks(range(len(names)), [f"{k}\n({levels[k]['problems']} problems)" for k in names])
    ax.set_xlabel("level")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 105)
    ax.set_title(f"MATH-500 by level: {Path(str(results['settings']['model'])).name}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def write_outputs(out: Path, results: dict[str, Any]) -> None:
    """``results.json`` (written last, so its presence means the run finished), ``report.md``, the PNG."""
    out = Path(out)
    _write_atomic(out / "report.md", render_markdown(results))
    plot_accuracy_by_level(results, out / "accuracy_by_level.png")
    _write_atomic(out / "results.json", json.dumps(results, indent=2, ensure_ascii=False) + "\n")
