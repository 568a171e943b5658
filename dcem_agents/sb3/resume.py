"""Exact resume of an SB3 run: what a model zip leaves out, saved beside it and put back after loading.

An SB3 zip holds the weights, the optimizer and the algorithm's counters, including the last observation
(``_last_obs``). It does not hold the environments' state, the episode statistics in flight, the ``VecNormalize``
return accumulators, the random generators (global torch / numpy / ``random`` and the action space's; ``load``
reseeds them), or the logged values not yet written (PPO writes an update's losses with the next rollout's row). A run resumed from the zip alone therefore restarts its episodes and draws other
random numbers: it trains on, but not as the killed run would have.

:func:`capture` collects all of that at a consistent point (the start of a rollout, after an update: see
:class:`~dcem_agents.sb3.checkpoints.AtomicCheckpointCallback`); :func:`restore` puts it back into a freshly loaded
model whose environments are built the same way. The environments must be :class:`~dcem_agents.envs.ReplayableEnv`
(every episode seeded, its actions recorded), which :func:`dcem_agents.sb3.make_belief_vec_env` and the baseline
experiment use. The state holds tensors, lists and plain values only (it loads with ``weights_only=True``).
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecEnv, VecMonitor, VecNormalize

from dcem_agents.sb3.belief_env import BeliefVecEnv

__all__ = ["capture", "restore"]


def _chain(venv: VecEnv) -> list[VecEnv]:
    """The VecEnv and its wrappers, outermost first, down to the base VecEnv."""
    chain = [venv]
    while hasattr(chain[-1], "venv"):
        chain.append(chain[-1].venv)
    return chain


def _numpy_global() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"name": name, "keys": torch.as_tensor(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached)}


def capture(model: BaseAlgorithm) -> dict[str, Any]:
    """Everything :func:`restore` needs, from ``model`` and its environment (call between rollouts)."""
    env = model.get_env()
    if env is None:
        raise ValueError("capture: the model has no environment")
    wrappers: list[dict[str, Any]] = []
    for venv in _chain(env):
        if isinstance(venv, BeliefVecEnv):
            wrappers.append({"kind": "belief", **venv.get_resume_state()})
        elif isinstance(venv, VecMonitor):
            wrappers.append({"kind": "monitor", "returns": torch.as_tensor(venv.episode_returns, dtype=torch.float64),
                             "lengths": torch.as_tensor(venv.episode_lengths), "count": int(venv.episode_count)})
        elif isinstance(venv, VecNormalize):
            wrappers.append({"kind": "normalize", "returns": torch.as_tensor(venv.returns, dtype=torch.float64)})
    base = _chain(env)[-1]
    envs = [{**s, "actions": torch.as_tensor(s["actions"])} for s in base.env_method("get_resume_state")]
    space_rng = model.action_space.np_random.bit_generator.state  # SB3 seeds it (random warm-up actions)
    logger = model.logger
    pending = {k: [torch.as_tensor(v) if isinstance(v, np.number) else v, int(logger.name_to_count.get(k, 0)),
                   list(logger.name_to_excluded.get(k, ()))]  # numpy scalars keep their dtype (and their CSV text)
               for k, v in logger.name_to_value.items() if isinstance(v, (int, float, np.number))}
    return {"wrappers": wrappers, "envs": envs, "num_timesteps": int(model.num_timesteps), "pending_log": pending,
            "rng": {"torch": torch.get_rng_state(), "numpy": _numpy_global(), "random": _plain(random.getstate()),
                    "action_space": space_rng}}


def _plain(state: Any) -> Any:
    """``random.getstate()`` as nested lists (a tuple of ints and a float: plain values)."""
    return [_plain(s) for s in state] if isinstance(state, tuple) else state


def _tuple(state: Any) -> Any:
    return tuple(_tuple(s) for s in state) if isinstance(state, list) else state


def restore(model: BaseAlgorithm, state: dict[str, Any]) -> None:
    """Put :func:`capture`'s ``state`` back into a model loaded with ``force_reset=False`` and its environment, after
    the run's logger is set (``model.set_logger``): values recorded but not yet written go into it.

    :raises ValueError: the environment's wrappers or number of environments differ from the captured ones, or the
        model's step count is not the captured one.
    """
    if int(model.num_timesteps) != state["num_timesteps"]:
        raise ValueError(f"resume state of step {state['num_timesteps']} does not belong to a model at step "
                         f"{model.num_timesteps}")
    env = model.get_env()
    base = _chain(env)[-1]
    if len(state["envs"]) != base.num_envs:
        raise ValueError(f"resume state holds {len(state['envs'])} environments, the model has {base.num_envs}")
    for i, s in enumerate(state["envs"]):
        base.env_method("set_resume_state", {**s, "actions": np.asarray(s["actions"])}, indices=[i])
    kinds = {"belief": BeliefVecEnv, "monitor": VecMonitor, "normalize": VecNormalize}
    present = [venv for venv in _chain(env) if isinstance(venv, tuple(kinds.values()))]
    if [type(v) for v in present] != [kinds[w["kind"]] for w in state["wrappers"]]:
        raise ValueError("the environment's wrappers are not those of the resume state: build it as the run did")
    for venv, w in zip(present, state["wrappers"]):
        if w["kind"] == "belief":
            venv.set_resume_state(w)
        elif w["kind"] == "monitor":
            venv.episode_returns = w["returns"].numpy().astype(np.float32)
            venv.episode_lengths = w["lengths"].numpy()
            venv.episode_count = w["count"]
        else:
            venv.returns = w["returns"].numpy()
    rng = state["rng"]
    torch.set_rng_state(rng["torch"])
    n = rng["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    random.setstate(_tuple(rng["random"]))
    model.action_space.np_random.bit_generator.state = rng["action_space"]
    # values recorded after the last dump (e.g. PPO's losses of the update just before the checkpoint, dumped with
    # the next rollout): into the run's logger, so the next row has them as the killed run's would have
    logger = model.logger
    for key, (value, count, excluded) in state.get("pending_log", {}).items():
        value = value.numpy()[()] if torch.is_tensor(value) else value
        logger.name_to_value[key], logger.name_to_count[key] = value, count
        logger.name_to_excluded[key] = tuple(excluded)
