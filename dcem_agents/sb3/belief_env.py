"""The belief the planner starts from, carried inside the observation: a VecEnv wrapper that runs the RSSM filter.

SB3's PPO treats observations as a stateless, shuffled set, but the world model is recurrent: the planner must
start from the belief ``b_t = [h_t, x̃_t]`` that the filter
(:meth:`~dcem_agents.models.rssm.RSSM.observe_step`) computed from the whole episode so far. :class:`BeliefVecEnv`
runs that filter next to the environments and hands the policy the observation

    [ b_t  (belief_dim values) ,  s_t  (one planner-noise seed, an integer stored exactly in float32) ]

so the rollout buffer stores exactly what the policy saw. At update time the policy re-plans from the same belief with
noise regenerated from the same seed, so the mean action (and PPO's probability ratio) is reproduced exactly.

Limits (documented in the README):

- The filter uses the wrapper's copy of the world model. If PPO trains the transition or observation model, beliefs
  computed during a rollout use the weights of that rollout's start; add :class:`BeliefSyncCallback` to copy the
  policy's weights into the filter before every rollout and when training ends (pass it the evaluation
  environments too: ``BeliefSyncCallback(eval_env)``), and call :func:`sync_belief_filter` on an environment built
  for a loaded model. With the default trained components (decoder, reward head) the filter never changes.
- Do not normalize observations (``VecNormalize(norm_obs=False)``): the belief is already normalized and the seed must
  reach the policy unchanged. Normalizing rewards is fine.
- The filter sees the actions actually executed (SB3 clips them to the action box before ``step``).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecEnvWrapper, VecMonitor

from dcem_agents.envs.replayable import make_replayable_env
from dcem_agents.models.rssm import RSSM
from dcem_agents.training.components import load_components

__all__ = ["SEED_RANGE", "BeliefSyncCallback", "BeliefVecEnv", "find_belief_env", "make_belief_vec_env",
           "sync_belief_filter"]

#: planner-noise seeds are integers in [0, SEED_RANGE): exactly representable in float32
SEED_RANGE = 2**24


class BeliefVecEnv(VecEnvWrapper):
    """Replace each observation by ``[belief, noise seed]`` computed with ``model``'s filter (module docstring).

    :param venv: vectorized environments with flat float observations (see :func:`dcem_agents.envs.make_env`).
    :param model: the world model whose filter produces the beliefs (used without gradient, on CPU or its device).
    :param seed: seed of the generator of the planner-noise seeds.
    """

    def __init__(self, venv: VecEnv, model: RSSM, seed: int = 0) -> None:
        if venv.observation_space.shape != (model.obs_dim,):
            raise ValueError(f"BeliefVecEnv: env observations {venv.observation_space.shape} do not match the model's "
                             f"obs_dim {model.obs_dim}")
        space = gym.spaces.Box(-np.inf, np.inf, (model.belief_dim + 1,), np.float32)
        super().__init__(venv, observation_space=space)
        self.model = model
        self.rng = np.random.default_rng(seed)
        self._belief: torch.Tensor | None = None
        self._actions: np.ndarray | None = None

    def seed(self, seed: int | None = None):  # type: ignore[override]
        """Seed the environments and the noise-seed generator."""
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        return self.venv.seed(seed)

    def get_resume_state(self) -> dict[str, Any]:
        """The filter's beliefs (n_envs, D) and the noise-seed generator's state (for an exact resume)."""
        return {"rng": self.rng.bit_generator.state,
                "belief": None if self._belief is None else self._belief.detach().cpu().clone()}

    def set_resume_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`get_resume_state` (the beliefs go to the filter model's device)."""
        self.rng.bit_generator.state = state["rng"]
        self._belief = None if state["belief"] is None else state["belief"].to(self._param().device)

    def _param(self) -> torch.Tensor:
        return next(self.model.parameters())

    def _observation(self) -> np.ndarray:
        seeds = self.rng.integers(0, SEED_RANGE, size=(self.num_envs, 1)).astype(np.float32)
        return np.concatenate([self._belief.cpu().numpy().astype(np.float32), seeds], 1)

    @torch.no_grad()
    def reset(self) -> np.ndarray:
        obs = self.venv.reset()
        p = self._param()
        self._belief = self.model.initial(torch.as_tensor(obs, device=p.device, dtype=p.dtype))
        return self._observation()

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions, np.float32).reshape(self.num_envs, -1)
        self.venv.step_async(actions)

    @torch.no_grad()
    def step_wait(self):
        obs, rewards, dones, infos = self.venv.step_wait()
        p = self._param()
        obs_t = torch.as_tensor(obs, device=p.device, dtype=p.dtype)
        actions = torch.as_tensor(self._actions, device=p.device, dtype=p.dtype)
        belief = self.model.observe_step(self._belief, actions, obs_t)
        if dones.any():  # finished envs were auto-reset: `obs` is the first observation of the next episode
            self._terminal_beliefs(dones, infos, actions)
            fresh = self.model.initial(obs_t)
            done = torch.as_tensor(dones, device=p.device).unsqueeze(-1)
            belief = torch.where(done, fresh, belief)
        self._belief = belief
        return self._observation(), rewards, dones, infos

    def _terminal_beliefs(self, dones: np.ndarray, infos: list[dict], actions: torch.Tensor) -> None:
        """Replace each ``info["terminal_observation"]`` (raw, obs_dim) by ``[belief, seed]`` of that last step.

        SB3 bootstraps truncated episodes with ``V(terminal_observation)``, so it must be in the policy's observation
        space: the belief filtered up to and including the final observation.
        """
        idx = [i for i in np.flatnonzero(dones) if "terminal_observation" in infos[i]]
        if not idx:
            return
        p = self._param()
        last = torch.as_tensor(np.stack([np.asarray(infos[i]["terminal_observation"], np.float32) for i in idx]),
                               device=p.device, dtype=p.dtype)
        rows = torch.as_tensor(idx, device=p.device)
        final = self.model.observe_step(self._belief[rows], actions[rows], last).cpu().numpy().astype(np.float32)
        seeds = self.rng.integers(0, SEED_RANGE, size=(len(idx), 1)).astype(np.float32)
        for j, i in enumerate(idx):
            infos[i]["terminal_observation"] = np.concatenate([final[j], seeds[j]])


