"""An environment whose exact state can be saved and restored: every episode seeded, its actions recorded.

MuJoCo (and most Gymnasium) environments are deterministic given the reset seed and the actions. :class:`ReplayableEnv`
makes every reset seeded — an explicit ``reset(seed=s)`` restarts its seed sequence at ``s``, and each later
automatic reset takes the next seed of that sequence — and records the actions of the running episode. Its
:meth:`~ReplayableEnv.get_resume_state` is then a few numbers and one array, and
:meth:`~ReplayableEnv.set_resume_state` rebuilds the same simulator state in a fresh process by resetting with the
episode's seed and stepping through the recorded actions (wrappers inside it, e.g. an action repeat or episode
statistics, see the same steps again). This is what lets an SB3 run resumed from a checkpoint continue the very
episodes the killed run was in (:mod:`dcem_agents.sb3.resume`).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from dcem_agents.envs.make import make_env

__all__ = ["ReplayableEnv", "make_replayable_env"]


class ReplayableEnv(gym.Wrapper):
    """Seed every episode from one sequence and record its actions (see the module docstring).

    :param env: the environment (put this wrapper outermost, so that restoring replays through every other wrapper).
    :param seed: start of the seed sequence, used until an explicit ``reset(seed=...)`` restarts it (None: drawn
        from fresh entropy, then recorded like any other).
    """

    def __init__(self, env: gym.Env, seed: int | None = None) -> None:
        super().__init__(env)
        self._seeds = np.random.default_rng(seed)
        self._episode_seed: int | None = None
        self._actions: list[np.ndarray] = []

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        if seed is not None:
            self._seeds = np.random.default_rng(seed)
        self._episode_seed = int(self._seeds.integers(2**31 - 1))
        self._actions = []
        return self.env.reset(seed=self._episode_seed, options=options)

    def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict[str, Any]]:
        self._actions.append(np.array(action, copy=True))
        return self.env.step(action)

    def get_resume_state(self) -> dict[str, Any]:
        """The running episode's seed and actions, and the seed sequence's state (plain values and one array)."""
        actions = np.stack(self._actions) if self._actions else np.zeros((0, *self.action_space.shape), np.float32)
        return {"episode_seed": self._episode_seed, "actions": actions, "seeds": self._seeds.bit_generator.state}

    def set_resume_state(self, state: dict[str, Any]) -> Any:
        """Rebuild the state of :meth:`get_resume_state`; returns the episode's current observation."""
        if state["episode_seed"] is None:  # never reset: nothing to rebuild
            self._seeds.bit_generator.state = state["seeds"]
            return None
        obs, _ = self.env.reset(seed=int(state["episode_seed"]))
        for action in np.asarray(state["actions"]):
            obs, *_ = self.env.step(action)
        self._episode_seed = int(state["episode_seed"])
        self._actions = [np.array(a, copy=True) for a in np.asarray(state["actions"])]
        self._seeds.bit_generator.state = state["seeds"]
        return obs


def make_replayable_env(env_id: str, action_repeat: int = 1, seed: int | None = None, **kwargs: Any) -> ReplayableEnv:
    """:func:`~dcem_agents.envs.make_env` wrapped (outermost) in a :class:`ReplayableEnv` with seed sequence ``seed``
    (a module-level function: picklable into ``SubprocVecEnv`` workers through ``functools.partial``); ``kwargs``
    go to ``gymnasium.make`` (e.g. ``render_mode``)."""
    return ReplayableEnv(make_env(env_id, action_repeat=action_repeat, seed=seed, **kwargs), seed)
