"""Bad input gives a named, clear error, and an existing run folder is left untouched."""

from __future__ import annotations

import hashlib
import json
import math

import pytest

from alignrl.config import load_config
from alignrl.data import DataError
from alignrl.loop import train
from alignrl.rewards import RewardError, register_reward
from alignrl.run_dir import RunDirError


@register_reward("test_raises")
def _raises(prompts, completions, **_):
    raise ZeroDivisionError("boom")


@register_reward("test_nan")
def _nan(prompts, completions, **_):
    return [math.nan] + [0.0] * (len(completions) - 1)


@register_reward("test_short")
def _too_few(prompts, completions, **_):
    return [1.0] * (len(completions) - 1)


def snapshot(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_model_dir, prompt_files):
    """A finished two-step run whose folder later bad runs must not touch."""
    out = tmp_path_factory.mktemp("finished") / "run"
    recipe = {"model": {"path": str(tiny_model_dir)}, "data": {"train": str(prompt_files["train"])},
              "rollout": {"prompts_per_step": 2, "n": 2, "max_new_tokens": 6},
              "reward": {"functions": [{"name": "test_length"}]},
              "trainer": {"output_dir": str(out), "max_steps": 2, "save_steps": 1},
              "logging": {"progress_bar": False}}
    train(load_config(base=recipe))
    return recipe, out


def run_bad(finished_run, overrides, resume=False, error=Exception, match=None):
    recipe, out = finished_run
    before = snapshot(out)
    with pytest.raises(error, match=match):
        train(load_config(base=recipe, overrides=overrides), resume=resume)
    assert snapshot(out) == before, "a failed run changed the existing run folder"


def test_existing_run_is_not_overwritten(finished_run):
    run_bad(finished_run, [], error=RunDirError, match="already holds a run.*--resume")


@pytest.mark.parametrize("name,match", [
    ("test_raises", r"reward 'test_raises' raised ZeroDivisionError: boom"),
    ("test_nan", r"reward 'test_nan' returned non-finite scores \(nan\) at index 0"),
    ("test_short", r"reward 'test_short' returned 3 scores for 4 completions"),
])
def test_bad_reward_functions(finished_run, name, match):
    run_bad(finished_run, [f"reward.functions=[{{name: {name}}}]", "trainer.max_steps=3"], resume=True,
            error=RewardError, match=match)


def test_unknown_reward_name(finished_run):
    run_bad(finished_run, ["reward.functions=[{name: nope}]"], resume=True, error=RewardError,
            match="unknown reward 'nope'.*module:function")


def test_reward_module_path_that_does_not_import(finished_run):
    run_bad(finished_run, ["reward.functions=[{name: 'no_such_pkg.rewards:fn'}]"], resume=True,
            error=RewardError, match="cannot import module 'no_such_pkg.rewards'")


def test_empty_dataset(finished_run, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    run_bad(finished_run, [f"data.train={empty}"], resume=True, error=DataError, match="empty.jsonl.*empty")


def test_malformed_data_row(finished_run, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "1+1=", "answer": "2"}) + "\n{not json\n")
    run_bad(finished_run, [f"data.train={bad}"], resume=True, error=DataError, match=r"bad.jsonl, line 2")


def test_missing_prompt_field(finished_run, tmp_path):
    bad = tmp_path / "fields.jsonl"
    bad.write_text(json.dumps({"question": "1+1=", "answer": "2"}) + "\n")
    run_bad(finished_run, [f"data.train={bad}"], resume=True, error=DataError,
            match=r"fields.jsonl, row 0: no 'prompt' field.*question")


def test_prompt_longer_than_context(finished_run, tmp_path):
    long = tmp_path / "long.jsonl"
    long.write_text(json.dumps({"prompt": "1+1=", "answer": "2"}) + "\n" +
                    json.dumps({"prompt": "9" * 200 + "+1=", "answer": "0"}) + "\n")
    run_bad(finished_run, [f"data.train={long}"], resume=True, error=DataError,
            match=r"long.jsonl, row 1: prompt of 203 tokens \+ max_new_tokens 6 exceeds the model context of 128")


def test_resume_without_checkpoint(tmp_path, base_recipe):
    with pytest.raises(RunDirError, match="holds no complete checkpoint"):
        train(load_config(base=base_recipe), resume=True)
