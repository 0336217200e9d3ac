"""`alignrl debate ...`: bad input is one clear line and exit status 2, and nothing is written."""

from __future__ import annotations

import pytest

from alignrl.cli import main


@pytest.mark.parametrize("argv, expected", [
    (["debate", "judge", "missing.yaml"], "missing.yaml: recipe file not found"),
    (["debate", "judge", "reward_models/debate_judge_quickstart.yaml", "judge.subset=some"],
     "key 'judge.subset'"),
    (["debate", "selfplay", "recipes/debate/selfplay_quickstart.yaml", "--judge", "nope", "--out", "OUT"],
     "--judge nope: not a judge folder"),
    (["debate", "table", "--out", "OUT", "--seeds", "5", "--bc", "no/bc{seed}"],
     "--bc no/bc5: not found"),
])
def test_bad_input_is_one_line_and_status_2(argv, expected, capsys, tmp_path, monkeypatch):
    if argv[1] == "table":  # recipes are read relative to the repository; the table needs no recipe here
        monkeypatch.chdir(tmp_path)
    argv = [str(tmp_path / "out") if a == "OUT" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("alignrl debate: error: ") and expected in err[-1]
    assert not (tmp_path / "out").exists()
