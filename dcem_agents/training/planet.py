"""Online maximum-likelihood training of the world model (the paper's phase 1, PlaNet's training procedure).

``seed_episodes`` episodes of uniform random actions, then repeat: ``updates_per_episode`` gradient steps on the
world model's loss (:meth:`RSSM.loss <dcem_agents.models.rssm.RSSM.loss>`, terms weighted and summed) on chunks from
the replay, and one episode collected with the controller plus Gaussian exploration noise. Every ``eval_every``
environment steps the controller (without noise) runs ``eval_episodes`` episodes in parallel environments with fixed
seeds. After every ``checkpoint_every`` iterations everything needed to resume is handed to ``save_fn``: model,
optimizer, replay (or, with a :class:`~dcem_agents.training.replay_store.ReplayStore`, the manifest of its segment
files: each episode is written once), the numpy and torch generator states, counters and evaluation history.

The environment factory, model, controller, metrics logger and checkpoint writer are injected, so the loop knows
nothing about configs, files or a particular environment.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from tqdm import tqdm

from dcem_agents.config import field
from dcem_agents.evaluation.harness import evaluate_controller
from dcem_agents.models.rssm import RSSM
from dcem_agents.planning.mpc import Controller
from dcem_agents.training.metrics import MetricsLogger
from dcem_agents.training.replay import EpisodeReplay
from dcem_agents.training.replay_store import ReplayStore, is_manifest
from dcem_agents.training.rollout import RandomController, run_episodes

__all__ = ["NonFiniteTrainingError", "PlanetTrainer", "TrainSettings"]

log = logging.getLogger(__name__)


class NonFiniteTrainingError(RuntimeError):
    """Too many gradient steps in a row had a NaN or infinite loss or gradient."""


@dataclass
class TrainSettings:
    """Schedule and optimization of the maximum-likelihood phase (the ``train:`` section of a preset)."""

    total_env_steps: int = field(2_000_000, help="environment steps (action repeats included) to train for")
    seed_episodes: int = field(5, help="episodes of uniform random actions before planning starts")
    updates_per_episode: int = field(100, help="model gradient steps before each collected episode")
    updates_per_step: float | None = field(None, help="instead: model gradient steps per agent step collected (for "
                                                      "tasks whose episodes vary in length; null: per episode)")
    batch_size: int = field(50, help="chunks per gradient step")
    chunk_length: int = field(50, help="agent steps per chunk")
    overshooting: int = field(12, help="open-loop steps K of the overshooting loss terms (0: teacher forcing only)")
    overshoot_weight: float = field(1.0, help="weight of the overshoot_obs and overshoot_reward terms")
    overshoot_stride: int = field(1, help="open-loop rollouts start at every stride-th step of a chunk")
    reward_weight: float = field(1.0, help="weight of the reward terms")
    continuation_weight: float = field(1.0, help="weight of the continuation term (models with the continuation head)")
    value_weight: float = field(1.0, help="weight of the value term (models with the value head)")
    value_lambda: float = field(0.95, help="lambda of the value head's TD(lambda) returns")
    learning_rate: float = field(1e-3, help="Adam learning rate")
    adam_eps: float = field(1e-4, help="Adam epsilon")
    grad_clip: float = field(100.0, help="max global gradient norm")
    exploration_noise: float = field(0.3, help="std of Gaussian action noise while collecting")
    replay_capacity: int = field(1_000_000, help="most agent steps kept in the replay (oldest episodes dropped)")
    eval_every: int = field(50_000, help="evaluate every this many environment steps (0: only at the end)")
    eval_episodes: int = field(10, help="evaluation episodes, run in parallel environments")
    eval_seed: int = field(1_000_000, help="seed of the first evaluation environment (the others count up)")
    checkpoint_every: int = field(1, help="write the resume checkpoint every this many collected episodes")
    stop_return: float | None = field(None, help="stop after an evaluation whose mean return reaches this (None: never)")
    max_nonfinite_updates: int = field(10, help="stop with an error after this many gradient steps in a row whose loss "
                                                "or gradient was NaN/inf (each one is skipped)")

    def __post_init__(self) -> None:
        for name in ("total_env_steps", "batch_size", "chunk_length", "eval_episodes", "checkpoint_every", "replay_capacity",
                     "overshoot_stride"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("seed_episodes", "updates_per_episode", "overshooting", "eval_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        if self.seed_episodes < 1:
            raise ValueError("train.seed_episodes must be >= 1 (the observation normalization is fitted on them)")
        if self.updates_per_step is not None and self.updates_per_step <= 0:
            raise ValueError(f"train.updates_per_step must be > 0 (or null), got {self.updates_per_step}")
        if self.learning_rate <= 0 or self.adam_eps <= 0 or self.grad_clip <= 0:
            raise ValueError("train.learning_rate, train.adam_eps and train.grad_clip must be > 0")
        if min(self.exploration_noise, self.overshoot_weight, self.reward_weight, self.continuation_weight,
               self.value_weight) < 0:
            raise ValueError("train.exploration_noise, train.overshoot_weight, train.reward_weight, "
                             "train.continuation_weight and train.value_weight must be >= 0")
        if not 0 <= self.value_lambda <= 1:
            raise ValueError(f"train.value_lambda must be in [0, 1], got {self.value_lambda}")


class PlanetTrainer:
    """The phase-1 loop (see the module docstring).

    :param env_fn: ``seed -> env`` factory (flat float observations, ``Box`` actions, action repeat applied).
    :param model: the world model, on its device.
    :param controller: the planning controller used for collection and evaluation.
    :param settings: the schedule.
    :param seed: seeds the numpy generator (replay sampling, noise, episode seeds) and the torch generator (planning).
    :param action_repeat: environment steps per agent step (to count environment steps).
    :param logger: metrics sink (CSV + TensorBoard), or None.
    :param save_fn: called with :meth:`state_dict` to write the resume checkpoint, or None.
    """

    progress_label = "phase 1 (planet)"  #: name of the progress bar

    def __init__(
        self,
        env_fn: Callable[[int | None], gym.Env],
        model: RSSM,
        controller: Controller,
        settings: TrainSettings,
        seed: int,
        action_repeat: int = 1,
        logger: MetricsLogger | None = None,
        save_fn: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.env_fn, self.model, self.controller, self.settings = env_fn, model, controller, settings
        self.action_repeat, self.logger, self.save_fn = action_repeat, logger, save_fn
        self.env = env_fn(None)
        low, high = self.env.action_space.low, self.env.action_space.high
        self.random_controller = RandomController(torch.as_tensor(low, dtype=torch.float32), torch.as_tensor(high, dtype=torch.float32))
        obs_dim, act_dim = self.env.observation_space.shape[0], self.env.action_space.shape[0]
        self.replay = EpisodeReplay(obs_dim, act_dim, settings.replay_capacity)
        self.optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate, eps=settings.adam_eps)
        self.rng = np.random.default_rng(seed)
        self.torch_gen = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
        self.counters = {"env_steps": 0, "episodes": 0, "updates": 0, "wall_time_s": 0.0, "normalized": 0,
                         "plan_calls": 0, "plan_seconds": 0.0, "next_eval": settings.eval_every or settings.total_env_steps}
        self.evaluations: list[dict[str, Any]] = []
        self._eval_envs: list[gym.Env] = []
        #: where the replay is checkpointed incrementally (None: whole, inside the state dict)
        self.replay_store: ReplayStore | None = None

    # ---------------------------------------------------------------- checkpointing
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly where the loop is (call between iterations).

        With :attr:`replay_store` set, the replay's new episodes are written to its segment files and the state holds
        their manifest (:mod:`~dcem_agents.training.replay_store`); :meth:`save` prunes the store once it is saved.
        """
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "replay": self.replay.state_dict() if self.replay_store is None else self.replay_store.save(self.replay),
            "rng": self.rng.bit_generator.state,
            "torch_gen": self.torch_gen.get_state(),
            "counters": dict(self.counters),
            "evaluations": list(self.evaluations),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if is_manifest(state["replay"]):
            if self.replay_store is None:
                raise ValueError("this state's replay is stored in segment files: set the trainer's replay_store")
            self.replay_store.load(state["replay"], self.replay)
        else:
            self.replay.load_state_dict(state["replay"])
        self.rng.bit_generator.state = state["rng"]
        self.torch_gen.set_state(state["torch_gen"])
        self.counters = dict(state["counters"])
        self.evaluations = list(state["evaluations"])

    def save(self) -> None:
        """Hand :meth:`state_dict` to ``save_fn``; then drop the replay segments the saved state no longer lists."""
        if self.save_fn is None:
            return
        state = self.state_dict()
        self.save_fn(state)
        if self.replay_store is not None:
            self.replay_store.prune(state["replay"])

    # ---------------------------------------------------------------- the loop
    def train(self, max_iterations: int | None = None) -> dict[str, Any]:
        """Run until ``total_env_steps`` (or ``max_iterations`` more collected episodes, or ``stop_return``)."""
        s, c = self.settings, self.counters
        bar = tqdm(total=s.total_env_steps, initial=c["env_steps"], desc=self.progress_label, unit="step", dynamic_ncols=True)
        iterations = 0
        while (c["env_steps"] < s.total_env_steps and (max_iterations is None or iterations < max_iterations)
               and not self._reached_stop_return()):
            t0 = time.perf_counter()
            losses = self._update() if c["episodes"] >= s.seed_episodes else {}
            seeding = c["episodes"] < s.seed_episodes
            controller = self.random_controller if seeding else self.controller
            gen = torch.Generator().manual_seed(int(self.rng.integers(2**62))) if seeding else self.torch_gen
            (episode,), stats = run_episodes(
                [self.env], self.model, controller, [int(self.rng.integers(2**31))], generator=gen,
                rng=self.rng, noise_std=0.0 if seeding else s.exploration_noise,
            )
            self.replay.add_episode(episode.obs, episode.actions, episode.rewards, episode.terminated)
            c["episodes"] += 1
            c["env_steps"] += stats.env_steps  # real environment steps: an episode can end inside an action repeat
            c["new_steps"] = c.get("new_steps", 0) + stats.steps  # agent steps not yet paid in updates_per_step
            if not c["normalized"] and c["episodes"] >= s.seed_episodes:
                mean, std = self.replay.obs_moments()
                self.model.set_obs_normalization(torch.as_tensor(mean), torch.as_tensor(std))
                c["normalized"] = 1
            record = {f"train/{k}": v for k, v in losses.items()}
            record.update({"train/return": episode.return_, "train/episodes": c["episodes"], "train/updates": c["updates"]})
            if not seeding:
                record["time/plan_ms"] = stats.ms_per_plan
                c["plan_calls"] += stats.plan_calls
                c["plan_seconds"] += stats.plan_seconds
            stop = False
            if c["env_steps"] >= c["next_eval"] or c["env_steps"] >= s.total_env_steps:
                result = self.evaluate()
                record.update({"eval/return_mean": result["return_mean"], "eval/return_std": result["return_std"],
                               "time/eval_plan_ms": result["ms_per_plan"]})
                while c["next_eval"] <= c["env_steps"]:
                    c["next_eval"] += s.eval_every or s.total_env_steps
                stop = self._reached_stop_return()
            elapsed = time.perf_counter() - t0
            c["wall_time_s"] += elapsed
            record.update({"time/iteration_s": elapsed, "time/wall_s": c["wall_time_s"],
                           "time/steps_per_s": stats.env_steps / max(elapsed, 1e-9)})
            if self.logger is not None:
                for k, v in record.items():
                    self.logger.record(k, v)
                self.logger.dump(c["env_steps"])
            bar.update(stats.env_steps)
            bar.set_postfix(ret=f"{episode.return_:.0f}", sps=f"{record['time/steps_per_s']:.0f}",
                            eval=f"{self.evaluations[-1]['return_mean']:.0f}" if self.evaluations else "-")
            iterations += 1
            if c["episodes"] % s.checkpoint_every == 0 or stop:
                self.save()
            if stop:
                log.info("evaluation mean return %.1f reached stop_return %.1f", self.evaluations[-1]["return_mean"], s.stop_return)
                break
        bar.close()
        self.save()
        return {"counters": dict(c), "evaluations": self.evaluations}

    def _reached_stop_return(self) -> bool:
        """Whether an evaluation at the current step reached ``stop_return`` (also true when resuming a stopped run)."""
        s, last = self.settings, self.evaluations[-1] if self.evaluations else None
        return (s.stop_return is not None and last is not None and last["env_steps"] == self.counters["env_steps"]
                and last["return_mean"] >= s.stop_return)

    def _update(self) -> dict[str, float]:
        """``updates_per_episode`` gradient steps (or, with ``updates_per_step``, as many as the agent steps collected
        since the last update earned); returns the mean of each loss term and of the total."""
        s = self.settings
        if s.updates_per_step is None:
            n_updates = s.updates_per_episode
        else:  # the fractional remainder carries over (and is checkpointed with the counters)
            credit = self.counters.get("update_credit", 0.0) + s.updates_per_step * self.counters.get("new_steps", 0)
            n_updates = int(credit)
            self.counters["update_credit"], self.counters["new_steps"] = credit - n_updates, 0
        sums: dict[str, float] = {}
        self.model.train()
        for _ in range(n_updates):
            terms = self.model_step()
            if terms is None:  # a skipped (non-finite) step
                continue
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v
            self.counters["updates"] += 1
        self.model.eval()
        return {k: v / max(n_updates, 1) for k, v in sums.items()}

    def sample_batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """``batch_size`` replay chunks of ``chunk_length`` as tensors on the model's device and dtype: observations
        (B, L+1, O), actions (B, L, A), rewards (B, L), mask (B, L; None when every step is real: the plain means) and
        continuation targets (B, L)."""
        s, param = self.settings, next(self.model.parameters())
        chunk = self.replay.sample(s.batch_size, s.chunk_length, self.rng)
        obs, actions, rewards, mask, cont = (torch.as_tensor(x, device=param.device, dtype=param.dtype) for x in chunk)
        return obs, actions, rewards, None if chunk.mask.all() else mask, cont

    def model_step(self) -> dict[str, float] | None:
        """One maximum-likelihood gradient step on a batch of replay chunks: its loss terms, their weighted total and
        the gradient norm; None for a skipped (non-finite) step."""
        s = self.settings
        obs, actions, rewards, mask, cont = self.sample_batch()
        terms = self.model.loss(obs, actions, rewards, s.overshooting, s.overshoot_stride, mask=mask, cont=cont,
                                value_lambda=s.value_lambda)  # cont: read by the continuation and value heads only
        weights = {"reward": s.reward_weight, "continuation": s.continuation_weight, "value": s.value_weight,
                   "overshoot_obs": s.overshoot_weight, "overshoot_reward": s.overshoot_weight * s.reward_weight}
        total = sum(weights.get(k, 1.0) * v for k, v in terms.items())
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), s.grad_clip)
        if not self.finite_step(total, grad_norm, "model"):
            return None
        self.optimizer.step()
        return {k: float(v.detach()) for k, v in {**terms, "loss": total, "grad_norm": grad_norm}.items()}

    def finite_step(self, loss: torch.Tensor, grad_norm: torch.Tensor, what: str) -> bool:
        """Whether a gradient step may be taken: False (and the gradients dropped) for a NaN/inf loss or gradient.

        :raises NonFiniteTrainingError: after ``max_nonfinite_updates`` such steps in a row.
        """
        if bool(torch.isfinite(loss.detach())) and bool(torch.isfinite(grad_norm)):
            self._nonfinite_in_a_row = 0
            return True
        for opt in self.optimizers():
            opt.zero_grad(set_to_none=True)
        self.counters["skipped_updates"] = self.counters.get("skipped_updates", 0) + 1
        self._nonfinite_in_a_row = getattr(self, "_nonfinite_in_a_row", 0) + 1
        log.warning("skipped a %s update: non-finite loss (%s) or gradient norm (%s)", what, float(loss.detach()),
                    float(grad_norm))
        if self._nonfinite_in_a_row >= self.settings.max_nonfinite_updates:
            raise NonFiniteTrainingError(
                f"{self._nonfinite_in_a_row} {what} updates in a row had a NaN/inf loss or gradient (at "
                f"{self.counters['env_steps']} environment steps); the last checkpoint is from before them")
        return False

    def optimizers(self) -> list[torch.optim.Optimizer]:
        """The trainer's optimizers (their gradients are dropped with a skipped step)."""
        return [self.optimizer]

    def evaluate(self, episodes: int | None = None) -> dict[str, Any]:
        """Run the controller without noise on ``eval_episodes`` parallel environments with fixed seeds."""
        n = episodes or self.settings.eval_episodes
        while len(self._eval_envs) < n:
            self._eval_envs.append(self.env_fn(None))
        seeds = [self.settings.eval_seed + i for i in range(n)]
        # a dedicated generator: evaluation never perturbs the training stream
        gen = torch.Generator(device=self.torch_gen.device).manual_seed(self.settings.eval_seed + self.counters["env_steps"])
        run = evaluate_controller(self._eval_envs, self.model, self.controller, seeds, generator=gen, n_envs=n,
                                  label=None)
        result = {"env_steps": self.counters["env_steps"]} | run.summary()
        self.evaluations.append(result)
        log.info("eval at %d env steps: return %.1f ± %.1f (%.0f ms per batched plan)", result["env_steps"],
                 result["return_mean"], result["return_std"], result["ms_per_plan"])
        return result
