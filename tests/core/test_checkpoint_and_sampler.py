"""Checkpoint re-saves are atomic, and prompt samplers resume exactly from their state."""

from __future__ import annotations

import os

import torch

from alignrl.checkpoint import STATE_FILE, list_checkpoints
from alignrl.sampling import EpochSampler, EpochParams, rank_share, sampling_seed
from doubles import HardFirstParams, HardFirstSampler


def test_a_kill_between_the_two_renames_of_a_resave_loses_nothing(tmp_path):
    """Re-saving step 3 moves the old copy aside first; if the process dies before the new copy lands, the next
    listing restores the old one (there is never a moment without a complete copy)."""
    old = tmp_path / "checkpoint-000003"
    old.mkdir()
    (old / STATE_FILE).write_text('{"step": 3}')
    os.replace(old, tmp_path / ".old-checkpoint-000003")  # what a kill right after the first rename leaves
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-000003"]
    assert (tmp_path / "checkpoint-000003" / STATE_FILE).read_text() == '{"step": 3}'


def _run(sampler, steps):
    picks = []
    for _ in range(steps):
        picked = sampler.next_indices()
        picks.append(picked)
        if sampler.observes:
            rewards = torch.tensor([[float(i % 3 == 0), 0.0, float(i % 2)] for i in picked])
            sampler.observe(picked, rewards)
    return picks


def test_samplers_resume_exactly():
    for make in (lambda: EpochSampler(EpochParams(), 10, 4, seed=3), lambda: HardFirstSampler(
            HardFirstParams(), 10, 4, seed=3)):
        straight = make()
        expected = _run(straight, 8)
        first = make()
        _run(first, 3)
        state = first.state_dict()
        resumed = make()
        resumed.load_state_dict(state)
        assert _run(resumed, 5) == expected[3:]


def test_rank_shares_and_seeds():
    assert rank_share([5, 6, 7, 8], 1, 2) == [6, 8]
    seeds = {sampling_seed(0, step, rank) for step in range(1, 50) for rank in range(4)}
    assert len(seeds) == 49 * 4 and sampling_seed(0, 1, 0) == sampling_seed(0, 1, 0)
