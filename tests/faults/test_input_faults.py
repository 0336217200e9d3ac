"""Unusable output folders, bad bytes in data files, failed starts (issue 17 items 2 and 5, issue 18 item 2).

Each error is one line naming the file (and line or row) and comes before the model is loaded where it can.
"""

from __future__ import annotations

import json
import os
import re

import pytest

import alignrl.components
from alignrl.checkpoint import list_checkpoints
from alignrl.config import load_config
from alignrl.data import DataError, load_rows
from alignrl.evaluation.math500 import load_problems
from alignrl.loop import train
from alignrl.rewards import Reward, register_reward
from alignrl.run_dir import RunDirError
from fault_helpers import cli, snapshot, tmpfs, write_recipe


@register_reward("test_setup_fails")
class SetupFails(Reward):
    """A reward whose set-up fails after the run folder was claimed (a failed start)."""

    def setup(self, context):
        raise RuntimeError("the reward's model could not be loaded")

    def score(self, inputs):
        raise AssertionError("never scored")


@pytest.fixture()
def no_model_loading(monkeypatch):
    """Loading the tokenizer or the model fails the test: the check must come first."""
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the output folder was checked")

    monkeypatch.setattr(alignrl.components, "load_tokenizer", refuse)
    monkeypatch.setattr(alignrl.components, "load_policy", refuse)


def test_output_dir_that_is_a_file(small_recipe, tmp_path, no_model_loading):
    target = tmp_path / "run"
    target.write_text("my notes\n")
    with pytest.raises(RunDirError, match=r"run: the output folder is a file, not a folder; choose another"):
        train(load_config(base=small_recipe()))
    recipe = small_recipe(output_dir=str(target / "inside"))
    with pytest.raises(RunDirError, match=r"inside: cannot create the output folder: .*run is a file, not a folder"):
        train(load_config(base=recipe))
    assert target.read_text() == "my notes\n"


def test_read_only_filesystem_is_detected_before_loading(small_recipe, tmp_path, no_model_loading):
    with tmpfs(tmp_path / "ro", "64k", read_only=True) as mount:
        recipe = small_recipe(output_dir=str(mount / "run"))
        with pytest.raises(RunDirError, match=r"ro/run: cannot write in .*ro \(Read-only file system\); choose a "
                                              r"writable output folder"):
            train(load_config(base=recipe))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through folder permissions")
def test_read_only_folder_is_detected_before_loading(small_recipe, tmp_path, no_model_loading):
    folder = tmp_path / "locked"
    folder.mkdir(mode=0o555)
    with pytest.raises(RunDirError, match=r"cannot write in .*locked \(Permission denied\)"):
        train(load_config(base=small_recipe(output_dir=str(folder / "run"))))


@pytest.mark.parametrize("suffix,content,where", [
    (".jsonl", b'{"prompt": "1+1=", "answer": "2"}\n{"prompt": "2+2\xff=", "answer": "4"}\n',
     "line 2: not valid UTF-8 (byte 0xff at column 16)"),
    (".json", b'[{"prompt": "1+1=", "answer": "2"},\n {"prompt": "\xc3(", "answer": "4"}]\n',
     "line 2: not valid UTF-8 (byte 0xc3 at column 14)"),
    (".csv", b"prompt,answer\n1+1=,2\n2+2=,\xfe\n", "line 3: not valid UTF-8 (byte 0xfe at column 6)"),
])
def test_invalid_utf8_names_the_file_and_line(tmp_path, suffix, content, where):
    path = tmp_path / f"data{suffix}"
    path.write_bytes(content)
    with pytest.raises(DataError, match=re.escape(f"data{suffix}, {where}; save the file as UTF-8")) as caught:
        load_rows(str(path))
    assert "\n" not in str(caught.value)


def test_invalid_utf8_in_math500_data(tmp_path):
    path = tmp_path / "math.jsonl"
    path.write_bytes(json.dumps({"problem": "1+1", "answer": "2"}).encode() + b"\n" +
                     b'{"problem": "\x80", "answer": "1"}\n')
    with pytest.raises(DataError, match=r"math.jsonl, line 2: not valid UTF-8 \(byte 0x80 at column 14\)"):
        load_problems(str(path))


