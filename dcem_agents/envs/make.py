"""Make any Gymnasium environment with a ``Box`` action space ready for the agents, DeepMind Control included.

``make_env("dm_control/cartpole-swingup-v0", action_repeat=8, seed=0)`` returns a ``gymnasium.Env`` whose

- observations are one flat ``float32`` vector: a ``Box`` observation is flattened; a ``Dict`` of ``Box`` entries
  (DeepMind Control through shimmy) is concatenated in **alphabetical key order** (the order of Gymnasium's
  ``FlattenObservation``; for cartpole: ``position`` (3) then ``velocity`` (2)), each entry flattened;
- rewards are Python ``float`` (shimmy can return ints or numpy scalars);
- actions are repeated ``action_repeat`` times, rewards summed, stopping early at termination or truncation;
- first ``reset()`` without an explicit seed uses ``seed``; the action and observation spaces are seeded too.

Unsupported spaces (``Discrete`` actions, image or non-``Box`` observations, ...) raise :class:`UnsupportedSpaceError`
naming the space. shimmy and dm_control are imported only for ``dm_control/...`` ids.
"""

from __future__ import annotations

import importlib
import logging
import math
import os
import sys
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

__all__ = ["ActionRepeat", "FlatFloatObservation", "UnsupportedSpaceError", "make_env", "make_env_fn"]

logger = logging.getLogger(__name__)

#: Action bounds at or beyond this magnitude are a sentinel for "unbounded" (DeepMind Control's LQR declares 1e10).
UNBOUNDED_ACTION = 1e6


class UnsupportedSpaceError(ValueError):
    """The environment's action or observation space cannot be used by the agents; the message names the space."""


