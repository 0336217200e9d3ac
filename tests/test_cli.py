"""The ``alignrl`` command: clear one-line errors with exit code 2, plots, and TensorBoard reporting."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from alignrl.config import load_config
from alignrl.loop import train

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "alignrl.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300)


def test_bad_recipe_key_is_one_clear_line(tmp_path, base_recipe):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(base_recipe))
    result = run_cli("train", str(path), "trainer.bogus=1")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"alignrl train: error: {path} (with command-line overrides): key 'trainer.bogus': unknown key" \
        in result.stderr


def test_plot_command_and_tensorboard(base_recipe, tmp_path):
    run = train(load_config(base=base_recipe, overrides=["trainer.max_steps=2", "logging.report_to=[tensorboard]"]))
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    result = run_cli("plot", str(run), "--output", str(tmp_path / "curves.png"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
