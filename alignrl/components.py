"""Build everything a run needs from its config, validating all inputs before the run folder is touched."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import InitProcessGroupKwargs, set_seed
from transformers import PreTrainedTokenizerBase

from alignrl.algorithms import Algorithm, algorithm_class
from alignrl.config.loader import save_config
from alignrl.config.schema import RunConfig
from alignrl.data import PromptSet, PromptStream, prepare_prompts
from alignrl.learner.learner import Learner
from alignrl.learner.models import bf16_supported, load_policy, load_reference, load_tokenizer, max_context
from alignrl.rewards.scoring import RewardSet
from alignrl.rollout import RolloutEngine, build_engine
from alignrl.run_dir import check_run_dir, claim_run_dir


@dataclass
class Components:
    config: RunConfig
    accelerator: Accelerator
    tokenizer: PreTrainedTokenizerBase
    learner: Learner
    engine: RolloutEngine
    rewards: RewardSet
    algorithm: Algorithm
    prompts: PromptSet
    eval_prompts: PromptSet | None
    stream: PromptStream
    run_dir: Path
    resume_from: Path | None


def make_accelerator(mixed_precision: str) -> Accelerator:
    if mixed_precision == "auto":
        mixed_precision = "bf16" if bf16_supported() else "no"
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    handlers = [InitProcessGroupKwargs(backend="gloo")] if distributed and not torch.cuda.is_available() else []
    return Accelerator(mixed_precision=mixed_precision, kwargs_handlers=handlers)


def build_components(config: RunConfig, resume: bool = False) -> Components:
    trainer = config.trainer
    accelerator = make_accelerator(trainer.mixed_precision)
    resume_from = check_run_dir(trainer.output_dir, resume, trainer.overwrite_output_dir)
    set_seed(trainer.seed + accelerator.process_index)  # ranks sample differently; DDP keeps weights equal
    algorithm = algorithm_class(config.algorithm.name)(config.algorithm.params)
    rewards = RewardSet(config.reward.functions)
    tokenizer = load_tokenizer(config.model)
    policy = load_policy(config.model)
    context = max_context(policy)
    prompts = prepare_prompts(config.data.train, config.data.split, config.data, tokenizer, context,
                              config.rollout.max_new_tokens)
    eval_prompts = None
    if config.data.eval and config.eval.every_steps > 0:
        eval_tokens = config.eval.max_new_tokens or config.rollout.max_new_tokens
        eval_prompts = prepare_prompts(config.data.eval, config.data.eval_split, config.data, tokenizer, context,
                                       eval_tokens)
    reference = load_reference(config.model) if algorithm.needs_reference else None
    stream = PromptStream(len(prompts), config.rollout.prompts_per_step, trainer.seed, config.data.shuffle,
                          accelerator.process_index, accelerator.num_processes)
    # every input is valid: only now is the run folder created (or emptied on request)
    run_dir = claim_run_dir(trainer.output_dir, resume, trainer.overwrite_output_dir, accelerator.is_main_process)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process and not resume:
        save_config(config, run_dir / "run_config.yaml")
    learner = Learner(accelerator, policy, config.model, trainer, config.rollout.temperature, reference)
    engine = build_engine(config.rollout.engine, model=learner.unwrapped, tokenizer=tokenizer,
                          generation_batch_size=config.rollout.generation_batch_size)
    return Components(config, accelerator, tokenizer, learner, engine, rewards, algorithm, prompts, eval_prompts,
                      stream, run_dir, resume_from)
