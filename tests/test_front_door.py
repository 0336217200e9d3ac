"""The front door (issue 18): every fix an error suggests works when applied; a missing optional package stops a
run before its folder exists; only what a run uses is validated; plot, help and quickstart-report wording."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
from pathlib import Path

import pytest
import yaml

from alignrl import cli
from alignrl.quickstart.task import make_demonstrations, make_prompts

from conftest import write_jsonl

FRESH = "<fresh folder>"


def suggested_fixes(message: str) -> list[list[str]]:
    """The command-line fixes an error message suggests, each as the arguments to add to the failed command:
    flags (``--resume``), ``key=value`` overrides, ``set key: value`` (as ``key=value``) and "another --flag"
    (the flag with a fresh folder); "without --flag" is the same command without it. Upper-case placeholders
    (``FOLDER``, ``PATH``) are left for the caller."""
    fixes: list[list[str]] = []
    for match in re.finditer(r"without (--[a-z][\w-]*)|another (--[a-z][\w-]*)|set ([a-z_][\w.]*): (\S+?)[;,)]?"
                             r"(?:\s|$)|(?<![\w-])(--[a-z][\w-]*(?: [A-Z]+)?)|(?<![\w.-])([a-z_][\w.]*=[\w.\[\]-]+)",
                             message):
        without, another, set_key, set_value, flag, override = match.groups()
        if without:
            fixes.append(["without", without])
        elif another:
            fixes.append([another, FRESH])
        elif set_key:
            fixes.append([f"{set_key}={set_value}"])
        elif flag:
            fixes.append(flag.split())
        else:
            fixes.append([override])
    return fixes


def apply(fix: list[str], values: dict[str, str]) -> list[str]:
    """``fix`` with placeholders replaced: the FRESH marker and upper-case words by ``values``."""
    out = []
    for arg in fix:
        for placeholder, value in values.items():
            arg = re.sub(rf"(?<![\w<]){re.escape(placeholder)}(?![\w>])", value, arg)
        out.append(arg)
    return out


def with_fix(argv: list[str], fix: list[str]) -> list[str]:
    """The failed command with ``fix`` applied: its arguments added, or (``["without", flag]``) the flag removed."""
    if fix[0] == "without":
        return [arg for arg in argv if arg != fix[1]]
    return [*argv, *fix]


def run_main(argv: list[str], capsys) -> tuple[int, str]:
    capsys.readouterr()
    code = cli.main(argv)
    return code, capsys.readouterr().err


def one_error_line(err: str, command: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith(f"alignrl {command}: error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_suggested_fixes_parses_every_advice_form():
    assert suggested_fixes("x: pass --resume to continue it, or trainer.overwrite_output_dir=true to start") == \
        [["--resume"], ["trainer.overwrite_output_dir=true"]]
    assert suggested_fixes("use another --out, or --overwrite to start over") == [["--out", FRESH], ["--overwrite"]]
    assert suggested_fixes("holds chat messages: set data.use_chat_template: true") == \
        [["data.use_chat_template=true"]]
    assert suggested_fixes("pass --data PATH to a local file") == [["--data", "PATH"]]
    assert suggested_fixes("choose another output_dir=FOLDER") == [["output_dir=FOLDER"]]
    assert suggested_fixes("run the same command without --resume to start it") == [["without", "--resume"]]


@pytest.fixture()
def recipe_file(base_recipe, tmp_path) -> Path:
    recipe = {**base_recipe, "trainer": {**base_recipe["trainer"], "max_steps": 2, "save_steps": 1}}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_train_every_suggested_fix_works(recipe_file, tmp_path, capsys):
    import shutil

    recipe = yaml.safe_load(recipe_file.read_text())
    out = Path(recipe["trainer"]["output_dir"])
    assert run_main(["train", str(recipe_file)], capsys)[0] == 0
    failed_start = tmp_path / "failed-start"  # what a start that failed after claiming its folder leaves
    failed_start.mkdir()
    shutil.copy(out / "run_config.yaml", failed_start / "run_config.yaml")
    cases = {"a finished run": [str(recipe_file)],
             "--resume with nothing to resume": [str(recipe_file), f"trainer.output_dir={failed_start}", "--resume"]}
    for name, args in cases.items():
        code, err = run_main(["train", *args], capsys)
        if code == 0:  # a folder with nothing in it to lose may simply be used: no advice to test
            assert name == "--resume with nothing to resume", err
            continue
        assert code == 2, err
        fixes = suggested_fixes(one_error_line(err, "train"))
        assert fixes, err
        for fix in fixes:
            folder = str(tmp_path / "other")
            shutil.rmtree(folder, ignore_errors=True)
            code, err = run_main(with_fix(["train", *args], apply(fix, {FRESH: folder, "FOLDER": folder})), capsys)
            assert code == 0, f"{name}: the suggested fix {fix} failed: {err}"


def test_sft_into_a_used_folder_every_suggested_fix_works(tiny_model_dir, tmp_path, capsys):
    demos = write_jsonl(tmp_path / "demos.jsonl", make_demonstrations(32, seed=0))
    recipe = tmp_path / "sft.yaml"
    recipe.write_text(yaml.safe_dump({
        "model": {"path": str(tiny_model_dir)}, "data": {"train": str(demos)},
        "sft": {"max_steps": 1, "per_device_train_batch_size": 8, "learning_rate": 1e-3},
        "output_dir": str(tmp_path / "bc")}))
    assert run_main(["sft", str(recipe)], capsys)[0] == 0
    code, err = run_main(["sft", str(recipe)], capsys)
    assert code == 2
    line = one_error_line(err, "sft")
    assert "--resume" not in line and "trainer." not in line  # what `alignrl sft` does not take
    fixes = suggested_fixes(line)
    assert ["overwrite_output_dir=true"] in fixes
    for number, fix in enumerate(fixes):
        folder = str(tmp_path / f"bc-{number}")
        code, err = run_main(with_fix(["sft", str(recipe)], apply(fix, {FRESH: folder, "FOLDER": folder})), capsys)
        assert code == 0, f"the suggested fix {fix} failed: {err}"


def test_sft_folder_without_a_model_never_blocks_a_rerun(tiny_model_dir, tmp_path, capsys):
    from alignrl.sft_recipe import check_output_dir

    failed_start = tmp_path / "bc"
    failed_start.mkdir()
    (failed_start / "runs").mkdir()  # what a start that failed before saving may leave
    check_output_dir(failed_start, overwrite=False)
    (failed_start / "config.json").write_text("{}")
    with pytest.raises(Exception, match="already holds a model"):
        check_output_dir(failed_start, overwrite=False)


def test_eval_math500_every_suggested_fix_works(tiny_model_dir, tmp_path, capsys, monkeypatch):
    import datasets

    data = write_jsonl(tmp_path / "p.jsonl", [{"problem": "1+1=", "answer": "2"}, {"problem": "2+2=", "answer": "4"}])
    base = ["eval", "math500", "--model", str(tiny_model_dir), "--data", str(data), "--max-tokens", "4",
            "--no-progress", "--grader-workers", "1", "--instruction", ""]
    out = str(tmp_path / "eval")
    assert run_main([*base, "--out", out], capsys)[0] == 0
    cases = [[*base, "--out", out, "--temperature", "0.5"]]  # a run with other settings in the folder
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "mine.txt").write_text("mine")
    cases.append([*base, "--out", str(foreign)])  # a folder that is not an evaluation

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    no_data = [arg for i, arg in enumerate(base) if arg != "--data" and base[i - 1] != "--data"]
    cases.append([*no_data, "--out", str(tmp_path / "hub")])  # the hub dataset is out of reach
    for number, argv in enumerate(cases):
        code, err = run_main(argv, capsys)
        assert code == 2, err
        fixes = suggested_fixes(one_error_line(err, "eval math500"))
        assert fixes, err
        for index, fix in enumerate(fixes):
            values = {FRESH: str(tmp_path / f"fresh-{number}-{index}"), "PATH": str(data)}
            code, err = run_main(with_fix(argv, apply(fix, values)), capsys)
            assert code == 0, f"the suggested fix {fix} for {argv} failed: {err}"
    assert (foreign / "mine.txt").read_text() == "mine"


def test_chat_messages_without_template_the_suggested_key_works(base_recipe, tmp_path, capsys):
    chats = [{"prompt": [{"role": "user", "content": r["prompt"]}], "answer": r["answer"]}
             for r in make_prompts(8, seed=0, split="train")]
    recipe = {**base_recipe, "data": {"train": str(write_jsonl(tmp_path / "chats.jsonl", chats))},
              "trainer": {**base_recipe["trainer"], "max_steps": 1}, "eval": {"every_steps": 0}}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    code, err = run_main(["train", str(path)], capsys)
    assert code == 2
    fixes = suggested_fixes(one_error_line(err, "train"))
    assert fixes == [["data.use_chat_template=true"]], err
    assert run_main(with_fix(["train", str(path)], fixes[0]), capsys)[0] == 0


def tiny_quickstart_settings():
    from alignrl.quickstart.run import QuickstartSettings  # the real class, imported before the monkeypatch
    from alignrl.quickstart.task import TaskSpec
    from alignrl.quickstart.tiny_model import quickstart_sft_params

    settings = QuickstartSettings(task=TaskSpec(n_demonstrations=64, n_heldout=8), model_preset="test",
                                  sft=quickstart_sft_params(max_steps=2, per_device_train_batch_size=32,
                                                            progress_bar=True),
                                  rl_prompts=16)
    settings.grpo["rollout"].update(prompts_per_step=4, n=2)
    settings.grpo["trainer"].update(max_steps=1, micro_batch_size=8)
    settings.grpo["eval"].update(every_steps=1, max_prompts=4)
    return settings


def test_quickstart_every_suggested_fix_works(tmp_path, capsys, monkeypatch):
    from alignrl.quickstart import run as quickstart

    tiny = tiny_quickstart_settings()
    monkeypatch.setattr(quickstart, "QuickstartSettings", lambda: dataclasses.replace(
        tiny, grpo=json.loads(json.dumps(tiny.grpo))))
    out = tmp_path / "qs"
    assert run_main(["quickstart", "--out", str(out)], capsys)[0] == 0
    report = (out / "report.md").read_text()
    assert "(all 8 held-out prompts)" in report and "first 4 of the 8 held-out prompts" in report
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    for number, argv in enumerate([["quickstart", "--out", str(out)], ["quickstart", "--out", str(mine)]]):
        code, err = run_main(argv, capsys)
        assert code == 2
        fixes = suggested_fixes(one_error_line(err, "quickstart"))
        assert fixes, err
        for index, fix in enumerate(fixes):
            code, err = run_main(with_fix(argv, apply(fix, {FRESH: str(tmp_path / f"fresh-{number}-{index}")})),
                                 capsys)
            assert code == 0, f"the suggested fix {fix} for {argv} failed: {err}"
    assert (mine / "thesis.tex").read_text() == "years of work"  # a folder that is not a quickstart is kept


# --- a choice whose package is missing fails before the run folder exists --------------------------------------

@dataclasses.dataclass
class NeedsMissingPackage:
    REQUIRES = ("alignrl_test_package_that_is_not_installed",)


def check_missing_package_run(recipe_file, overrides, capsys, package):
    out = Path(yaml.safe_load(recipe_file.read_text())["trainer"]["output_dir"])
    code, err = run_main(["train", str(recipe_file), *overrides], capsys)
    assert code == 2
    line = one_error_line(err, "train")
    assert f"needs the package '{package}'" in line and "install it with" in line
    assert not out.exists(), "a failed start left a run folder behind"
    code, err = run_main(["train", str(recipe_file)], capsys)  # the same folder, no --resume, no overwrite
    assert code == 0, err
    return line


def test_missing_logger_package_is_one_line_before_the_folder(recipe_file, capsys):
    pytest.importorskip("alignrl")  # (wandb itself must be absent; skip where it is installed)
    import importlib.util

    if importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed here")
    line = check_missing_package_run(recipe_file, ["logging.report_to=[wandb]"], capsys, "wandb")
    assert "`ALIGNRL_EXTRAS=dev,wandb bash scripts/install.sh`" in line and "pip install 'wandb" in line


def test_engine_declaring_a_missing_package(recipe_file, capsys, monkeypatch):
    from alignrl.rollout import base

    monkeypatch.setitem(base._ENGINES, "test_needs_pkg", (lambda *a, **k: None, NeedsMissingPackage))
    line = check_missing_package_run(recipe_file, ["rollout.engine=test_needs_pkg"], capsys,
                                     "alignrl_test_package_that_is_not_installed")
    assert "rollout engine 'test_needs_pkg'" in line


def test_reward_declaring_a_missing_package_or_model(recipe_file, capsys, monkeypatch, tmp_path):
    from alignrl.rewards import Reward, RewardOutput, registry

    class NeedsPackage(Reward):
        REQUIRES = NeedsMissingPackage.REQUIRES

        def __init__(self, reward_model: str = ""):
            self.reward_model = reward_model

        def score(self, inputs):  # pragma: no cover - never reached
            return RewardOutput(scores=[0.0] * len(inputs))

    monkeypatch.setitem(registry._REWARDS, "test_needs_pkg", NeedsPackage)
    functions = "reward.functions=[{name: test_length}, {name: test_needs_pkg, weight: 0.5}]"
    check_missing_package_run(recipe_file, [functions], capsys, "alignrl_test_package_that_is_not_installed")
    monkeypatch.setattr(NeedsPackage, "REQUIRES", ())
    missing = tmp_path / "no-such-rm"
    code, err = run_main(["train", str(recipe_file), "reward.functions=[{name: test_length}, {name: test_needs_pkg, "
                          f"weight: 0.5, kwargs: {{reward_model: {missing}}}}}]"], capsys)
    assert code == 2
    assert "reward.functions[1].kwargs.reward_model': model folder not found" in one_error_line(err, "train")


def test_bt_rm_reward_model_path_is_checked_before_the_folder(recipe_file, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()  # a relative path inside a local folder is local, not a hub name
    code, err = run_main(["train", str(recipe_file), "reward.functions=[{name: bt_rm, kwargs: {path: "
                          "runs/rm_missing}}]"], capsys)
    assert code == 2
    assert "kwargs.path': model folder not found: runs/rm_missing" in one_error_line(err, "train")


def test_vllm_engine_without_vllm_names_the_install(recipe_file, capsys):
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here")
    line = check_missing_package_run(recipe_file, ["rollout.engine=vllm"], capsys, "vllm")
    assert "ALIGNRL_EXTRAS=dev,vllm bash scripts/install.sh" in line


# --- validate only what the run uses ---------------------------------------------------------------------------

def test_eval_data_is_checked_only_when_evaluation_runs(base_recipe, tmp_path):
    from alignrl.config import ConfigError, load_config

    missing = str(tmp_path / "missing.jsonl")
    config = load_config(base=base_recipe, overrides=[f"data.eval={missing}", "eval.every_steps=0"])
    assert config.data.eval == missing
    with pytest.raises(ConfigError, match="key 'data.eval': data file not found"):
        load_config(base=base_recipe, overrides=[f"data.eval={missing}", "eval.every_steps=5"])
    with pytest.raises(ConfigError, match="eval.every_steps is 5 but no held-out prompt file is set"):
        load_config(base=base_recipe, overrides=["data.eval=null", "eval.every_steps=5"])


# --- plot, help, wording ---------------------------------------------------------------------------------------

def test_plot_on_a_missing_folder_says_so(tmp_path, capsys):
    code, err = run_main(["plot", str(tmp_path / "nope")], capsys)
    assert code == 2 and "the run folder does not exist" in one_error_line(err, "plot")
    (tmp_path / "empty").mkdir()
    code, err = run_main(["plot", str(tmp_path / "empty")], capsys)
    assert code == 2 and "no metrics to plot" in err


def test_plot_labels_a_panel_that_is_always_zero(tmp_path, monkeypatch):
    import matplotlib.axes

    from alignrl.logging.plot import plot_run

    write_jsonl(tmp_path / "metrics.jsonl", [{"step": s, "reward_mean": 0.1 * s, "clip_fraction": 0.0}
                                             for s in range(1, 4)])
    titles: list[str] = []
    original = matplotlib.axes.Axes.set_title
    monkeypatch.setattr(matplotlib.axes.Axes, "set_title",
                        lambda self, label, *a, **k: (titles.append(label), original(self, label, *a, **k))[1])
    plot_run(tmp_path)
    assert titles == ["Reward", "Clip fraction — 0 at every step"]


def _walk(name: str, parser: argparse.ArgumentParser, argv: list[str]):
    """Every (command name, parser) below ``parser``; lazy commands are imported by rebuilding with their words."""
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for word, child in action.choices.items():
                words = [*argv, word]
                rebuilt = cli.build_parser(words)  # imports the module of a lazy command
                for step in words:
                    group = next(a for a in rebuilt._actions if isinstance(a, argparse._SubParsersAction))
                    rebuilt = group.choices[step]
                yield from _walk(f"{name} {word}", rebuilt, words)


def test_every_help_option_has_a_description():
    missing = [f"{name}: {action.dest}" for name, parser in _walk("alignrl", cli.build_parser([]), [])
               for action in parser._actions
               if not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction))
               and not (action.help or "").strip()]
    assert not missing, f"options without a --help description: {missing}"
