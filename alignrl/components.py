"""Build everything a run needs from its config, validating all inputs before the run folder is touched."""

from __future__ import annotations

import json
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
from alignrl.data import PromptSet, prepare_prompts
from alignrl.learner.learner import Learner
from alignrl.learner.models import (bf16_supported, load_auxiliary, load_policy, load_reference, load_tokenizer,
                                    max_context)
from alignrl.learner.reference import Reference
from alignrl.learner.trainable import POLICY, OptimizerSettings, TrainableModel
from alignrl.learner.zero import check_launch
from alignrl.requirements import check_run_requirements
from alignrl.rewards import RewardContext, RewardError, RewardSet
from alignrl.rollout import RolloutEngine, build_engine
from alignrl.run_dir import check_run_dir, claim_run_dir
from alignrl.sampling import PromptSampler, build_sampler, rank_share


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
    sampler: PromptSampler
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
    check_run_requirements(config)  # an engine, logger, reward or DeepSpeed without its package: fail before all
    accelerator = make_accelerator(trainer.mixed_precision)
    check_launch(accelerator, config.rollout.engine.name, config.rollout.engine.params)  # DeepSpeed config, ZeRO-3
    resume_from = check_run_dir(trainer.output_dir, resume, trainer.overwrite_output_dir)
    set_seed(trainer.seed + accelerator.process_index)  # ranks sample differently; DDP keeps weights equal
    algorithm = algorithm_class(config.algorithm.name)(config.algorithm.params)
    rewards = RewardSet(config.reward.functions)
    if config.eval.reward is not None and config.eval.reward not in [t.name for t in rewards.terms]:
        raise RewardError(f"eval.reward '{config.eval.reward}' is not one of reward.functions "
                          f"({', '.join(t.name for t in rewards.terms)})")
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
    needs_reference = algorithm.needs_reference or algorithm.needs_exact_kl
    reference = load_reference(config.model) if needs_reference else None
    auxiliary = {spec.name: (spec, load_auxiliary(spec, config.model)) for spec in algorithm.auxiliary_models()}
    rank_share(list(range(config.rollout.prompts_per_step)), accelerator.process_index, accelerator.num_processes)
    sampler = build_sampler(config.data.sampler.name, config.data.sampler.params, len(prompts),
                            config.rollout.prompts_per_step, trainer.seed, config.data.shuffle)
    if hasattr(sampler, "attach_rows"):  # samplers that read a data column (pass_rate_buckets' offline rates)
        sampler.attach_rows(prompts.rows)
    # every input is valid: only now is the run folder created (or emptied on request)
    run_dir = claim_run_dir(trainer.output_dir, resume, trainer.overwrite_output_dir, accelerator.is_main_process)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process and not resume:
        save_config(config, run_dir / "run_config.yaml")
        (run_dir / "rewards.json").write_text(json.dumps(rewards.describe(), indent=2, default=str))
    total = trainer.max_steps * trainer.epochs_per_batch
    models = {POLICY: TrainableModel(POLICY, accelerator, policy, OptimizerSettings(
        lr=trainer.lr, lr_scheduler=trainer.lr_scheduler, warmup_steps=trainer.warmup_steps, total_steps=total,
        weight_decay=trainer.weight_decay, adam_betas=trainer.adam_betas, adam_eps=trainer.adam_eps,
        max_grad_norm=trainer.max_grad_norm))}
    for name, (spec, model) in auxiliary.items():
        models[name] = TrainableModel(name, accelerator, model, OptimizerSettings(
            lr=spec.lr, lr_scheduler=spec.lr_scheduler, warmup_steps=spec.warmup_steps, total_steps=total,
            weight_decay=spec.weight_decay, adam_betas=trainer.adam_betas, adam_eps=trainer.adam_eps,
            max_grad_norm=spec.max_grad_norm))
    unwrapped_policy = models[POLICY].unwrapped
    learner = Learner(accelerator, models, trainer, config.rollout.temperature,
                      Reference(accelerator, reference, unwrapped_policy, config.rollout.temperature)
                      if needs_reference else None)
    engine = build_engine(config.rollout.engine.name, config.rollout.engine.params, model=unwrapped_policy,
                          tokenizer=tokenizer)
    rewards.setup(RewardContext(device=accelerator.device, accelerator=accelerator, tokenizer=tokenizer,
                                engine_factory=build_engine, run_dir=run_dir, seed=trainer.seed))
    return Components(config, accelerator, tokenizer, learner, engine, rewards, algorithm, prompts, eval_prompts,
                      sampler, run_dir, resume_from)
