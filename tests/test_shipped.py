"""Every checkpoint the repository ships loads with today's code and plans: the files behind the reported numbers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dcem_agents.envs import make_env
from dcem_agents.evaluation.entries import CONTROLLERS, EntrySpec, load_entry
from dcem_agents.training import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted(p for p in (ROOT / "checkpoints").iterdir() if p.suffix in (".pt", ".zip"))


def test_the_repository_ships_checkpoints() -> None:
    assert any(p.name == "planet_cartpole_swingup.pt" for p in SHIPPED)


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_a_shipped_checkpoint_loads_and_acts(path: Path) -> None:
    """A planner or policy checkpoint: rebuilt as a comparison entry (eager fp32, so no compilation), one action from
    the belief of its task's first observation, inside the action box. Any other kind: it loads."""
    if path.suffix == ".pt" and load_checkpoint(path)["experiment"] not in CONTROLLERS:
        return  # regression, cartpole_embed: no controller; loading (above) is what their evaluation needs first
    entry = load_entry(EntrySpec(path), runtime=None if path.suffix == ".zip" else "fp32")
    env = make_env(entry.env_id, action_repeat=entry.action_repeat, seed=0)
    obs, _ = env.reset(seed=0)
    x = torch.as_tensor(np.asarray(obs, np.float32))[None]
    state = x if entry.model is None else entry.model.initial(x)
    action = entry.controller.act(state, torch.Generator().manual_seed(0)).detach().numpy()[0]
    assert action.shape == env.action_space.shape and np.isfinite(action).all()
    assert (action >= env.action_space.low - 1e-5).all() and (action <= env.action_space.high + 1e-5).all()
    env.close()
