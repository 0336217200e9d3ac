"""The RL loop: prompts -> rollouts -> rewards -> algorithm -> learner step -> eval and checkpoints.

It names no algorithm, reward or engine: ``build_components`` looks them up from the recipe. Each step:

1. take this rank's share of the step's prompts;
2. the rollout engine samples K completions per prompt with their token log-probs;
3. the reward functions score every completion;
4. the algorithm turns the group rewards into advantages (and may drop samples);
5. the learner takes an optimiser step on the algorithm's loss, and the engine receives the new weights;
6. metrics are reduced over ranks and logged; evaluation and checkpoints run on schedule.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from alignrl.algorithms import ShapingInputs
from alignrl.batch import build_batch
from alignrl.checkpoint import load_checkpoint, save_checkpoint
from alignrl.components import Components, build_components
from alignrl.config.loader import config_to_dict
from alignrl.config.schema import RunConfig
from alignrl.evaluation.core import evaluate_prompts, summarize
from alignrl.logging.metrics import MetricsLogger
from alignrl.rollout import SamplingParams


StepCallback = Callable[[int, Components, dict], None]


def train(config: RunConfig, resume: bool = False, callbacks: Sequence[StepCallback] = ()) -> Path:
    """Run (or resume) training as configured; returns the run folder.

    ``callbacks`` are called on every rank after each step as ``callback(step, components, metrics)``.
    """
    c = build_components(config, resume)
    cfg, acc = c.config, c.accelerator
    start = _restore(c) if c.resume_from else 0
    logger = MetricsLogger(c.run_dir, cfg.logging.report_to, cfg.logging.run_name, config_to_dict(cfg),
                           enabled=acc.is_main_process, resume_step=start if c.resume_from else None)
    sampling = SamplingParams(n=cfg.rollout.n, temperature=cfg.rollout.temperature, top_p=cfg.rollout.top_p,
                              top_k=cfg.rollout.top_k, max_new_tokens=cfg.rollout.max_new_tokens,
                              stop=list(cfg.rollout.stop))
    bar = tqdm(total=cfg.trainer.max_steps, initial=start, desc="train", unit="step",
               disable=not (acc.is_main_process and cfg.logging.progress_bar))
    for step in range(start + 1, cfg.trainer.max_steps + 1):
        t0 = time.perf_counter()
        indices = c.stream.next_indices()
        groups = c.engine.generate([c.prompts.token_ids[i] for i in indices], sampling)
        batch = build_batch([c.prompts.token_ids[i] for i in indices], groups, [c.prompts.texts[i] for i in indices],
                            [c.prompts.rows[i] for i in indices], c.tokenizer.pad_token_id)
        t1 = time.perf_counter()
        batch.rewards, batch.reward_parts = c.rewards.score(
            batch.prompts, batch.completions, batch.rows, ["length" if t else "stop" for t in batch.truncated.tolist()],
            [ids[mask.bool()].tolist() for ids, mask in zip(batch.completion_ids, batch.completion_mask)])
        t2 = time.perf_counter()
        if c.algorithm.needs_reference:
            batch.ref_logp = c.learner.reference_logprobs(batch, cfg.trainer.micro_batch_size)
        shaped = c.algorithm.shape(ShapingInputs(
            rewards=batch.rewards.view(-1, batch.group_size), mask=batch.completion_mask,
            sampler_logp=batch.sampler_logp, ref_logp=batch.ref_logp,
            truncated=batch.truncated.view(-1, batch.group_size)))
        batch.advantages, batch.keep = shaped.advantages.flatten(), shaped.keep.flatten()
        update = c.learner.update(batch, c.algorithm, cfg.rollout.max_new_tokens)
        c.engine.load_weights(c.learner.rollout_weights())
        t3 = time.perf_counter()
        metrics = {**_rollout_metrics(c, batch), **shaped.metrics, **update,
                   "time/generate": t1 - t0, "time/score": t2 - t1, "time/update": t3 - t2}
        metrics = _reduce_mean(c, metrics)
        metrics["tokens_per_s"] = metrics.pop("completion_tokens") * acc.num_processes / (t3 - t0)
        metrics["epoch"] = c.stream.epoch
        if cfg.eval.every_steps and c.eval_prompts and (step % cfg.eval.every_steps == 0 or
                                                        step == cfg.trainer.max_steps):
            metrics.update({f"eval/{k}": v for k, v in run_eval(c).items()})
        logger.log(step, metrics)
        logger.log_completions(step, [{"prompt": p, "completion": t, "reward": float(r)} for p, t, r in zip(
            batch.prompts, batch.completions, batch.rewards)][:cfg.logging.log_completions])
        bar.update(1)
        bar.set_postfix(reward=f"{metrics['reward_mean']:.3f}", passed=f"{metrics['pass_rate']:.2f}")
        if step == cfg.trainer.max_steps or (cfg.trainer.save_steps and step % cfg.trainer.save_steps == 0):
            _save(c, step, finished=step == cfg.trainer.max_steps)
        for callback in callbacks:
            callback(step, c, metrics)
    bar.close()
    logger.close()
    return c.run_dir


def run_eval(c: Components) -> dict[str, float]:
    """Held-out evaluation (prompts sharded over ranks), reduced to means over all samples."""
    ev, acc = c.config.eval, c.accelerator
    count = len(c.eval_prompts) if ev.max_prompts is None else min(ev.max_prompts, len(c.eval_prompts))
    indices = list(range(count))[acc.process_index::acc.num_processes]
    params = SamplingParams(n=ev.n, temperature=ev.temperature, top_p=ev.top_p, stop=list(c.config.rollout.stop),
                            max_new_tokens=ev.max_new_tokens or c.config.rollout.max_new_tokens)
    term = 0 if ev.reward is None else [t.name for t in c.rewards.terms].index(ev.reward)
    summary = summarize(evaluate_prompts(c.engine, c.eval_prompts, indices, params, c.rewards, term))
    weight = torch.tensor(float(len(indices)))
    totals = {k: torch.tensor(v) * weight for k, v in summary.items()}
    reduced = acc.reduce(torch.stack([*totals.values(), weight]).to(acc.device), reduction="sum").cpu()
    return {k: float(v / max(float(reduced[-1]), 1.0)) for k, v in zip(totals, reduced[:-1])}


def _rollout_metrics(c: Components, batch) -> dict[str, float]:
    lengths = batch.completion_mask.sum(1)
    first = batch.reward_parts[c.rewards.terms[0].name]
    metrics = {"reward_mean": float(batch.rewards.mean()), "reward_std": float(batch.rewards.std()),
               "pass_rate": float((first > 0).float().mean()), "response_length": float(lengths.mean()),
               "truncated": float(batch.truncated.float().mean()), "completion_tokens": float(lengths.sum())}
    if len(c.rewards.terms) > 1:
        metrics.update({f"reward/{name}": float(v.mean()) for name, v in batch.reward_parts.items()})
    return metrics


def _reduce_mean(c: Components, metrics: dict[str, float]) -> dict[str, float]:
    keys = sorted(metrics)
    values = torch.tensor([float(metrics[k]) for k in keys], dtype=torch.float64)
    reduced = c.accelerator.reduce(values.to(c.accelerator.device), reduction="mean").cpu()
    return dict(zip(keys, reduced.tolist()))


def _save(c: Components, step: int, finished: bool) -> None:
    learner = c.learner
    save_checkpoint(c.accelerator, c.run_dir, step, learner.model, c.tokenizer, learner.optimizer,
                    learner.scheduler, {"cursor": c.stream.cursor, "finished": finished},
                    c.config.trainer.save_total_limit)


def _restore(c: Components) -> int:
    state = load_checkpoint(c.accelerator, c.resume_from, c.learner.model, c.learner.optimizer,
                            c.learner.scheduler)
    c.stream.cursor = state["cursor"]
    return int(state["step"])
