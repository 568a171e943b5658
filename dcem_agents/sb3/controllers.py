"""SB3 policies as controllers of the evaluation harness, and the evaluation of a policy on beliefs.

:class:`PolicyController` runs a policy on belief observations (:class:`~dcem_agents.sb3.policy.EmbeddedDCEMPolicy`)
from the beliefs of its world model's filter; :class:`ObservationPolicyController` runs a model-free SB3 policy on
the environment's observations. Both plug into :func:`~dcem_agents.evaluation.harness.evaluate_controller`, the one
loop that evaluates anything in this package.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from dcem_agents.envs import make_env
from dcem_agents.evaluation.harness import EvaluationRun, evaluate_controller
from dcem_agents.sb3.belief_env import SEED_RANGE

__all__ = ["ObservationPolicyController", "PolicyController", "evaluate_belief_policy"]


class PolicyController:
    """An SB3 policy on belief observations as a :class:`~dcem_agents.planning.mpc.Controller` (mean actions).

    Each call draws one planner-noise seed per environment from ``generator`` and hands the policy
    ``[belief, seed]`` (B, D + 1), the observation of :class:`~dcem_agents.sb3.belief_env.BeliefVecEnv`.
    """

    def __init__(self, policy: Any) -> None:
        self.policy = policy
        self.seed_range = SEED_RANGE

    def reset(self, n_envs: int) -> None:
        """Nothing to forget: the policy is a function of the observation."""

    @torch.no_grad()
    def act(self, belief: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Mean actions (n_envs, A) of the policy for the beliefs (n_envs, D)."""
        device = generator.device if generator is not None else belief.device
        seeds = torch.randint(0, self.seed_range, (belief.shape[0], 1), generator=generator, device=device)
        obs = torch.cat([belief, seeds.to(belief.device, belief.dtype)], 1)
        return self.policy._predict(obs, deterministic=True)


class ObservationPolicyController:
    """A model-free SB3 policy on the environment's observations as a :class:`~dcem_agents.planning.mpc.Controller`.

    Deterministic actions through ``policy.predict``, which maps a squashed policy's ``[-1, 1]`` outputs (SAC, TD3)
    to the action box and clips the others' (PPO, A2C).
    """

    def __init__(self, policy: Any) -> None:
        self.policy = policy

    def reset(self, n_envs: int) -> None:
        """Nothing to forget: the policy is a function of the observation."""

    @torch.no_grad()
    def act(self, obs: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Actions (n_envs, A) for the observations (n_envs, O); ``generator`` is unused (deterministic)."""
        actions, _ = self.policy.predict(obs.detach().cpu().numpy(), deterministic=True)
        return torch.as_tensor(np.asarray(actions, np.float32).reshape(obs.shape[0], -1), device=obs.device)


def evaluate_belief_policy(policy: Any, seeds: list[int], seed: int, label: str | None = "evaluate",
                           n_envs: int = 10) -> EvaluationRun:
    """Mean actions of ``policy`` (an :class:`~dcem_agents.sb3.policy.EmbeddedDCEMPolicy`) on one episode per seed.

    The beliefs come from the policy's own world model (the filter PPO's rollouts use); the planner-noise seeds from
    a generator seeded with ``seed``; the environment is the one the policy's components were trained on.
    """
    device = next(policy.parameters()).device
    return evaluate_controller(lambda: make_env(policy.env_id, action_repeat=policy.action_repeat), policy.world_model,
                               PolicyController(policy), seeds, generator=torch.Generator(device=device).manual_seed(seed),
                               n_envs=n_envs, label=label)