def find_belief_env(env: VecEnv) -> BeliefVecEnv:
    """The :class:`BeliefVecEnv` in a chain of VecEnv wrappers (``VecMonitor``, ``VecNormalize``, ... around it).

    :raises TypeError: there is none.
    """
    inner = env
    while not isinstance(inner, BeliefVecEnv) and hasattr(inner, "venv"):
        inner = inner.venv
    if not isinstance(inner, BeliefVecEnv):
        raise TypeError(f"no BeliefVecEnv in the wrapper chain of {type(env).__name__}: build the environment with "
                        "dcem_agents.sb3.make_belief_vec_env (or wrap it in BeliefVecEnv)")
    return inner


def sync_belief_filter(env: VecEnv, policy: torch.nn.Module) -> None:
    """Copy ``policy.world_model``'s weights into the filter of ``env``'s :class:`BeliefVecEnv`.

    For environments built for a policy whose PPO training changed the transition or observation model: an
    evaluation environment, or one made with :func:`make_belief_vec_env` for a model loaded from a zip (which starts
    from the phase-2 checkpoint's weights).
    """
    find_belief_env(env).model.load_state_dict(policy.world_model.state_dict())


class BeliefSyncCallback(BaseCallback):
    """Copy the policy's world-model weights into the :class:`BeliefVecEnv` filters before every rollout and when
    training ends: the training environment's and those of ``envs`` (evaluation environments, e.g. the one given to
    SB3's ``EvalCallback``, which evaluates during the next rollout).

    Needed only when PPO trains the transition or observation model (see :mod:`dcem_agents.sb3.belief_env`).

    :param envs: other environments whose filters follow the policy's model.
    """

    def __init__(self, *envs: VecEnv, verbose: int = 0) -> None:
        super().__init__(verbose)
        self.envs = envs

    def _sync(self) -> None:
        for env in (self.training_env, *self.envs):
            sync_belief_filter(env, self.model.policy)

    def _on_rollout_start(self) -> None:
        self._sync()

    def _on_training_end(self) -> None:
        self._sync()

    def _on_step(self) -> bool:
        return True


