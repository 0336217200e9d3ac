"""``alignrl compare``: equal-budget validation, bad inputs, the Welch test, and a real 2 methods x 2 seeds run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from alignrl.cli import main
from alignrl.compare import (CompareError, default_methods, merge_overlay, plan_cells, rollout_budget, welch)

METHODS = Path(__file__).resolve().parents[1] / "recipes" / "compare"


@pytest.fixture()
def setup(base_recipe, tiny_model_dir, prompt_files, tmp_path) -> dict[str, Path]:
    """A fake per-seed BC folder (the tiny model) and data folder, and a 2-step base recipe."""
    for seed in (0, 1):
        shutil.copytree(tiny_model_dir, tmp_path / f"seed{seed}" / "bc")
        data = tmp_path / f"seed{seed}" / "data"
        data.mkdir()
        shutil.copy(prompt_files["train"], data / "rl_prompts.jsonl")
        shutil.copy(prompt_files["eval"], data / "heldout.jsonl")
    base_recipe["rollout"].update(prompts_per_step=2, n=4)
    base_recipe["trainer"].update(max_steps=2, save_steps=1)
    base_recipe["eval"].update(every_steps=1, max_prompts=4)
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump(base_recipe))
    return {"base": base, "bc": tmp_path / "seed{seed}" / "bc", "data": tmp_path / "seed{seed}" / "data",
            "out": tmp_path / "compare"}


def _argv(setup: dict[str, Path], *extra: str) -> list[str]:
    return ["compare", "--base", str(setup["base"]), "--bc", str(setup["bc"]), "--data", str(setup["data"]),
            "--out", str(setup["out"]), *extra]


def _err_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def test_two_methods_two_seeds_write_the_report_and_a_rerun_skips(setup, capsys, monkeypatch):
    argv = _argv(setup, "--methods", str(METHODS / "grpo.yaml"), str(METHODS / "p3o_v1.yaml"), "--seeds", "0", "1",
                 "--kl-prompts", "4", "trainer.lr=1e-3")
    assert main(argv) == 0
    lines = _err_lines(capsys)
    assert sum("running" in line for line in lines) == 4 and sum("done in" in line for line in lines) == 4
    assert any("running grpo seed 1 -> " in line and line.endswith(" ...") for line in lines)
    assert any("grpo seed 1 done in " in line and ": pass@1 " in line for line in lines)
    out = setup["out"]
    for method in ("grpo", "p3o_v1"):
        for seed in (0, 1):
            run = out / method / f"seed{seed}"
            saved = yaml.safe_load((run / "run_config.yaml").read_text())
            assert saved["model"]["path"] == str(setup["bc"]).format(seed=seed) and saved["model"]["reference"] is None
            assert saved["data"]["train"].endswith(f"seed{seed}/data/rl_prompts.jsonl")
            assert saved["trainer"]["seed"] == seed and saved["algorithm"]["name"] == method.split("_")[0]
    assert (out / "bc_seed0.json").is_file() and (out / "bc_seed1.json").is_file()

    report = json.loads((out / "compare.json").read_text())
    summary = report["summary"]
    assert summary["budget"] == 16 and list(summary["methods"]) == ["grpo", "p3o_v1"]
    for row in summary["methods"].values():
        assert row["pass_at_1"]["n"] == 2 and len(row["per_seed"]) == 2
        assert row["samples_used"]["mean"] == 16 and row["kl_source"] == "heldout" and row["kl_to_bc"]["mean"] >= 0
        assert [p["samples"] for p in row["curve"]] == [8, 16] and row["wall_seconds"]["mean"] > 0
    for cell in report["cells"]:
        assert cell["kl_heldout"]["prompts"] == 4 and cell["wall_seconds"] > 0 and len(cell["curve"]) == 2
    assert len(summary["pairs"]) == 1 and summary["pairs"][0]["test"] is not None
    table = (out / "compare.md").read_text()
    assert "alignrl compare --base" in table and "| grpo |" in table and "| BC (start) |" in table
    assert "grpo vs p3o_v1:" in table and "Welch" in table
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # an interrupted cell (last checkpoint at step 1 of 2) resumes; the finished ones are skipped
    cut = out / "grpo" / "seed1"
    shutil.rmtree(cut / "checkpoint-000002")
    (cut / "compare_result.json").unlink()
    clock_at_1 = json.loads((cut / "compare_clock.json").read_text())["1"]
    assert main(argv) == 0
    lines = _err_lines(capsys)
    assert sum("finished, skipped" in line for line in lines) == 3
    assert sum("resuming grpo seed 1" in line for line in lines) == 1
    resumed = json.loads((out / "compare.json").read_text())
    cell = next(c for c in resumed["cells"] if c["method"] == "grpo" and c["seed"] == 1)
    assert cell["status"] == "resume" and cell["wall_seconds"] > clock_at_1 and cell["samples_used"] == 16
    summary = resumed["summary"]

    # rerun: every cell finished -> nothing trains or evaluates again, same figures
    def must_not_run(*args, **kwargs):
        raise AssertionError("a finished cell was rerun or re-evaluated")

    monkeypatch.setattr("alignrl.loop.train", must_not_run)
    monkeypatch.setattr("alignrl.quickstart.run.evaluate_model", must_not_run)
    assert main(argv) == 0
    assert sum("finished, skipped" in line for line in _err_lines(capsys)) == 4
    assert json.loads((out / "compare.json").read_text())["summary"] == summary


def test_equal_budget_is_enforced(setup, tmp_path):
    base, bc, data = str(setup["base"]), str(setup["bc"]), str(setup["data"])
    unequal = tmp_path / "p3o_k2.yaml"
    unequal.write_text(yaml.safe_dump({"algorithm": {"name": "p3o"}, "rollout": {"n": 2}}))
    with pytest.raises(CompareError, match=r"p3o_k2.yaml: unequal rollout budget.*= 8 completions.*= 16"):
        plan_cells(base, [unequal], bc, data, [0], tmp_path / "out", [])
    equal = tmp_path / "p3o_k2_long.yaml"
    equal.write_text(yaml.safe_dump({"algorithm": {"name": "p3o"}, "rollout": {"n": 2}, "trainer": {"max_steps": 4}}))
    cells, base_config = plan_cells(base, [equal], bc, data, [0, 1], tmp_path / "out", [])
    assert [rollout_budget(c.config)[0] for c in cells] == [16, 16] == [rollout_budget(base_config)[0]] * 2
    assert not (tmp_path / "out").exists()


def test_shipped_method_overlays_are_valid_and_merge_replaces_the_algorithm(setup, tmp_path):
    names = [p.stem for p in default_methods()]
    assert {"grpo", "rloo", "p3o_v1", "p3o_v2", "demo_kl"} <= set(names)
    cells, _ = plan_cells(str(setup["base"]), default_methods(), str(setup["bc"]), str(setup["data"]), [0],
                          tmp_path / "out", [])
    assert {c.method: c.config.algorithm.name for c in cells}["p3o_v2"] == "p3o"
    assert {c.method: c.config.algorithm.params for c in cells}["p3o_v2"].variant == "joint"
    merged = merge_overlay({"algorithm": {"name": "grpo", "scale_rewards": False}, "trainer": {"lr": 1, "seed": 2}},
                           {"algorithm": {"name": "p3o"}, "trainer": {"lr": 3}})
    assert merged == {"algorithm": {"name": "p3o"}, "trainer": {"lr": 3, "seed": 2}}


@pytest.mark.parametrize("change, named", [
    ({"bc": "/no/such/seed{seed}/bc"}, "--bc"),
    ({"data": "/no/such/seed{seed}/data"}, "--data"),
    ({"methods": ["recipes/compare/no_such_method.yaml"]}, "--methods"),
    ({"overrides": ["trainer.seed=3"]}, "trainer.seed"),
    ({"methods": ["UNEQUAL"]}, "unequal rollout budget"),
    ({"overrides": ["algorithm.no_such_key=1"]}, "no_such_key"),
    ({"seeds": ["x"]}, "--seeds"),
])
def test_bad_inputs_give_one_line_before_anything_runs(setup, tmp_path, capsys, change, named):
    (tmp_path / "unequal.yaml").write_text(yaml.safe_dump({"algorithm": {"name": "grpo"}, "rollout": {"n": 8}}))
    methods = [str(tmp_path / "unequal.yaml") if m == "UNEQUAL" else m
               for m in change.get("methods", [str(METHODS / "grpo.yaml")])]
    argv = ["compare", "--base", str(setup["base"]), "--bc", change.get("bc", str(setup["bc"])),
            "--data", change.get("data", str(setup["data"])), "--out", str(setup["out"]), "--methods", *methods,
            "--seeds", *change.get("seeds", ["0", "1"]), *change.get("overrides", [])]
    assert main(argv) == 2
    lines = _err_lines(capsys)
    assert len(lines) == 1 and lines[0].startswith("alignrl compare: error:") and named in lines[0], lines
    assert not setup["out"].exists()


def test_welch():
    test = welch([0.70, 0.72, 0.69], [0.60, 0.62, 0.65])
    assert test["t"] == pytest.approx(4.7068, abs=1e-3) and test["df"] == pytest.approx(3.2976, abs=1e-3)
    assert test["p"] == pytest.approx(0.01464, abs=2e-4)
    assert welch([0.5], [0.4, 0.6]) is None
    assert welch([1.0, 1.0], [1.0, 1.0])["p"] == 1.0 and welch([1.0, 1.0], [0.0, 0.0])["p"] == 0.0
