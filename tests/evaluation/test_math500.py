"""``alignrl eval math500`` end to end on the tiny model: outputs, resume, refusals, bad data, config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alignrl.data import DataError
from alignrl.evaluation import cli
from alignrl.evaluation.math500 import build_prompt, load_problems
from alignrl.evaluation.report import describe_extractors, read_finished
from alignrl.grading.config import DEFAULT_EXTRACTORS, TRAINING_EXTRACTORS
from alignrl.rollout.hf_engine import HFEngine

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def MATH500(math500_file) -> Path:  # noqa: N802 - reads like the constant it replaced
    return math500_file


@pytest.fixture()
def generate_calls(monkeypatch) -> list[int]:
    """Records the number of prompts of every engine.generate call."""
    calls: list[int] = []
    original = HFEngine.generate

    def counting(self, prompts, params):
        calls.append(len(prompts))
        return original(self, prompts, params)

    monkeypatch.setattr(HFEngine, "generate", counting)
    return calls


def evaluate(model: Path, out: Path, data: Path, *extra: str) -> int:
    return cli.main(["--model", str(model), "--out", str(out), "--data", str(data), "--max-tokens", "16",
                     "--no-progress", "--grader-workers", "1", *extra])


def sample_lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]


def test_end_to_end_outputs(long_context_model_dir, MATH500, tmp_path, generate_calls):
    out = tmp_path / "eval"
    assert evaluate(long_context_model_dir, out, MATH500, "--limit", "3", "--n", "2", "--temperature", "1.0",
                    "--seed", "1") == 0
    assert sorted(p.name for p in out.iterdir()) == ["accuracy_by_level.png", "report.md", "results.json",
                                                     "run_settings.json", "samples.jsonl"]
    results = json.loads((out / "results.json").read_text())
    overall = results["overall"]
    for key in ("problems", "samples", "pass@1", "pass@2", "maj@1", "maj@2", "mean_response_tokens",
                "truncated_share", "no_answer_share"):
        assert key in overall, key
    assert overall["problems"] == 3 and overall["samples"] == 6
    assert all(0.0 <= overall[k] <= 1.0 for k in ("pass@1", "pass@2", "maj@2", "truncated_share"))
    assert 0 < overall["mean_response_tokens"] <= 16
    assert results["by_level"] and results["by_subject"]
    assert sum(s["problems"] for s in results["by_level"].values()) == 3
    settings = results["settings"]
    assert settings["weights"].startswith("sha256:") and settings["data"].startswith("sha256:")
    assert settings["sampling"] == {"n": 2, "temperature": 1.0, "top_p": 1.0, "max_tokens": 16, "seed": 1}
    assert settings["engine"] == "hf" and settings["prompt"]["instruction"].endswith("\\boxed{}.")
    assert settings["grader"]["timeout"] > 0 and settings["k"] == [1, 2]
    assert settings["extractors"] == settings["grader"]["extractors"] == list(DEFAULT_EXTRACTORS)  # the lenient chain
    recorded = json.loads((out / "run_settings.json").read_text())["grader"]["extractors"]
    assert recorded == list(DEFAULT_EXTRACTORS)
    assert "timeouts" in results["grader_stats"]
    assert {"torch", "transformers", "math-verify", "alignrl"} <= set(results["versions"])
    assert results["wall_time_s"] > 0 and results["generated_problems"] == 3
    samples = sample_lines(out)
    assert len(samples) == 6 and generate_calls == [3]
    for s in samples:
        assert {"unique_id", "sample_index", "prompt", "output", "extracted", "reason", "method", "correct",
                "finish_reason", "level", "subject", "answer", "num_tokens"} <= set(s)
        assert s["finish_reason"] in ("stop", "length") and isinstance(s["correct"], bool)
    report = (out / "report.md").read_text()
    assert "## By level" in report and "## By subject" in report and "| pass@1 |" in report
    assert "| answer extraction | " + " → ".join(f"`{name}`" for name in DEFAULT_EXTRACTORS) in report
    assert "`DEFAULT_EXTRACTORS`: lenient" in report
    assert (out / "accuracy_by_level.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_describe_extractors_names_the_chain():
    assert describe_extractors(list(TRAINING_EXTRACTORS)) == \
        "`boxed` → `final_answer` → `answer_heading` (`TRAINING_EXTRACTORS`: strict, boxed or explicit final " \
        "answers only)"
    assert describe_extractors(["last_number"]) == "`last_number` (custom)"


def test_resume_generates_only_new_problems(long_context_model_dir, MATH500, tmp_path, generate_calls):
    out = tmp_path / "eval"
    assert evaluate(long_context_model_dir, out, MATH500, "--limit", "2", "--batch-size", "1") == 0
    assert generate_calls == [1, 1]
    first = sample_lines(out)
    assert evaluate(long_context_model_dir, out, MATH500, "--limit", "4", "--batch-size", "1") == 0
    assert generate_calls == [1, 1, 1, 1]  # only problems 3 and 4
    samples = sample_lines(out)
    assert samples[:2] == first and len(samples) == 4
    assert len({s["unique_id"] for s in samples}) == 4
    results = json.loads((out / "results.json").read_text())
    assert (results["overall"]["problems"], results["generated_problems"], results["resumed_problems"]) == (4, 2, 2)
    # a finished run is left as it is
    assert evaluate(long_context_model_dir, out, MATH500, "--limit", "4") == 0
    assert len(generate_calls) == 4 and sample_lines(out) == samples


def test_resume_drops_torn_lines_and_partial_problems(long_context_model_dir, MATH500, tmp_path, generate_calls):
    out = tmp_path / "eval"
    assert evaluate(long_context_model_dir, out, MATH500, "--limit", "2", "--n", "2") == 0
    lines = (out / "samples.jsonl").read_text().splitlines()
    (out / "samples.jsonl").write_text("\n".join(lines[:3]) + '\n{"unique_id": "torn')  # problem 2 half done
    (out / "results.json").unlink()  # as if interrupted
    assert set(read_finished(out / "samples.jsonl", 2)) == {json.loads(lines[0])["unique_id"]}
    assert evaluate(long_context_model_dir, out, MATH500, "--limit", "2", "--n", "2") == 0
    assert generate_calls == [2, 1]
    samples = sample_lines(out)
    assert len(samples) == 4 and [s["sample_index"] for s in samples] == [0, 1, 0, 1]


def test_settings_mismatch_is_refused(long_context_model_dir, MATH500, tmp_path, capsys):
    out = tmp_path / "eval"
    assert evaluate(long_context_model_dir, out, MATH500, "--limit", "1") == 0
    before = (out / "samples.jsonl").read_text()
    assert evaluate(long_context_model_dir, out, MATH500, "--limit", "2", "--temperature", "0.7") == 2
    err = capsys.readouterr().err
    assert "different settings" in err and "sampling.temperature: 0.0 -> 0.7" in err and "--overwrite" in err
    assert evaluate(long_context_model_dir, out, MATH500, "--limit", "2", "--instruction", "Answer:") == 2
    assert "prompt.instruction" in capsys.readouterr().err
    assert (out / "samples.jsonl").read_text() == before
    assert evaluate(long_context_model_dir, out, MATH500, "--limit", "1", "--temperature", "0.7", "--overwrite") == 0
    assert json.loads((out / "run_settings.json").read_text())["sampling"]["temperature"] == 0.7


def test_foreign_out_dir_is_refused(long_context_model_dir, MATH500, tmp_path, capsys):
    out = tmp_path / "eval"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert evaluate(long_context_model_dir, out, MATH500, "--limit", "1") == 2
    assert "holds no run_settings.json" in capsys.readouterr().err


@pytest.mark.parametrize("content, message", [
    ('{"problem": "1+1?", "answer": "2"}\nnot json\n', "line 2: not valid JSON"),
    ('{"problem": "1+1?", "answer": "2"}\n{"problem": "2+2?"}\n', "line 2: missing or empty 'answer'"),
    ('{"question": "1+1?", "answer": "2"}\n', "line 1: missing or empty 'problem'"),
    ('[{"problem": "1+1?", "answer": "2"}, {"answer": "4"}]', "item 1: missing or empty 'problem'"),
    ('[{"problem": "1+1?", "answer": "2"},', "line 1: not valid JSON"),
    ('["text"]', "item 0: expected a JSON object"),
    ('{"problem": "a", "answer": "1", "unique_id": "x"}\n{"problem": "b", "answer": "2", "unique_id": "x"}\n',
     "appears twice"),
    ("", "no problems"),
])
def test_bad_data_errors_name_file_and_line(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(DataError) as err:
        load_problems(str(path))
    assert str(path) in str(err.value) and message in str(err.value)


def test_bad_data_through_the_cli(tiny_model_dir, tmp_path, capsys):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"problem": "1+1?"}\n')
    assert cli.main(["--model", str(tiny_model_dir), "--out", str(tmp_path / "o"), "--data", str(path)]) == 2
    assert f"{path}, line 1: missing or empty 'answer'" in capsys.readouterr().err
    assert cli.main(["--model", str(tiny_model_dir), "--out", str(tmp_path / "o"), "--data",
                     str(tmp_path / "missing.jsonl")]) == 2
    assert "data file not found" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_hub_failure_suggests_data(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'HuggingFaceH4/MATH-500' on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match="pass --data PATH"):
        load_problems(None)


def test_limit_and_defaults(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps([{"problem": f"{i}+1?", "answer": str(i + 1)} for i in range(5)]))
    problems, identity = load_problems(str(path), limit=2)
    assert [p["unique_id"] for p in problems] == ["row-0", "row-1"] and identity.startswith("sha256:")
    assert problems[0]["level"] == "unknown" and problems[0]["subject"] == "unknown"


def test_build_prompt(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)  # its template concatenates the contents
    assert build_prompt(tokenizer, "1+1?", "Box it.", None, True) == "1+1?\n\nBox it."
    assert build_prompt(tokenizer, "1+1?", "Box it.", "Sys.", True) == "Sys.1+1?\n\nBox it."
    assert build_prompt(tokenizer, "1+1?", "", None, False) == "1+1?"
    assert build_prompt(tokenizer, "1+1?", "Box it.", "Sys.", False) == "Sys.\n\n1+1?\n\nBox it."
    tokenizer.chat_template = None
    with pytest.raises(ValueError, match="--no-chat-template"):
        build_prompt(tokenizer, "1+1?", "Box it.", None, True)


def test_config_file_and_precedence(tmp_path):
    parser = cli.argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(["--config", str(REPO / "eval" / "math500.yaml"), "--model", "m", "--out", "o",
                              "--n", "4"])
    cfg = cli.resolve_config(args)
    assert (cfg.model, cfg.n, cfg.temperature, cfg.max_tokens, cfg.chat_template) == ("m", 4, 0.0, 4096, True)
    cfg.validate()
    assert cfg.k == [1, 2, 4] and cfg.instruction.endswith("within \\boxed{}.")
    custom = tmp_path / "c.yaml"
    custom.write_text("model: m\nout: o\nmax-tokens: 64\ntemperature: 0.6\n")
    cfg = cli.resolve_config(parser.parse_args(["--config", str(custom), "--temperature", "0"]))
    assert (cfg.max_tokens, cfg.temperature) == (64, 0.0)
    custom.write_text("model: m\nout: o\ntemprature: 1\n")
    with pytest.raises(ValueError, match="unknown keys temprature"):
        cli.resolve_config(parser.parse_args(["--config", str(custom)]))
    with pytest.raises(ValueError, match="--model is required"):
        cli.resolve_config(parser.parse_args(["--out", "o"]))
    bad = cli.resolve_config(parser.parse_args(["--model", "m", "--out", "o", "--n", "2", "--k", "4"]))
    with pytest.raises(ValueError, match="between 1 and --n"):
        bad.validate()
    for flags, message in [(["--engine", "vllm2"], "unknown --engine"), (["--dtype", "fp8"], "unknown --dtype"),
                           (["--temperature", "-1"], "--temperature"), (["--top-p", "0"], "--top-p")]:
        with pytest.raises(ValueError, match=message):
            cli.resolve_config(parser.parse_args(["--model", "m", "--out", "o", *flags])).validate()


def test_missing_model_is_a_clear_error(tmp_path, capsys):
    path = tmp_path / "p.jsonl"
    path.write_text('{"problem": "1+1?", "answer": "2"}\n')
    assert cli.main(["--model", str(tmp_path / "no-model"), "--out", str(tmp_path / "o"), "--data", str(path)]) == 2
    assert "cannot load the tokenizer of --model" in capsys.readouterr().err


def _problems_file(path: Path, problems: list[str]) -> Path:
    path.write_text("".join(json.dumps({"problem": p, "answer": "2", "unique_id": f"p{i}"}) + "\n"
                            for i, p in enumerate(problems)))
    return path


def test_new_tokens_are_capped_at_the_context_left(tiny_model_dir, tmp_path, monkeypatch, capsys):
    limits: list[int] = []
    original = HFEngine.generate

    def recording(self, prompts, params):
        limits.append(params.max_new_tokens)
        assert all(len(p) + params.max_new_tokens <= 128 for p in prompts)  # never past the model's positions
        return original(self, prompts, params)

    monkeypatch.setattr(HFEngine, "generate", recording)
    data = _problems_file(tmp_path / "p.jsonl", ["1+1=", "1+2+3=" * 4, "9" * 200])  # 4, 24 and 200 tokens
    out = tmp_path / "eval"
    assert cli.main(["--model", str(tiny_model_dir), "--out", str(out), "--data", str(data), "--instruction", "",
                     "--max-tokens", "4096", "--no-progress", "--grader-workers", "1"]) == 0
    err = capsys.readouterr().err
    assert limits == [128 - 24]  # one call for the two prompts that fit, capped by the longer one
    assert err.count("warning: the model's context is 128 tokens: for 3 of 3 problems the prompt leaves less") == 1
    assert "1 prompts fill the context" in err
    samples = {s["unique_id"]: s for s in sample_lines(out)}
    assert samples["p2"]["reason"] == "prompt_fills_context" and samples["p2"]["num_tokens"] == 0
    assert not samples["p2"]["correct"] and samples["p0"]["max_new_tokens"] == 104
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["max_new_tokens"] == {
        "requested_max_tokens": 4096, "context_tokens": 128, "capped_problems": 3, "prompt_fills_context": 1,
        "smallest_limit": 0, "longest_prompt_tokens": 200}
    assert results["overall"]["problems"] == 3
    report = (out / "report.md").read_text()
    assert "| max new tokens | requested 4096; model context 128 tokens; 3 prompts leave less room (the least: 0), " \
           "so each batch is capped at the room its longest prompt leaves" in report


def test_missing_chat_template_warns_and_outputs_say_which_prompt(tiny_model_dir, tmp_path, capsys):
    from transformers import AutoTokenizer

    model = tmp_path / "no-template"
    model.mkdir()
    for file in tiny_model_dir.iterdir():
        if file.suffix in (".json", ".safetensors") and not file.name.startswith("tokenizer"):
            (model / file.name).write_bytes(file.read_bytes())
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.chat_template = None
    tokenizer.save_pretrained(model)
    (model / "chat_template.jinja").unlink(missing_ok=True)
    data = _problems_file(tmp_path / "p.jsonl", ["1+1="])
    out = tmp_path / "eval"
    assert cli.main(["--model", str(model), "--out", str(out), "--data", str(data), "--max-tokens", "8",
                     "--instruction", "Box it.", "--no-progress", "--grader-workers", "1"]) == 0
    assert "warning: the model's tokenizer has no chat template" in capsys.readouterr().err
    settings = json.loads((out / "results.json").read_text())["settings"]
    assert settings["prompt"]["chat_template"] is False and settings["prompt"]["instruction"] == "Box it."
    assert settings["prompt_format"].startswith("raw text") and settings["prompt_example"] == "1+1=\n\nBox it."
    report = (out / "report.md").read_text()
    assert "| prompt | raw text: problem, blank line, instruction (no chat template);" in report
    assert "instruction: `Box it.`" in report and "```text\n1+1=\n\nBox it.\n```" in report
    # with a template, the outputs name it
    out2 = tmp_path / "eval2"
    assert cli.main(["--model", str(tiny_model_dir), "--out", str(out2), "--data", str(data), "--max-tokens", "8",
                     "--no-progress", "--grader-workers", "1"]) == 0
    assert "no chat template" not in capsys.readouterr().err
    settings = json.loads((out2 / "results.json").read_text())["settings"]
    assert settings["prompt_format"].startswith("the tokenizer's chat template (sha256 ")
    assert settings["prompt"]["template_sha256"].startswith(settings["prompt_format"].split("sha256 ")[1][:12])


def test_math500_for_tests_falls_back_with_a_reason(tmp_path, monkeypatch):
    import datasets
    import math500_data

    monkeypatch.setenv("ALIGNRL_CACHE", str(tmp_path / "cache"))
    missing = tmp_path / "no-shared" / "test.jsonl"
    monkeypatch.setattr(math500_data, "hub_reachable", lambda timeout=3.0: False)
    path, reason = math500_data.find_math500(missing)
    assert path is None and "hub is not reachable" in reason and "shared/" in reason
    monkeypatch.setattr(math500_data, "hub_reachable", lambda timeout=3.0: True)

    def broken(*args, **kwargs):
        raise ConnectionError("hub down")

    monkeypatch.setattr(datasets, "load_dataset", broken)
    path, reason = math500_data.find_math500(missing)
    assert path is None and "ConnectionError: hub down" in reason
    assert not (tmp_path / "cache" / "math500" / "test.jsonl").exists()
    rows = [{"problem": "1+1?", "answer": "2", "unique_id": "a"}]
    monkeypatch.setattr(datasets, "load_dataset", lambda name, split: rows if (name, split) == (
        "HuggingFaceH4/MATH-500", "test") else None)
    path, source = math500_data.find_math500(missing)
    assert source == "hub" and load_problems(str(path))[0][0]["unique_id"] == "a"
    monkeypatch.setattr(datasets, "load_dataset", broken)
    assert math500_data.find_math500(missing) == (path, "cache")  # fetched once, then read from the cache


def test_hub_check_is_quick_and_respects_offline_mode(monkeypatch):
    import time

    import math500_data

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert math500_data.hub_reachable() is False
    monkeypatch.delenv("HF_HUB_OFFLINE")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens
    start = time.perf_counter()
    assert math500_data.hub_reachable(timeout=1.0) is False
    assert time.perf_counter() - start < 5