def _make_env(env_id: str, action_repeat: int, seed: int, wrapper_class: Callable[..., gym.Env] | None,
              wrapper_kwargs: dict[str, Any], env_kwargs: dict[str, Any]) -> gym.Env:
    """One environment of :func:`make_belief_vec_env` (module level: a worker process unpickles it)."""
    env = make_replayable_env(env_id, action_repeat=action_repeat, seed=seed, **env_kwargs)
    return env if wrapper_class is None else wrapper_class(env, **wrapper_kwargs)


def make_belief_vec_env(checkpoint: str | Path, n_envs: int = 1, seed: int | None = None, monitor: bool = True,
                        vec_env_cls: type[VecEnv] | None = None,
                        vec_env_kwargs: dict[str, Any] | None = None,
                        wrapper_class: Callable[..., gym.Env] | None = None,
                        wrapper_kwargs: dict[str, Any] | None = None,
                        env_kwargs: dict[str, Any] | None = None) -> BeliefVecEnv:
    """``n_envs`` environments of a phase-2 checkpoint's task (its env id and action repeat), wrapped for the policy.

    Episode statistics (``VecMonitor``, for SB3's ``rollout/ep_rew_mean`` and ``evaluate_policy``) are in
    environment reward units. Environment ``i`` is a :class:`~dcem_agents.envs.ReplayableEnv` whose episodes are
    seeded from the sequence ``seed + i`` (so a checkpoint can restore it exactly, :mod:`dcem_agents.sb3.resume`);
    the noise seeds come from ``seed``.

    :param seed: as SB3's ``make_vec_env``: None (the default) draws one from the operating system's entropy, so that
        two unseeded runs differ; pass an integer to repeat a run. An evaluation environment should not share its
        seed sequences with the training ones (environment ``i`` of seed ``s`` replays those of environment ``i - 1``
        of seed ``s + 1``): give it a distant seed.

    :param vec_env_cls: SB3's ``DummyVecEnv`` (default) or ``SubprocVecEnv`` (MuJoCo steps in worker processes), as
        in SB3's ``make_vec_env``. The belief filter stays in this process, batched over the environments; the
        workers receive only the environment id, action repeat and seed (never the world model).
    :param vec_env_kwargs: keyword arguments of ``vec_env_cls`` (e.g. ``start_method="spawn"``).
    :param wrapper_class: a Gymnasium wrapper around each environment (e.g. ``Monitor``), as SB3's ``make_vec_env``
        applies it: outside the action repeat, so it sees agent steps; it must keep the observations unchanged. A
        ``Monitor`` (or subclass) records the episode statistics itself: no ``VecMonitor`` is added then.
    :param wrapper_kwargs: keyword arguments of ``wrapper_class``.
    :param env_kwargs: keyword arguments of ``gymnasium.make`` (e.g. ``render_mode="rgb_array"`` for SB3's
        ``VecVideoRecorder``).
    """
    from stable_baselines3.common.monitor import Monitor

    comps = load_components(checkpoint)
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % SEED_RANGE)
    env_id, action_repeat = comps.env_id, comps.action_repeat  # plain values: what a worker process receives
    fns = [partial(_make_env, env_id, action_repeat, seed + i, wrapper_class, wrapper_kwargs or {}, env_kwargs or {})
           for i in range(n_envs)]
    venv: VecEnv = (vec_env_cls or DummyVecEnv)(fns, **(vec_env_kwargs or {}))
    if monitor and not (isinstance(wrapper_class, type) and issubclass(wrapper_class, Monitor)):
        venv = VecMonitor(venv)
    venv.seed(seed)
    return BeliefVecEnv(venv, comps.model, seed)
