"""``alignrl sweep``: grid parsing, resumability, the frontier files, and a real 2-value sweep on the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from alignrl.checkpoint import STATE_FILE
from alignrl.cli import main
from alignrl.sweep import (Cell, SweepError, frontier_markdown, frontier_points, parse_grid, plan_cells, run_state,
                           split_seeds, summarize_run)


def _write_recipe(recipe: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(recipe))
    return path


def _stderr_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def test_sweep_runs_each_cell_writes_the_frontier_and_skips_finished_cells(base_recipe, tmp_path, capsys,
                                                                          monkeypatch):
    base_recipe["algorithm"] = {"name": "demo_kl", "kl_coef": 0.1}
    base_recipe["trainer"].update(max_steps=2, save_steps=0)
    recipe = _write_recipe(base_recipe, tmp_path / "recipe.yaml")
    out = tmp_path / "sweep"
    argv = ["sweep", str(recipe), "--grid", "algorithm.kl_coef=0,0.5", "--out", str(out), "--seeds", "3",
            "rollout.prompts_per_step=2"]
    assert main(argv) == 0
    lines = _stderr_lines(capsys)
    assert sum("running" in line for line in lines) == 2 and sum("done in" in line for line in lines) == 2

    run_dirs = [out / f"algorithm.kl_coef={v}" / "seed3" for v in ("0", "0.5")]
    for run_dir in run_dirs:
        assert (run_dir / "metrics.jsonl").is_file()
        saved = yaml.safe_load((run_dir / "run_config.yaml").read_text())  # the override after --seeds applied
        assert saved["trainer"]["seed"] == 3 and saved["rollout"]["prompts_per_step"] == 2
        assert saved["trainer"]["output_dir"] == str(run_dir)
        assert saved["algorithm"]["kl_coef"] == float(run_dir.parent.name.split("=")[1])
    frontier = json.loads((out / "frontier.json").read_text())
    assert frontier["kl_metric"] == "kl_seq" and frontier["grid"] == {"algorithm.kl_coef": ["0", "0.5"]}
    assert [p["values"] for p in frontier["points"]] == [{"algorithm.kl_coef": "0"}, {"algorithm.kl_coef": "0.5"}]
    for point in frontier["points"]:
        for metric in ("pass_at_1", "reward", "kl"):
            assert point[metric]["n"] == 1 and point[metric]["mean"] is not None, (metric, point)
    table = (out / "frontier.md").read_text()
    assert "| algorithm.kl_coef | held-out pass@1 (final) |" in table and "| 0.5 |" in table
    assert (out / "frontier.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # rerun: both cells are finished, nothing trains, no run folder is touched
    stamps = {p: p.stat().st_mtime_ns for d in run_dirs for p in d.rglob("*")}

    def must_not_train(*args, **kwargs):
        raise AssertionError("a finished cell was rerun")

    monkeypatch.setattr("alignrl.loop.train", must_not_train)
    assert main(argv) == 0
    lines = _stderr_lines(capsys)
    assert sum("finished, skipped" in line for line in lines) == 2
    assert {p: p.stat().st_mtime_ns for d in run_dirs for p in d.rglob("*")} == stamps
    assert json.loads((out / "frontier.json").read_text())["points"] == frontier["points"]


@pytest.mark.parametrize("flags, named", [
    (["--grid", "algorithm.kl_coef"], "--grid"),
    (["--grid", "algorithm.kl_coef=0,,1"], "--grid"),
    (["--grid", "=0,1"], "--grid"),
    (["--grid", "trainer.seed=0,1"], "--grid"),
    (["--grid", "a=1", "--grid", "a=2"], "--grid"),
    ([], "--grid"),
    (["--grid", "algorithm.kl_coef=0", "--seeds", "x"], "--seeds"),
    (["--grid", "algorithm.kl_coef=0", "--window", "0"], "--window"),
])
def test_bad_flags_give_one_line_naming_the_flag(base_recipe, tmp_path, capsys, flags, named):
    recipe = _write_recipe(base_recipe, tmp_path / "recipe.yaml")
    assert main(["sweep", str(recipe), "--out", str(tmp_path / "out"), *flags]) == 2
    lines = _stderr_lines(capsys)
    assert len(lines) == 1 and named in lines[0] and lines[0].startswith("alignrl sweep: error:")
    assert not (tmp_path / "out").exists()


def test_unknown_grid_key_fails_before_anything_runs(base_recipe, tmp_path, capsys):
    recipe = _write_recipe(base_recipe, tmp_path / "recipe.yaml")
    assert main(["sweep", str(recipe), "--out", str(tmp_path / "out"), "--grid", "algorithm.no_such_key=1,2"]) == 2
    lines = _stderr_lines(capsys)
    assert len(lines) == 1 and "algorithm.no_such_key" in lines[0]
    assert not (tmp_path / "out").exists()


def test_grid_product_and_folders(tmp_path):
    axes = parse_grid(["algorithm.kl_coef=0,0.1", "model.path=/a/b,c"])
    assert [(a.key, a.values) for a in axes] == [("algorithm.kl_coef", ["0", "0.1"]), ("model.path", ["/a/b", "c"])]
    cells = plan_cells(axes, [0, 1], tmp_path)
    assert len(cells) == 8
    assert cells[0].run_dir == tmp_path / "algorithm.kl_coef=0" / "model.path=_a_b" / "seed0"
    assert cells[-1].run_dir == tmp_path / "algorithm.kl_coef=0.1" / "model.path=c" / "seed1"
    with pytest.raises(SweepError, match="same folder"):
        plan_cells(parse_grid(["model.path=a/b,a_b"]), [0], tmp_path)
    assert split_seeds(["0", "2", "trainer.lr=1e-3"]) == ([0, 2], ["trainer.lr=1e-3"])
    assert split_seeds(None) == (None, [])


def _checkpoint(run_dir: Path, step: int, finished: bool) -> None:
    folder = run_dir / f"checkpoint-{step:06d}"
    folder.mkdir(parents=True)
    (folder / STATE_FILE).write_text(json.dumps({"finished": finished, "step": step}))


def test_run_state(tmp_path):
    assert run_state(tmp_path / "missing", 4) == "new"
    (tmp_path / "crashed").mkdir()
    (tmp_path / "crashed" / "metrics.jsonl").write_text("")
    assert run_state(tmp_path / "crashed", 4) == "restart"
    _checkpoint(tmp_path / "partial", 2, False)
    assert run_state(tmp_path / "partial", 4) == "resume"
    _checkpoint(tmp_path / "done", 4, True)
    assert run_state(tmp_path / "done", 4) == "finished"
    assert run_state(tmp_path / "done", 6) == "resume"  # max_steps raised since: continue the run


def test_summary_and_frontier_over_seeds(tmp_path):
    cells = []
    for seed, offset in ((0, 0.0), (1, 0.2)):
        run_dir = tmp_path / f"seed{seed}"
        run_dir.mkdir()
        records = [{"step": s, "reward_mean": s + offset, "kl_seq": 0.1 * s, "kl": 1.0} for s in range(1, 9)]
        records[3]["eval/pass_at_1"] = 0.1
        records[-1]["eval/pass_at_1"] = 0.5 + offset
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        summary = summarize_run(run_dir, "kl_seq", window=5)
        assert summary["steps"] == 8 and summary["pass_at_1"] == pytest.approx(0.5 + offset)
        assert summary["reward"] == pytest.approx(6 + offset) and summary["kl"] == pytest.approx(0.6)
        cells.append(Cell({"algorithm.kl_coef": "0.1"}, seed, run_dir, summary))
    (point,) = frontier_points(cells)
    assert point["seeds"] == [0, 1] and point["pass_at_1"]["mean"] == pytest.approx(0.6)
    assert point["pass_at_1"]["sd"] == pytest.approx(0.2 / 2 ** 0.5) and point["kl"]["sd"] == 0.0
    table = frontier_markdown({"recipe": "r.yaml", "grid": {"algorithm.kl_coef": ["0.1"]}, "kl_metric": "kl_seq",
                               "window": 5, "points": [point]})
    assert "| 0.1 | 0.6 ± 0.14 | 6.1 ± 0.14 | 0.6 ± 0 | 0 1 |" in table