class FlatFloatObservation(gym.ObservationWrapper):
    """Flatten a ``Box`` or ``Dict``-of-``Box`` observation into one ``float32`` vector (dict keys sorted).

    :param env: the environment to wrap.
    :raises UnsupportedSpaceError: for images (``uint8`` boxes of rank >= 2) and any other space type.
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        space = env.observation_space
        if isinstance(space, gym.spaces.Dict):
            self._keys: list[str] | None = sorted(space.spaces)
            parts = [space.spaces[k] for k in self._keys]
            for key, part in zip(self._keys, parts):
                _check_vector_box(part, f"observation entry {key!r}")
        else:
            self._keys = None
            parts = [space]
            _check_vector_box(space, "observation space")
        low = np.concatenate([np.asarray(np.broadcast_to(p.low, p.shape), np.float64).reshape(-1) for p in parts])
        high = np.concatenate([np.asarray(np.broadcast_to(p.high, p.shape), np.float64).reshape(-1) for p in parts])
        self.observation_space = gym.spaces.Box(low.astype(np.float32), high.astype(np.float32), dtype=np.float32)

    def observation(self, observation: Any) -> np.ndarray:
        """The flat ``float32`` vector of ``observation``."""
        if self._keys is None:
            return np.asarray(observation, dtype=np.float32).reshape(-1)
        return np.concatenate([np.asarray(observation[k], dtype=np.float32).reshape(-1) for k in self._keys])


def _check_vector_box(space: gym.Space, what: str) -> None:
    if not isinstance(space, gym.spaces.Box):
        raise UnsupportedSpaceError(f"unsupported {what} {space!r}: only Box (or a Dict of Box) observations are supported")
    if space.dtype == np.uint8 and len(space.shape) >= 2:
        raise UnsupportedSpaceError(
            f"unsupported {what} {space!r}: image observations are not supported (proprioceptive vectors only)"
        )


class ActionRepeat(gym.Wrapper):
    """Repeat each action ``repeat`` times, summing rewards; stop early at termination or truncation.

    ``info["action_repeat_steps"]`` is the number of environment steps the agent step took (``repeat``, or fewer when
    the episode ended inside it), so that budgets count real environment steps.

    :param env: the environment to wrap.
    :param repeat: number of environment steps per agent step (>= 1).
    """

    def __init__(self, env: gym.Env, repeat: int) -> None:
        if repeat < 1:
            raise ValueError(f"action_repeat must be >= 1, got {repeat}")
        super().__init__(env)
        self.repeat = repeat

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        total = 0.0
        for k in range(1, self.repeat + 1):
            obs, reward, terminated, truncated, info = self.env.step(action)
            total += float(reward)
            if terminated or truncated:
                break
        return obs, total, terminated, truncated, {**info, "action_repeat_steps": k}


class _FloatReward(gym.RewardWrapper):
    def reward(self, reward: Any) -> float:
        return float(reward)


class _SeedFirstReset(gym.Wrapper):
    """Use ``seed`` for the first ``reset()`` that gets no seed of its own."""

    def __init__(self, env: gym.Env, seed: int | None) -> None:
        super().__init__(env)
        self._seed = seed

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        if seed is None:
            seed, self._seed = self._seed, None
        else:
            self._seed = None
        return self.env.reset(seed=seed, options=options)


def _prefer_headless_egl() -> None:
    """On a Linux machine without a display, let DeepMind Control render through EGL unless told otherwise.

    With ``MUJOCO_GL`` unset, dm_control picks GLFW whenever the ``glfw`` package imports, which it does without a
    display; the first task that needs a rendering context then dies with ``mujoco.FatalError`` (quadruped-escape
    uploads its terrain to the renderer at every reset). So, before dm_control chooses its backend, try EGL; if EGL does
    not initialize here, undo the choice and leave dm_control's automatic one. Nothing changes when ``MUJOCO_GL`` is
    set, a display exists, or dm_control's renderer was already imported.
    """
    if (sys.platform != "linux" or "MUJOCO_GL" in os.environ or os.environ.get("DISPLAY")
            or os.environ.get("WAYLAND_DISPLAY") or "dm_control._render" in sys.modules):
        return
    os.environ["MUJOCO_GL"] = "egl"
    try:
        importlib.import_module("dm_control._render")
    except Exception as e:  # noqa: BLE001 - any failure: fall back to dm_control's own choice
        del os.environ["MUJOCO_GL"]
        for name in [m for m in sys.modules if m == "dm_control._render" or m.startswith("dm_control._render.")]:
            del sys.modules[name]
        logger.info("no display and no usable EGL (%s: %s): DeepMind Control chooses its own OpenGL backend",
                    type(e).__name__, e)
        return
    logger.info("no display and MUJOCO_GL unset: DeepMind Control renders through EGL (set MUJOCO_GL to choose)")


class _RenderContextHint(gym.Wrapper):
    """Name the remedy when a DeepMind Control reset needs an OpenGL context that this process cannot create."""

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        import mujoco  # noqa: PLC0415 - already imported by dm_control

        try:
            return self.env.reset(seed=seed, options=options)
        except mujoco.FatalError as e:
            raise RuntimeError(
                f"{self.spec.id if self.spec else 'this task'} renders at reset and has no OpenGL context: set MUJOCO_GL="
                f"egl (or osmesa) before dm_control is first imported (MUJOCO_GL is "
                f"{os.environ.get('MUJOCO_GL', 'unset')}; mujoco said: {e})") from e


def _dm_control_step_limit(env: gym.Env) -> float | None:
    """The wrapped dm_control environment's step limit (``inf`` for a task without a time limit), if it says one."""
    inner = getattr(env.unwrapped, "_env", None)
    limit = getattr(inner, "_step_limit", None)
    return float(limit) if isinstance(limit, (int, float)) else None


