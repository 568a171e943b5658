"""Run a controller on a world model's beliefs in one or several Gymnasium environments, in lockstep.

:func:`run_episodes` is the one loop behind data collection (one environment, exploration noise) and evaluation
(several environments, batched planning): at every step all running environments get their actions from ONE
:meth:`Controller.act <dcem_agents.planning.mpc.Controller.act>` call on the stacked beliefs, the beliefs are
filtered with the real observations (:meth:`RSSM.observe_step <dcem_agents.models.rssm.RSSM.observe_step>`), and
environments that finished stop stepping while the others go on.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from dcem_agents.models.rssm import RSSM
from dcem_agents.planning.mpc import Controller

__all__ = ["Episode", "NonFiniteEnvironmentError", "RandomController", "RolloutStats", "run_episodes"]


class NonFiniteEnvironmentError(ValueError):
    """An environment returned a NaN or infinite observation or reward (nothing of that step was kept)."""


def _check_finite(env: gym.Env, seed: int, step: int, obs: np.ndarray, reward: float = 0.0) -> None:
    """Raise :class:`NonFiniteEnvironmentError` naming the environment, the episode's seed and the step."""
    if np.isfinite(obs).all() and np.isfinite(reward):
        return
    env_id = env.spec.id if env.spec is not None else type(env.unwrapped).__name__
    what = "observation" if not np.isfinite(obs).all() else f"reward ({reward})"
    raise NonFiniteEnvironmentError(
        f"environment {env_id} returned a non-finite {what} in the episode with reset seed {seed}, at agent step "
        f"{step} ({'after reset' if step == 0 else 'after an action'}); nothing of it entered the replay or the model")


@dataclass
class Episode:
    """One finished episode: observations (T+1, O), actions (T, A), rewards (T,), and whether it terminated."""

    obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminated: bool

    @property
    def return_(self) -> float:
        """Sum of the rewards."""
        return float(self.rewards.sum())


@dataclass
class RolloutStats:
    """Timing of :func:`run_episodes`: controller calls and the seconds they took, total seconds, agent steps and
    environment steps (``info["action_repeat_steps"]`` of :class:`~dcem_agents.envs.ActionRepeat`, else 1 per agent
    step)."""

    plan_calls: int = 0
    plan_seconds: float = 0.0
    seconds: float = 0.0
    steps: int = 0
    env_steps: int = 0
    returns: list[float] = field(default_factory=list)

    @property
    def ms_per_plan(self) -> float:
        """Mean milliseconds per batched controller call."""
        return 1000.0 * self.plan_seconds / max(self.plan_calls, 1)


class RandomController:
    """Uniform random actions in the box (PlaNet's seed episodes), with the :class:`Controller` interface."""

    def __init__(self, action_low: Tensor, action_high: Tensor) -> None:
        self.action_low = torch.as_tensor(action_low).reshape(-1)
        self.action_high = torch.as_tensor(action_high).reshape(-1)

    def reset(self, n_envs: int) -> None:
        """Nothing to forget."""

    def act(self, belief: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Uniform actions (n_envs, A)."""
        u = torch.rand(belief.shape[0], self.action_low.numel(), generator=generator)
        return self.action_low + (self.action_high - self.action_low) * u


@torch.no_grad()
def run_episodes(
    envs: Sequence[gym.Env],
    model: RSSM | None,
    controller: Controller,
    seeds: Sequence[int],
    *,
    generator: torch.Generator | None = None,
    rng: np.random.Generator | None = None,
    noise_std: float = 0.0,
    max_steps: int | None = None,
) -> tuple[list[Episode], RolloutStats]:
    """Run one episode in each of ``envs`` (reset with ``seeds``) with batched control; return them and timings.

    :param envs: environments with flat float observations and a ``Box`` action space (see :mod:`dcem_agents.envs`).
    :param model: world model whose beliefs the controller plans from (filtered with the real observations); None:
        the controller acts on the observations (n_envs, O) themselves, as ``float32`` CPU tensors (a model-free
        policy).
    :param controller: the controller; ``reset(len(envs))`` is called first.
    :param seeds: reset seed of each environment.
    :param generator: torch generator of the controller's sampling (CPU generator for :class:`RandomController`).
    :param rng: numpy generator of the exploration noise (needed when ``noise_std > 0``).
    :param noise_std: std of Gaussian exploration noise added to the actions (then clipped to the box).
    :param max_steps: stop every episode after this many agent steps (None: run until termination/truncation).
    :raises NonFiniteEnvironmentError: an environment returned a NaN or infinite observation or reward.
    """
    if noise_std > 0 and rng is None:
        raise ValueError("run_episodes: exploration noise needs a numpy Generator `rng`")
    if model is None:
        dtype, device = torch.float32, torch.device("cpu")
    else:
        param = next(model.parameters())
        dtype, device = param.dtype, param.device
    low = np.asarray(envs[0].action_space.low, np.float32)
    high = np.asarray(envs[0].action_space.high, np.float32)
    start = time.perf_counter()
    stats = RolloutStats()
    first = [env.reset(seed=int(s))[0] for env, s in zip(envs, seeds)]
    for env, s, o in zip(envs, seeds, first):
        _check_finite(env, int(s), 0, np.asarray(o))
    obs_lists = [[np.asarray(o, np.float32)] for o in first]
    act_lists: list[list[np.ndarray]] = [[] for _ in envs]
    rew_lists: list[list[float]] = [[] for _ in envs]
    terminated = [False] * len(envs)
    running = np.ones(len(envs), dtype=bool)
    first_obs = torch.as_tensor(np.stack(first), dtype=dtype, device=device)
    belief = first_obs if model is None else model.initial(first_obs)
    controller.reset(len(envs))
    steps = 0
    while running.any() and (max_steps is None or steps < max_steps):
        t0 = time.perf_counter()
        actions = controller.act(belief, generator).detach().cpu().numpy().astype(np.float32)
        stats.plan_seconds += time.perf_counter() - t0
        stats.plan_calls += 1
        if noise_std > 0:
            actions = actions + noise_std * rng.standard_normal(actions.shape).astype(np.float32)
        actions = np.clip(actions, low, high)
        next_obs = np.stack([o[-1] for o in obs_lists])
        for i in np.flatnonzero(running):
            obs, reward, term, trunc, info = envs[i].step(actions[i])
            _check_finite(envs[i], int(seeds[i]), steps + 1, np.asarray(obs), float(reward))
            obs_lists[i].append(np.asarray(obs, np.float32))
            act_lists[i].append(actions[i])
            rew_lists[i].append(float(reward))
            next_obs[i] = obs
            stats.steps += 1
            stats.env_steps += int(info.get("action_repeat_steps", 1))
            if term or trunc:
                running[i], terminated[i] = False, bool(term)
        observed = torch.as_tensor(next_obs, dtype=dtype, device=device)
        if model is None:
            belief = observed
        else:
            belief = model.observe_step(belief, torch.as_tensor(actions, dtype=dtype, device=device), observed)
        steps += 1
    episodes = [
        Episode(np.stack(o), np.stack(a).reshape(len(a), -1), np.asarray(r, np.float32), t)
        for o, a, r, t in zip(obs_lists, act_lists, rew_lists, terminated)
    ]
    stats.seconds = time.perf_counter() - start
    stats.returns = [e.return_ for e in episodes]
    return episodes, stats
