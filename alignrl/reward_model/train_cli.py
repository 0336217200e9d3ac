"""``alignrl rm train RECIPE [key=value ...] [--resume]`` and ``alignrl rm data ...``.

A reward-model recipe (see ``reward_models/*.yaml``) has the sections ``model``
(:class:`~alignrl.reward_model.train.RMModelConfig`), ``data`` (:class:`~alignrl.reward_model.train.RMDataConfig`),
``rm`` (:class:`~alignrl.reward_model.train.RMParams`) and ``output_dir``.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
from pathlib import Path

from alignrl.reward_model.train import RMRunConfig


def load_rm_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> RMRunConfig:
    """Recipe + dotted overrides -> a validated :class:`RMRunConfig` (errors name the file and key)."""
    from alignrl.config.loader import ConfigError, _looks_local, apply_override, read_yaml
    from alignrl.config.typed import build_dataclass

    data = read_yaml(path)
    for override in overrides:
        apply_override(data, override)
    source = str(path) + (" (with command-line overrides)" if overrides else "")
    config = build_dataclass(RMRunConfig, data, "", source)
    for key, value in (("model.path", config.model.path), ("data.train", config.data.train),
                       ("data.test", config.data.test)):
        if value and _looks_local(value) and not Path(value).expanduser().exists():
            raise ConfigError(source, key, f"not found: {value}")
    if not 0 <= config.data.test_share < 1:
        raise ConfigError(source, "data.test_share", f"expected a share in [0, 1), got {config.data.test_share}")
    return config


def claim_output_dir(out: Path, resume: bool, overwrite: bool) -> str | None:
    """Refuse to clobber a finished or started run; returns the checkpoint to resume from (or None)."""
    from alignrl.reward_model.train import last_checkpoint
    from alignrl.run_dir import RunDirError

    if out.exists() and not out.is_dir():
        raise RunDirError(f"{out}: output_dir is a file, not a folder")
    if resume:
        checkpoint = last_checkpoint(out)
        if checkpoint is None:
            raise RunDirError(f"{out}: --resume was given but the folder holds no checkpoint-<step> folder; run "
                              f"without --resume to start")
        return checkpoint
    holds_run = out.is_dir() and any(p.name != "metrics.jsonl" or p.stat().st_size for p in out.iterdir())
    if holds_run and not overwrite:
        hint = " --resume to continue it, or" if last_checkpoint(out) else ""
        raise RunDirError(f"{out}: the folder already holds a reward model run; pass{hint} overwrite_output_dir=true "
                          f"to start over (its contents will be deleted)")
    if out.exists() and overwrite:
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return None


def _train(args: argparse.Namespace) -> int:
    from alignrl.reward_model.train import train_reward_model

    config = load_rm_config(args.recipe, args.overrides)
    command = "alignrl rm train " + shlex.join([args.recipe, *args.overrides, *(["--resume"] if args.resume else [])])
    figures = train_reward_model(config, resume=args.resume, command=command)
    if "test_accuracy" in figures:
        print(f"held-out accuracy {figures['test_accuracy']:.1%} on {figures['test_pairs']} pairs "
              f"(mean margin {figures['test_mean_margin']:.3f})", file=sys.stderr)
    print(f"reward model saved: {config.output_dir}", file=sys.stderr)
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from alignrl.reward_model import preference_data

    jobs = parser.add_subparsers(dest="rm_command", required=True)
    train = jobs.add_parser("train", help="train a Bradley-Terry reward model (TRL RewardTrainer) from a recipe")
    train.add_argument("recipe", help="reward-model recipe YAML (see reward_models/)")
    train.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. rm.learning_rate=1e-4")
    train.add_argument("--resume", action="store_true", help="continue from the last checkpoint in output_dir")
    train.set_defaults(rm_func=_train)
    data = jobs.add_parser("data", help="build preference data: synthetic pairs or pairs from labelled outputs")
    preference_data.add_arguments(data)
    data.set_defaults(rm_func=preference_data.run)


def run(args: argparse.Namespace) -> int:
    return int(args.rm_func(args))
