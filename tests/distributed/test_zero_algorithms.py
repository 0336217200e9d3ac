"""Every other algorithm (RLOO, both P3O variants, demonstration-KL with its BC reference) trains two steps under
ZeRO-2 and ZeRO-3 on two CPU ranks, the ranks ending with identical parameters. (GRPO and OREAL are compared with
one process in test_zero.py.)"""

from __future__ import annotations

import pytest

from test_zero import Runs

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("deepspeed_ready")]


@pytest.mark.parametrize("config", ["zero2.yaml", "zero3.yaml"])
@pytest.mark.parametrize("algorithm", [{"name": "rloo"}, {"name": "p3o", "variant": "sep"},
                                       {"name": "p3o", "variant": "joint"}, {"name": "demo_kl", "kl_coef": 0.1}])
def test_algorithm_trains_under_zero_with_ranks_in_step(tmp_path, ds_recipe, config, algorithm):
    recipe = {**ds_recipe, "trainer": {**ds_recipe["trainer"], "max_steps": 2, "save_steps": 2},
              "eval": {"every_steps": 0}}
    runs = Runs(tmp_path, recipe)
    run = runs("r", config, algorithm)
    assert [r["step"] for r in run.metrics] == [1, 2]
    for model, params in run.params.items():
        other = run.records[1]["params"][model]
        assert all((params[k] == other[k]).all() for k in params)
