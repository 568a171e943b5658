"""Every Gymnasium MuJoCo v5 task with a Box action space trains through phase 1's debug preset (a smoke test).

Many of them end episodes early (falling): the replay pads and masks short episodes and the continuation head learns
the terminations (on by default off DeepMind Control).
"""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import yaml

from dcem_agents.config import build
from dcem_agents.experiments import planet

ROOT = Path(__file__).resolve().parents[1]


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
