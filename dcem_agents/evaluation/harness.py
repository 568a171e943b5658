"""The one evaluation harness: a controller on seeded episodes in batched environments, per-episode records back.

Every evaluation of the package runs through :func:`evaluate_controller`: the trainers' periodic evaluations, the
runners' final evaluations, ``evaluate.py --checkpoint`` and the comparison report (``evaluate.py --entry``). Any
controller works — a planner on a world model's beliefs, an SB3 policy on beliefs
(:class:`~dcem_agents.sb3.controllers.PolicyController`) or a model-free SB3 policy on observations
(:class:`~dcem_agents.sb3.controllers.ObservationPolicyController`, with ``model=None``).

Episode ``i`` resets its environment with ``seeds[i]``; episodes run ``n_envs`` at a time with one batched
controller call per step (:func:`~dcem_agents.training.rollout.run_episodes`), drawing the planner's randomness from
one generator, so the same arguments give the same episodes. :meth:`EvaluationRun.summary` gives the statistics of
:mod:`~dcem_agents.evaluation.stats` (sample std, bootstrap CI).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from tqdm import tqdm

from dcem_agents.evaluation.stats import summarize
from dcem_agents.models.rssm import RSSM
from dcem_agents.planning.mpc import Controller
from dcem_agents.training.rollout import run_episodes

__all__ = ["EpisodeRecord", "EvaluationRun", "evaluate_controller"]


@dataclass(frozen=True)
class EpisodeRecord:
    """One evaluation episode: its environment ``seed``, ``return_`` (sum of environment rewards), ``agent_steps``."""

    seed: int
    return_: float
    agent_steps: int


@dataclass
class EvaluationRun:
    """The records of one evaluation and its timings (controller calls only, and the whole run)."""

    episodes: list[EpisodeRecord] = field(default_factory=list)
    plan_seconds: float = 0.0
    plan_calls: int = 0
    seconds: float = 0.0
    env_steps: int = 0  # of all episodes (an action repeat cut short by an episode's end counts its real steps)

    @property
    def returns(self) -> list[float]:
        """Per-episode returns, in the order of the seeds."""
        return [e.return_ for e in self.episodes]

    @property
    def agent_steps(self) -> list[int]:
        """Per-episode agent steps, in the order of the seeds."""
        return [e.agent_steps for e in self.episodes]

    @property
    def ms_per_plan(self) -> float:
        """Milliseconds per batched controller call."""
        return 1000.0 * self.plan_seconds / max(self.plan_calls, 1)

    @property
    def ms_per_action(self) -> float:
        """Milliseconds of controller time per action of one environment (a batched call shared by its envs)."""
        return 1000.0 * self.plan_seconds / max(sum(self.agent_steps), 1)

    def summary(self, decimals: int | None = None) -> dict[str, Any]:
        """Records and statistics: ``episodes``, ``seeds``, ``returns``, ``agent_steps``, ``return_mean``,
        ``return_std`` (ddof 1), ``ci95`` (bootstrap), ``median``, ``iqm``, ``ms_per_plan``, ``seconds``.

        :param decimals: round the per-episode returns to this many decimals (None: as measured).
        """
        stats = summarize(self.returns)
        returns = self.returns if decimals is None else [round(r, decimals) for r in self.returns]
        return {"episodes": len(self.episodes), "seeds": [e.seed for e in self.episodes], "returns": returns,
                "agent_steps": self.agent_steps, "return_mean": stats["mean"], "return_std": stats["std"],
                "ci95": stats["ci95"], "median": stats["median"], "iqm": stats["iqm"],
                "ms_per_plan": self.ms_per_plan, "seconds": self.seconds}


class _Ticking:
    """A controller that calls ``on_step()`` after every batched :meth:`act` (drives a progress display)."""

    def __init__(self, controller: Controller, on_step: Callable[[], None]) -> None:
        self.controller, self.on_step = controller, on_step

    def reset(self, n_envs: int) -> None:
        self.controller.reset(n_envs)

    def act(self, belief: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        actions = self.controller.act(belief, generator)
        self.on_step()
        return actions


def evaluate_controller(
    envs: Callable[[], gym.Env] | Sequence[gym.Env],
    model: RSSM | None,
    controller: Controller,
    seeds: Sequence[int],
    *,
    generator: torch.Generator | None,
    n_envs: int = 10,
    label: str | None = "evaluate",
    on_step: Callable[[], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
    batch_generator: Callable[[int], torch.Generator] | None = None,
    after_batch: Callable[[EvaluationRun], None] | None = None,
) -> EvaluationRun:
    """One episode per seed in ``seeds``, ``n_envs`` at a time, with batched control and no exploration noise.

    :param envs: a factory ``() -> env`` (the harness makes ``min(n_envs, len(seeds))`` environments and closes them)
        or environments to reuse (at most ``n_envs`` of them are used; the caller closes them).
    :param model: the world model whose filter gives the beliefs (None: the controller acts on observations).
    :param controller: acts on beliefs (or observations) (n, D) -> actions (n, A).
    :param seeds: reset seed of each episode (E,).
    :param generator: the controller's random generator, on the planner's device (seed it for reproducible runs).
    :param label: name of a progress bar counting finished episodes (None: no bar).
    :param on_step: called after every batched controller call.
    :param on_batch: called with the number of episodes after every finished batch.
    :param batch_generator: independent batches: ``seed -> generator`` gives each batch of ``n_envs`` episodes a
        fresh generator, seeded with the environment seed of its first episode, instead of one ``generator`` shared by
        the batches in turn. A batch's returns then depend only on its own seeds, so batches may run anywhere, in any
        order (``evaluate.py --ray``), and give the same records as here.
    :param after_batch: called after every finished batch with the run so far (records of the finished batches;
        ``seconds`` up to now), e.g. to save progress: batches start at multiples of ``n_envs`` in ``seeds``, so a run
        resumed on the remaining seeds with the generator's state at that point continues it exactly.
    """
    if n_envs < 1 or not seeds:
        raise ValueError(f"evaluate_controller needs n_envs >= 1 and at least one seed, got {n_envs} and {len(seeds)}")
    owned = callable(envs)
    pool = [envs() for _ in range(min(n_envs, len(seeds)))] if owned else list(envs)[:n_envs]  # type: ignore[operator]
    ctrl = controller if on_step is None else _Ticking(controller, on_step)
    run = EvaluationRun()
    t0 = time.perf_counter()
    try:
        with tqdm(total=len(seeds), desc=label, unit="episode", dynamic_ncols=True, leave=False,
                  disable=label is None) as bar:
            for i in range(0, len(seeds), len(pool)):
                part = [int(s) for s in seeds[i : i + len(pool)]]
                episodes, stats = run_episodes(pool[: len(part)], model, ctrl, part, generator=generator
                                               if batch_generator is None else batch_generator(part[0]))
                run.episodes += [EpisodeRecord(s, e.return_, len(e.rewards)) for s, e in zip(part, episodes)]
                run.env_steps += stats.env_steps
                run.plan_seconds += stats.plan_seconds
                run.plan_calls += stats.plan_calls
                bar.update(len(part))
                bar.set_postfix(ret=f"{np.mean(run.returns):.0f}")
                if on_batch is not None:
                    on_batch(len(part))
                if after_batch is not None:
                    run.seconds = time.perf_counter() - t0
                    after_batch(run)
    finally:
        if owned:
            for env in pool:
                env.close()
    run.seconds = time.perf_counter() - t0
    return run