def test_lone_surrogate_in_a_prompt_names_the_file_and_row(small_recipe, tmp_path):
    data = tmp_path / "surrogate.jsonl"
    data.write_text('{"prompt": "1+1=", "answer": "2"}\n{"prompt": "2\\ud800+2=", "answer": "4"}\n')
    recipe = small_recipe()
    recipe["data"]["train"] = str(data)
    with pytest.raises(DataError, match=r"surrogate.jsonl, row 1: 'prompt' holds a lone UTF-16 surrogate "
                                        r"\('\\ud800' at character 1\)"):
        train(load_config(base=recipe))
    assert not (tmp_path / "run").exists(), "bad data is found before the run folder is created"


@pytest.mark.parametrize("fault", ["file_as_output", "invalid_utf8", "surrogate"])
def test_cli_prints_one_line_and_exits_2(small_recipe, tmp_path, fault):
    recipe = small_recipe()
    if fault == "file_as_output":
        (tmp_path / "run").write_text("x")
        expected = "the output folder is a file"
    elif fault == "invalid_utf8":
        recipe["data"]["train"] = str(tmp_path / "bad.jsonl")
        (tmp_path / "bad.jsonl").write_bytes(b'{"prompt": "\xff", "answer": "1"}\n')
        expected = "bad.jsonl, line 1: not valid UTF-8"
    else:
        recipe["data"]["train"] = str(tmp_path / "bad.jsonl")
        (tmp_path / "bad.jsonl").write_text('{"prompt": "\\udfff", "answer": "1"}\n')
        expected = "bad.jsonl, row 0: 'prompt' holds a lone UTF-16 surrogate"
    done = cli("train", str(write_recipe(tmp_path / "recipe.yaml", recipe)))
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("alignrl train: error: ") and expected in last, last


def test_a_failed_start_never_blocks_a_rerun(small_recipe, tmp_path):
    """A start that fails after claiming the folder leaves no checkpoint and no metrics: the plain command reruns
    it; ``--resume`` says there is nothing to resume and names the plain command, which then works."""
    recipe = small_recipe(max_steps=1)
    recipe["reward"]["functions"] = [{"name": "test_setup_fails"}]
    with pytest.raises(RuntimeError, match="could not be loaded"):
        train(load_config(base=recipe))
    run = tmp_path / "run"
    if run.exists():  # the folder exists unless set-up checks move before the claim
        assert not list_checkpoints(run) and not (run / "metrics.jsonl").exists()
    recipe["reward"]["functions"] = [{"name": "test_length"}]
    with pytest.raises(RunDirError, match=r"nothing to resume: the folder holds no complete checkpoint; run the "
                                          r"same command without --resume to start it"):
        train(load_config(base=recipe), resume=True)
    train(load_config(base=recipe))
    assert [p.name for p in list_checkpoints(run)] == ["checkpoint-000001"]


def test_leftovers_of_a_failed_start_do_not_block(small_recipe, tmp_path):
    run = tmp_path / "run"
    (run / "tensorboard").mkdir(parents=True)
    (run / ".tmp-checkpoint-000001").mkdir()
    for name, text in [("run_config.yaml", "old: 1\n"), ("rewards.json", "[]"), ("metrics.jsonl", "\n")]:
        (run / name).write_text(text)
    train(load_config(base=small_recipe(max_steps=1)))
    assert [p.name for p in list_checkpoints(run)] == ["checkpoint-000001"]


def test_a_folder_with_logged_steps_but_no_checkpoint_still_blocks(small_recipe, tmp_path):
    """Logged steps are a run's output: only the advice that works (overwrite) is given, and it works."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(json.dumps({"step": 1, "reward_mean": 0.5}) + "\n")
    before = snapshot(run)
    recipe = small_recipe(max_steps=1)
    with pytest.raises(RunDirError, match=r"already holds a run or other files; pass "
                                          r"trainer.overwrite_output_dir=true to start over") as caught:
        train(load_config(base=recipe))
    assert "--resume" not in str(caught.value)
    with pytest.raises(RunDirError, match=r"nothing to resume.*pass trainer.overwrite_output_dir=true"):
        train(load_config(base=recipe), resume=True)
    assert snapshot(run) == before
    train(load_config(base=recipe, overrides=["trainer.overwrite_output_dir=true"]))
    assert [p.name for p in list_checkpoints(run)] == ["checkpoint-000001"]
