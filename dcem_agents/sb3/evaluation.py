"""Evaluate an :class:`~dcem_agents.sb3.policy.EmbeddedDCEMPolicy` (or any SB3 policy on belief observations).

The episodes run in ``n_envs`` parallel environments with one batched policy call per step; environment seeds and
planner-noise seeds come from one ``seed``, so two policies evaluated with the same arguments face the same initial
states and the same planner noise.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.evaluation import evaluate_policy
from tqdm import tqdm

from dcem_agents.sb3.belief_env import make_belief_vec_env

__all__ = ["evaluate_on_beliefs", "mean_ci95"]


def mean_ci95(returns: list[float]) -> tuple[float, float, float]:
    """Mean and the normal-approximation 95 % confidence interval ``mean ± 1.96 · std / sqrt(n)`` of ``returns``."""
    x = np.asarray(returns, dtype=np.float64)
    half = 1.96 * x.std(ddof=1) / math.sqrt(len(x)) if len(x) > 1 else float("nan")
    return float(x.mean()), float(x.mean() - half), float(x.mean() + half)


def evaluate_on_beliefs(model: Any, checkpoint: str | Path, episodes: int, seed: int, n_envs: int = 10,
                        label: str = "evaluate") -> dict[str, Any]:
    """Run ``episodes`` episodes of ``model`` (an SB3 algorithm or policy) with deterministic (mean) actions.

    :param checkpoint: the phase-2 checkpoint whose task and filter the environments use.
    :param label: name of the progress bar (finished episodes).
    :return: per-episode ``returns``, ``return_mean``, ``return_std``, ``ci95`` and ``seconds``.
    """
    env = make_belief_vec_env(checkpoint, n_envs=min(n_envs, episodes), seed=seed)
    t0 = time.perf_counter()
    with tqdm(total=episodes, desc=label, unit="episode", dynamic_ncols=True, leave=False) as bar:

        def count_finished(locals_: dict[str, Any], _globals: dict[str, Any]) -> None:
            if locals_["done"]:  # called only for sub-environments with episodes still to run
                bar.update(1)

        returns, lengths = evaluate_policy(model, env, n_eval_episodes=episodes, deterministic=True,
                                           return_episode_rewards=True, callback=count_finished)
    seconds = time.perf_counter() - t0
    env.close()
    mean, lo, hi = mean_ci95(list(returns))
    return {"episodes": len(returns), "seed": seed, "returns": [round(float(r), 2) for r in returns],
            "return_mean": mean, "return_std": float(np.std(returns)), "ci95": [lo, hi],
            "agent_steps": int(np.sum(lengths)), "seconds": seconds}
