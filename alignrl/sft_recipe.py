"""``alignrl sft RECIPE.yaml``: behaviour cloning on demonstrations, configured like an RL recipe.

Recipe sections: ``model`` (the starting model), ``data`` (demonstrations with a prompt and a completion
column), ``sft`` (:class:`alignrl.sft.SFTParams`), and ``output_dir``. The result is a Hugging Face model folder
that an RL recipe's ``model.path`` (or demo-KL's ``model.reference``) points at.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from alignrl.config.loader import apply_override, check_paths, read_yaml
from alignrl.config.schema import ModelConfig
from alignrl.config.typed import build_dataclass
from alignrl.data import DataError, load_rows
from alignrl.sft import SFTParams


@dataclass
class SFTDataConfig:
    train: str  # JSON/JSONL/Parquet/CSV file or hub dataset of demonstrations
    split: str = "train"
    prompt_field: str = "prompt"
    completion_field: str = "completion"


@dataclass
class SFTRunConfig:
    model: ModelConfig
    data: SFTDataConfig
    sft: SFTParams = field(default_factory=SFTParams)
    output_dir: str = "runs/sft"
    overwrite_output_dir: bool = False


def load_sft_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> SFTRunConfig:
    data = read_yaml(path)
    for override in overrides:
        apply_override(data, override)
    source = str(path) + (" (with command-line overrides)" if overrides else "")
    config = build_dataclass(SFTRunConfig, data, "", source)
    check_paths(config, source)
    return config


# files that mark a folder as holding a trained (or partly saved) model; a folder without them never blocks a rerun
MODEL_FILES = ("config.json", "model.safetensors", "pytorch_model.bin", "sft_params.json", "trainer_state.json")


def check_output_dir(path: str | Path, overwrite: bool) -> None:
    """Refuse a folder that holds a model unless ``overwrite``; a folder left by a failed start is reused."""
    from alignrl.run_dir import RunDirError, check_writable

    path = Path(path)
    check_writable(path)  # a file, or a folder this process cannot write in
    held = [name for name in MODEL_FILES if (path / name).exists()]
    if held and not overwrite:
        raise RunDirError(f"{path}: the folder already holds a model ({', '.join(held)}); pass "
                          f"overwrite_output_dir=true to start over (its contents will be deleted), or choose "
                          f"another output_dir=FOLDER")


def run_sft_recipe(config: SFTRunConfig) -> Path:
    """Validate the demonstrations, refuse to clobber a previous run, train, and return the model folder."""
    from alignrl.learner.models import load_causal_lm, load_tokenizer
    from alignrl.run_dir import claim_run_dir
    from alignrl.sft import run_sft

    from alignrl.logging.metrics import LOGGER_REQUIREMENTS
    from alignrl.requirements import as_requirements, check

    for logger in config.sft.report_to:
        check(f"logger '{logger}'", "sft.report_to", as_requirements(LOGGER_REQUIREMENTS.get(logger, ())))
    check_output_dir(config.output_dir, config.overwrite_output_dir)
    rows = load_rows(config.data.train, config.data.split)
    if not rows:
        raise DataError(f"{config.data.train}: the dataset is empty")
    demos = []
    for index, row in enumerate(rows):
        for key in (config.data.prompt_field, config.data.completion_field):
            if not isinstance(row.get(key), str):
                raise DataError(f"{config.data.train}, row {index}: expected a string in '{key}'")
        demos.append({"prompt": row[config.data.prompt_field], "completion": row[config.data.completion_field]})
    tokenizer = load_tokenizer(config.model)
    model = load_causal_lm(config.model.path, config.model, "model.path")
    from accelerate import PartialState

    state = PartialState()
    claim_run_dir(config.output_dir, resume=False, overwrite=config.overwrite_output_dir,
                  is_main=state.is_main_process)
    state.wait_for_everyone()
    return run_sft(model, tokenizer, demos, config.output_dir, config.sft)