def make_env(env_id: str, action_repeat: int = 1, seed: int | None = None, **kwargs: Any) -> gym.Env:
    """Make ``env_id`` with flat ``float32`` observations, ``float`` rewards and action repeat.

    :param env_id: a Gymnasium id, e.g. ``"Pendulum-v1"`` or ``"dm_control/cartpole-swingup-v0"`` (through shimmy).
    :param action_repeat: environment steps per agent step; rewards are summed.
    :param seed: seed of the first reset and of the action/observation spaces (None: unseeded).
    :param kwargs: passed to ``gymnasium.make``.
    :raises UnsupportedSpaceError: the action space is not a flat ``Box`` with finite bounds (below
        :data:`UNBOUNDED_ACTION` in magnitude), the observation space is not usable, or the environment has no time
        limit (neither a registered ``max_episode_steps`` nor, for DeepMind Control, a finite task time limit).
    """
    dm_control = env_id.startswith("dm_control/")
    if dm_control:
        _prefer_headless_egl()
        import shimmy  # noqa: PLC0415 - lazy: only DeepMind Control needs it

        gym.register_envs(shimmy)
    env = gym.make(env_id, **kwargs)
    if not isinstance(env.action_space, gym.spaces.Box):
        env.close()
        raise UnsupportedSpaceError(
            f"{env_id}: unsupported action space {env.action_space!r}: only continuous Box action spaces are supported"
        )
    if len(env.action_space.shape) != 1:
        env.close()
        raise UnsupportedSpaceError(f"{env_id}: action space {env.action_space!r} must be a flat vector (one "
                                    "dimension); flatten it with a wrapper registered under a new id")
    if not (np.all(np.isfinite(env.action_space.low)) and np.all(np.isfinite(env.action_space.high))):
        env.close()
        raise UnsupportedSpaceError(f"{env_id}: action space {env.action_space!r} must have finite bounds for planning")
    widest = float(max(np.max(np.abs(env.action_space.low)), np.max(np.abs(env.action_space.high))))
    if widest >= UNBOUNDED_ACTION:
        env.close()
        raise UnsupportedSpaceError(
            f"{env_id}: action space {env.action_space!r} reaches {widest:g}, which stands for 'unbounded': the seed "
            "episodes sample the box uniformly and the planner starts at half its width; wrap the environment in an "
            "ActionWrapper that declares the bounds you intend and register it under a new id")
    try:
        env = FlatFloatObservation(env)
    except UnsupportedSpaceError as e:
        env.close()
        raise UnsupportedSpaceError(f"{env_id}: {e}") from None
    # DeepMind Control ends its episodes itself (the task's time limit, infinite for LQR); any other id needs
    # Gymnasium's TimeLimit
    if "max_episode_steps" not in kwargs and (env.spec is None or env.spec.max_episode_steps is None):
        if not dm_control:
            env.close()
            raise UnsupportedSpaceError(
                f"{env_id}: no time limit (registered without max_episode_steps), so an episode that never "
                "terminates would run forever; register it with gymnasium.register(..., max_episode_steps=N)")
        limit = _dm_control_step_limit(env)
        if limit is not None and math.isinf(limit):
            env.close()
            raise UnsupportedSpaceError(
                f"{env_id}: the task has no time limit, so an episode that never terminates would run forever; "
                "register it with gymnasium.register(..., max_episode_steps=N), or pass max_episode_steps=N to make_env")
    if dm_control:
        env = _RenderContextHint(env)
    env = _FloatReward(env)
    if action_repeat != 1:
        env = ActionRepeat(env, action_repeat)
    env = _SeedFirstReset(env, seed)
    if seed is not None:
        env.action_space.seed(seed)
        env.observation_space.seed(seed)
    return env


def make_env_fn(env_id: str, action_repeat: int = 1, **kwargs: Any) -> Callable[[int | None], gym.Env]:
    """A factory ``seed -> env`` for trainers that create their own environments (e.g. several for evaluation)."""

    def factory(seed: int | None = None) -> gym.Env:
        return make_env(env_id, action_repeat=action_repeat, seed=seed, **kwargs)

    return factory
