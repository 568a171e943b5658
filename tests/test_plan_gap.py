"""The plan gap: states rebuilt exactly, plans scored by the model and by the environment, clear refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dcem_agents.envs import make_env
from dcem_agents.evaluation.compare import load_entries
from dcem_agents.evaluation.entries import EntryError, EntrySpec, load_entry, parse_entry
from dcem_agents.evaluation.plan_gap import (PlanState, collect_states, measure_plan_gap, open_loop_returns,
                                             planned_actions, predicted_returns)
from dcem_agents.training.rollout import run_episodes

from _scripts import run_main


def test_open_loop_return_replays_the_episode_exactly(phase2_checkpoint: Path) -> None:
    """A state is rebuilt from its seed and its prefix of actions: executing the actions the episode took next gives
    the rewards the episode recorded, step for step (so a plan's real return is the environment's, not an estimate)."""
    entry = load_entry(EntrySpec(phase2_checkpoint, "dcem"))
    env = make_env(entry.env_id, action_repeat=entry.action_repeat)
    (episode,), _ = run_episodes([env], entry.model, entry.controller, [11], generator=entry.generator(11))
    env.close()
    h = entry.controller.horizon
    states = [PlanState(11, t, episode.actions[:t].copy(), torch.zeros(1)) for t in (0, 37, len(episode.actions) - h)]
    plans = torch.as_tensor(np.stack([episode.actions[st.step:st.step + h] for st in states]))
    real = open_loop_returns(entry.env_id, entry.action_repeat, states, plans)
    expected = [episode.rewards[st.step:st.step + h].sum() for st in states]
    np.testing.assert_allclose(real, expected, rtol=1e-6, atol=1e-6)


def test_states_are_drawn_with_a_horizon_left_and_carry_their_beliefs(phase2_checkpoint: Path) -> None:
    entry = load_entry(EntrySpec(phase2_checkpoint, "dcem"))
    h = entry.controller.horizon
    states = collect_states(entry.env_id, entry.action_repeat, entry.model, entry.controller, [3, 4], 30, h,
                            np.random.default_rng(0), entry.generator(0))
    assert len(states) == 30 and {s.seed for s in states} <= {3, 4}
    assert all(len(s.prefix) == s.step <= 125 - h for s in states)  # debug cartpole: 125 agent steps per episode
    assert len({(s.seed, s.step) for s in states}) == 30  # without replacement
    assert all(s.belief.shape == states[0].belief.shape for s in states)
    every = collect_states(entry.env_id, entry.action_repeat, entry.model, entry.controller, [3], 125 - h + 1, h,
                           np.random.default_rng(0), entry.generator(0))
    assert [s.step for s in every] == list(range(125 - h + 1))  # every step with a horizon left, in order
    env = make_env(entry.env_id, action_repeat=entry.action_repeat)
    obs, _ = env.reset(seed=3)
    env.close()  # the belief at step 0 is the model's initial belief from the reset observation
    torch.testing.assert_close(every[0].belief, entry.model.initial(torch.as_tensor(obs)[None])[0])
    with pytest.raises(ValueError, match=f"fewer than the {125 - h + 2} states"):
        collect_states(entry.env_id, entry.action_repeat, entry.model, entry.controller, [3], 125 - h + 2, h,
                       np.random.default_rng(0))


def test_plan_gap_scores_every_planner_on_the_same_states(phase2_checkpoint: Path) -> None:
    specs = [parse_entry(f"{phase2_checkpoint}:dcem"), parse_entry(f"{phase2_checkpoint}:cem(n_samples=8,n_elites=2)")]
    entries = load_entries(specs)
    summary = measure_plan_gap(entries, [5, 6], 20, seed=5)
    assert summary["horizon"] == entries[0].controller.horizon and summary["states"] == 20
    assert len(summary["state_index"]) == 20 and len(summary["paired_real"]) == 1
    for row, entry in zip(summary["entries"], entries):
        assert len(row["predicted"]) == len(row["real"]) == 20
        gap = np.mean(np.asarray(row["predicted"]) - np.asarray(row["real"]))
        assert row["over_estimate"]["mean"] == pytest.approx(gap, abs=1e-3)
        assert row["sequences_per_plan"] == entry.samples_per_action
    again = measure_plan_gap(load_entries(specs), [5, 6], 20, seed=5)
    assert [r["real"] for r in again["entries"]] == [r["real"] for r in summary["entries"]]  # seeded end to end
    # the predicted return is the planners' objective: the model's weighted rewards of the whole plan
    first = entries[0]
    states = collect_states(first.env_id, first.action_repeat, first.model, first.controller, [5, 6], 20,
                            summary["horizon"], np.random.default_rng(5), first.generator(5))
    beliefs = torch.stack([s.belief for s in states])
    actions = planned_actions(entries[0].controller, beliefs, entries[0].generator(5))
    np.testing.assert_allclose(predicted_returns(entries[0].model, beliefs, actions).numpy(),
                               summary["entries"][0]["predicted"], atol=1e-3)
    assert [[s.seed, s.step] for s in states] == summary["state_index"]


def test_plan_gap_refuses_what_it_cannot_measure(phase1_checkpoint: Path, phase2_checkpoint: Path,
                                                 phase3_checkpoint: Path) -> None:
    two_files = load_entries([EntrySpec(phase2_checkpoint, "cem"), EntrySpec(phase1_checkpoint, "cem")])
    with pytest.raises(EntryError, match="ONE checkpoint"):
        measure_plan_gap(two_files, [1], 5, seed=1)
    policy = load_entries([EntrySpec(phase3_checkpoint, "ppo")])
    with pytest.raises(EntryError, match="does not plan"):
        measure_plan_gap(policy, [1], 5, seed=1)
    with pytest.raises(TypeError, match="does not plan"):
        planned_actions(policy[0].controller, torch.zeros(1, 4))


def test_evaluate_plan_gap_writes_its_report(phase2_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "gap"
    p = run_main("evaluate.py", "--plan-gap", "--entry", f"{phase2_checkpoint}:dcem@latent", "--entry",
                 f"{phase2_checkpoint}:cem(n_samples=8,n_elites=2)@full", "--episodes", "1", "--states", "10",
                 "--seed", "9", "--out", str(out))
    assert p.returncode == 0, p.stderr[-2000:]
    summary = json.loads(out.with_suffix(".json").read_text())
    assert [r["label"] for r in summary["entries"]] == ["latent", "full"] and summary["episode_seeds"] == [9]
    assert "--plan-gap" in summary["command"] and out.with_suffix(".png").stat().st_size > 0
    assert "| latent |" in out.with_suffix(".md").read_text() and "| latent |" in p.stdout
    for args, message in ((["--entry", str(phase2_checkpoint), "--states", "5"], "--states N"),
                          (["--plan-gap", "--entry", str(phase2_checkpoint), "--video"], "do not apply"),
                          (["--plan-gap", "--checkpoint", str(phase2_checkpoint)], "--entry"),
                          (["--plan-gap", "--entry", f"{phase2_checkpoint}:dcem", "--episodes", "1", "--states", "500"],
                           "fewer than the 500 states")):
        p = run_main("evaluate.py", *args, "--out", str(tmp_path / "x"))
        assert p.returncode == 2 and message in p.stderr, p.stderr[-2000:]
