"""The RL loop: prompts -> rollouts -> rewards -> algorithm -> learner step -> weight push -> eval and checkpoints.

It names no algorithm, reward or engine: ``build_components`` looks them up from the recipe. Each step:

1. the prompt sampler picks the step's prompts; this rank takes its share;
2. the rollout engine samples K completions per prompt (seeded by run seed, step and rank) with token log-probs;
3. the rewards score every completion; a sampler that adapts to difficulty observes the scores of all ranks;
4. the algorithm turns rewards (and reference / auxiliary-model outputs) into advantages, filters and extras;
5. the learner steps every model that trains this step; the engine receives the policy's new weights;
6. metrics are reduced over ranks and logged; evaluation and checkpoints run on schedule.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from accelerate.utils import gather_object
from tqdm.auto import tqdm

from alignrl.algorithms import ShapingInputs
from alignrl.batch import build_batch
from alignrl.checkpoint import load_checkpoint, save_checkpoint
from alignrl.components import Components, build_components
from alignrl.config.loader import config_to_dict
from alignrl.config.schema import RunConfig
from alignrl.evaluation.core import evaluate_prompts, summarize
from alignrl.logging.metrics import MetricsLogger
from alignrl.preemption import Preempted, PreemptionWatch
from alignrl.rewards import RewardInputs
from alignrl.rewards.base import columns_of
from alignrl.rollout import SamplingParams
from alignrl.run_dir import Resume, resolve_resume
from alignrl.sampling import rank_share, sampling_seed
from alignrl.step_metrics import reduce_metrics, rollout_metrics

StepCallback = Callable[[int, Components, dict], None]


def train(config: RunConfig, resume: Resume = False, callbacks: Sequence[StepCallback] = ()) -> Path:
    """Run (or resume; ``"auto"``: resume if there is a checkpoint) training as configured; returns the run folder.

    ``callbacks`` are called on every rank after each step as ``callback(step, components, metrics)``.
    On SIGTERM or SIGUSR1 the run finishes its step, saves a checkpoint and raises :class:`Preempted`.
    """
    with PreemptionWatch() as preemption:
        c = build_components(config, resolve_resume(config.trainer.output_dir, resume))
        try:
            return _train(c, callbacks, preemption)
        finally:
            c.rewards.close()
            c.engine.close()  # a vLLM engine holds processes / memory until closed


def _train(c: Components, callbacks: Sequence[StepCallback], preemption: PreemptionWatch) -> Path:
    cfg, acc = c.config, c.accelerator
    start = _restore(c) if c.resume_from else 0
    logger = MetricsLogger(c.run_dir, cfg.logging.report_to, cfg.logging.run_name, config_to_dict(cfg),
                           enabled=acc.is_main_process, resume_step=start if c.resume_from else None)
    sampling = SamplingParams(n=cfg.rollout.n, temperature=cfg.rollout.temperature, top_p=cfg.rollout.top_p,
                              top_k=cfg.rollout.top_k, max_new_tokens=cfg.rollout.max_new_tokens,
                              stop=list(cfg.rollout.stop))
    bar = tqdm(total=cfg.trainer.max_steps, initial=start, desc="train", unit="step",
               disable=not (acc.is_main_process and cfg.logging.progress_bar))
    stop = False
    for step in range(start + 1, cfg.trainer.max_steps + 1):
        t0 = time.perf_counter()
        picked = c.sampler.next_indices()
        indices = rank_share(picked, acc.process_index, acc.num_processes)
        params = dataclasses.replace(sampling, seed=sampling_seed(cfg.trainer.seed, step, acc.process_index))
        groups = c.engine.generate([c.prompts.token_ids[i] for i in indices], params)
        batch = build_batch([c.prompts.token_ids[i] for i in indices], groups, [c.prompts.texts[i] for i in indices],
                            [c.prompts.rows[i] for i in indices], c.tokenizer.pad_token_id)
        t1 = time.perf_counter()
        scored = c.rewards.score(RewardInputs(
            prompts=batch.prompts, completions=batch.completions, columns=columns_of(batch.rows),
            finish_reasons=["length" if t else "stop" for t in batch.truncated.tolist()],
            completion_ids=[ids[m.bool()].tolist() for ids, m in zip(batch.completion_ids, batch.completion_mask)],
            step=step))
        batch.rewards, batch.reward_parts = scored.total, scored.parts
        if c.sampler.observes:
            everyone = gather_object([(indices, batch.rewards.view(-1, batch.group_size))])
            c.sampler.observe([i for ids, _ in everyone for i in ids], torch.cat([r for _, r in everyone]))
        t2 = time.perf_counter()
        if c.algorithm.needs_reference:
            batch.ref_logp = c.learner.reference_logprobs(batch)
        shaped = c.algorithm.shape(ShapingInputs(
            rewards=batch.rewards.view(-1, batch.group_size), mask=batch.completion_mask,
            sampler_logp=batch.sampler_logp, ref_logp=batch.ref_logp,
            truncated=batch.truncated.view(-1, batch.group_size), prompt_index=torch.tensor(indices), step=step,
            aux_outputs=c.learner.auxiliary_outputs(batch)))
        batch.attach(shaped)
        update = c.learner.update(batch, c.algorithm, step, cfg.rollout.max_new_tokens)
        t3 = time.perf_counter()
        c.engine.load_weights(c.learner.weight_update(step, cfg.rollout.weight_bucket_mb))
        t4 = time.perf_counter()
        metrics = {**shaped.metrics, **rollout_metrics(acc, batch, next(iter(batch.reward_parts), None)),
                   **{f"reward/{k}": v for k, v in scored.info.items()}, **update, "time/generate": t1 - t0, "time/score": t2 - t1,
                   "time/update": t3 - t2, "time/sync": t4 - t3}
        metrics = reduce_metrics(acc, metrics)
        metrics["tokens_per_s"] = metrics.pop("completion_tokens") * acc.num_processes / (t4 - t0)
        metrics["epoch"] = c.sampler.epoch
        if cfg.eval.every_steps and c.eval_prompts and (step % cfg.eval.every_steps == 0 or
                                                        step == cfg.trainer.max_steps):
            metrics.update({f"eval/{k}": v for k, v in run_eval(c, step).items()})
        logger.log(step, metrics)
        logger.log_completions(step, [{"prompt": p, "completion": t, "reward": float(r)} for p, t, r in zip(
            batch.prompts, batch.completions, batch.rewards)][:cfg.logging.log_completions])
        bar.update(1)
        bar.set_postfix(reward=f"{metrics['reward_mean']:.3f}", passed=f"{metrics.get('pass_rate', 0.0):.2f}")
        stop = step < cfg.trainer.max_steps and preemption.should_stop(acc)  # a signal: save now, then stop
        if stop or step == cfg.trainer.max_steps or (cfg.trainer.save_steps and step % cfg.trainer.save_steps == 0):
            checkpoint = _save(c, step, finished=step == cfg.trainer.max_steps)
        for callback in callbacks:
            callback(step, c, metrics)
        if stop:
            break
    bar.close()
    logger.close()
    if stop:
        raise Preempted(preemption.received or "a signal to another process", step, checkpoint)
    return c.run_dir


def run_eval(c: Components, step: int = 0) -> dict[str, float]:
    """Held-out evaluation (prompts sharded over ranks), reduced to means over all samples.

    Every rank generates for the same number of prompts: a rank short of its share repeats prompt 0 and drops
    those samples, because generation on a ZeRO-3-sharded policy is a collective (each forward gathers weights),
    so a rank with fewer generate calls would leave the others waiting forever."""
    ev, acc = c.config.eval, c.accelerator
    count = len(c.eval_prompts) if ev.max_prompts is None else min(ev.max_prompts, len(c.eval_prompts))
    indices = list(range(count))[acc.process_index::acc.num_processes]
    share = -(-count // acc.num_processes)
    padded = indices + [0] * (share - len(indices))
    params = SamplingParams(n=ev.n, temperature=ev.temperature, top_p=ev.top_p, stop=list(c.config.rollout.stop),
                            max_new_tokens=ev.max_new_tokens or c.config.rollout.max_new_tokens,
                            seed=sampling_seed(c.config.trainer.seed + 1, step, acc.process_index))
    term = ev.reward if ev.reward is not None else next(t.name for t in c.rewards.terms if t.weight != 0)
    records = evaluate_prompts(c.engine, c.eval_prompts, padded, params, c.rewards, term)[:len(indices) * ev.n]
    summary = summarize(records)
    weight = torch.tensor(float(len(indices)))
    totals = {k: torch.tensor(v) * weight for k, v in summary.items()}
    reduced = acc.reduce(torch.stack([*totals.values(), weight]).to(acc.device), reduction="sum").cpu()
    return {k: float(v / max(float(reduced[-1]), 1.0)) for k, v in zip(totals, reduced[:-1])}


def _save(c: Components, step: int, finished: bool) -> Path:
    return save_checkpoint(c.accelerator, c.run_dir, step, c.learner.models, c.tokenizer, {"finished": finished},
                           {"sampler": c.sampler.state_dict(), "rewards": c.rewards.state_dict()},
                           c.config.trainer.save_total_limit)


def _restore(c: Components) -> int:
    """Load the checkpoint, then push the restored weights to the engine once."""
    trainer_state, rank_state = load_checkpoint(c.accelerator, c.resume_from, c.learner.models)
    c.sampler.load_state_dict(rank_state["sampler"])
    c.rewards.load_state_dict(rank_state["rewards"])
    step = int(trainer_state["step"])
    c.engine.load_weights(c.learner.weight_update(step, c.config.rollout.weight_bucket_mb))
    return step
