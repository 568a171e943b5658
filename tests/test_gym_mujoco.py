"""Every Gymnasium MuJoCo v5 task with a Box action space trains through phase 1's debug preset (a smoke test).

Many of them end episodes early (falling): the replay pads and masks short episodes and the continuation head learns
the terminations (on by default off DeepMind Control).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import yaml

from dcem_agents.config import build
from dcem_agents.experiments import planet

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))


def _mujoco_v5_box_tasks() -> list[str]:
    ids = []
    for env_id, spec in sorted(gym.registry.items()):
        if env_id.endswith("-v5") and "mujoco" in str(spec.entry_point) and "/" not in env_id:
            ids.append(env_id)
    return ids


TASKS = _mujoco_v5_box_tasks()


def test_the_suite_is_found() -> None:
    assert {"InvertedPendulum-v5", "Hopper-v5", "HalfCheetah-v5", "Walker2d-v5", "Ant-v5"} <= set(TASKS)


@pytest.mark.slow
@pytest.mark.parametrize("env_id", TASKS)
def test_phase1_debug_trains_on(env_id: str, tmp_path: Path) -> None:
    raw = yaml.safe_load((ROOT / "configs" / "planet" / "debug.yaml").read_text())
    raw.update(env_id=env_id, action_repeat=2, final_eval_episodes=0)
    raw["train"].update(total_env_steps=2100, seed_episodes=2, eval_every=0, eval_episodes=1)  # >= 1 planned episode
    cfg = build(planet.Config, raw)
    summary = planet.train(cfg, tmp_path)
    assert summary["env_steps"] >= 2100 and summary["updates"] >= 2
    assert np.isfinite(summary["learning_curve"][-1]["return_mean"])
    assert (summary["planner"]["horizon"], cfg.model.uses_continuation(env_id)) == (4, True)


@pytest.mark.slow
def test_inverted_pendulum_through_all_three_phases(tmp_path: Path) -> None:
    """Phase 1, phase 2 (latent DCEM) and phase 3 (PPO through the policy) on a task that terminates early."""
    from _scripts import run_script

    p1, p2, p3 = tmp_path / "p1", tmp_path / "p2", tmp_path / "p3"
    common = ["--set", "env_id=InvertedPendulum-v5", "--set", "action_repeat=2"]
    assert run_script("train.py", "--config", "configs/planet/debug.yaml", *common, "--run-dir", str(p1)).returncode == 0
    steps = json.loads((p1 / "summary.json").read_text())["env_steps"]
    r = run_script("train.py", "--config", "configs/dcem/debug.yaml", "--set", f"phase1_checkpoint={p1 / 'checkpoint.pt'}",
                   "--set", f"train.total_env_steps={steps + 2000}", "--run-dir", str(p2))
    assert r.returncode == 0, r.stderr[-2000:]
    r = run_script("train.py", "--config", "configs/ppo/debug.yaml", "--set", f"phase2_checkpoint={p2 / 'checkpoint.pt'}",
                   "--run-dir", str(p3))
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads((p3 / "summary.json").read_text())
    assert summary["ppo_timesteps"] == 64 and summary["after"]["episodes"] == 2
    assert all(1 <= n <= 500 for n in summary["after"]["agent_steps"])  # the pendulum falls: episodes end early
