"""Model-free baselines: Stable-Baselines3 SAC, TD3 or PPO on the agents' environments, for the comparison report.

``python train.py --config configs/baselines/sac_cartpole_swingup.yaml`` trains an SB3 algorithm on
``make_env(env_id, action_repeat)`` (flat ``float32`` observations, the same environment and action repeat the
planning agents use) for ``env_steps`` environment steps, evaluates it every ``eval_every`` environment steps
(deterministic actions, ``eval_episodes`` episodes: ``eval/mean_reward`` in ``progress.csv`` and TensorBoard, and
``evaluations`` ``[env_steps, mean return]`` in ``summary.json``), evaluates the final model and saves ``model.zip``.
Environment steps are counted exactly (:class:`~dcem_agents.sb3.progress.EnvStepCounter`): an action repeat cut short
by the end of an episode counts the steps it took, as the planning agents count them, so "the same environment steps"
holds on tasks that terminate early too (on DeepMind Control it is agent steps x ``action_repeat``).
The zip records its environment id and action repeat (the attribute :data:`ENV_ATTRIBUTE`), so ``evaluate.py --entry model.zip`` compares it with the planners with nothing to repeat.

Interrupted runs resume from the last SB3 checkpoint in ``sb3_checkpoints/`` (with the replay buffer of off-policy
algorithms and the exact-resume state of :mod:`dcem_agents.sb3.resume`) when re-run with ``--run-dir``, and continue
as the uninterrupted run would have: the training environment is a :class:`~dcem_agents.envs.ReplayableEnv`, and
evaluations and checkpoints happen between updates. Every evaluation runs through
:func:`~dcem_agents.evaluation.harness.evaluate_controller` (episode ``i`` seeded ``eval_seed + i``).
"""

from __future__ import annotations

import inspect
import json
import logging
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal


from dcem_agents.config import field, to_dict
from dcem_agents.envs import make_env, make_replayable_env
from dcem_agents.sb3.checkpoints import AtomicCheckpointCallback, companion_path, load_latest, resume_exactly
from dcem_agents.sb3.progress import EnvStepCounter, env_steps_taken
from dcem_agents.sb3.safe_pickle import load_replay_buffer, safe_custom_objects
from dcem_agents.evaluation.harness import evaluate_controller
from dcem_agents.training.checkpoint import newest_step
from dcem_agents.training.run_config import RunConfig

__all__ = ["ALGORITHMS", "Config", "ENV_ATTRIBUTE", "train"]

log = logging.getLogger(__name__)

#: algorithm name -> SB3 class name
ALGORITHMS = {"sac": "SAC", "td3": "TD3", "ppo": "PPO"}
#: attribute of the saved SB3 model holding ``{"env_id", "action_repeat", "algorithm"}`` (saved in the zip's data)
ENV_ATTRIBUTE = "dcem_agents_env"
#: keyword arguments the experiment sets itself
_OWN_KWARGS = {"policy", "env", "seed", "device", "learning_rate", "policy_kwargs", "verbose", "tensorboard_log",
               "_init_setup_model"}


def _algorithm(name: str) -> type:
    import stable_baselines3

    return getattr(stable_baselines3, ALGORITHMS[name])


#: SB3 arguments checked before a run starts: (lowest, highest or None, type)
_ALGO_KWARG_RANGES: dict[str, tuple[float, float | None, type | tuple[type, ...]]] = {
    "batch_size": (1, None, int), "buffer_size": (1, None, int), "learning_starts": (0, None, int),
    "n_steps": (1, None, int), "n_epochs": (1, None, int), "policy_delay": (1, None, int),
    "gamma": (0.0, 1.0, (int, float)), "tau": (0.0, 1.0, (int, float)), "gae_lambda": (0.0, 1.0, (int, float)),
}


@dataclass
class Config(RunConfig):
    """A model-free SB3 baseline on the planning agents' environment."""

    experiment: Literal["baseline"] = field("baseline", help="experiment name (selects this runner)")
    name: str = field("sac_cartpole_swingup", help="run name, part of the run folder's name")
    seed: int = field(0, help="seed of the algorithm and the training environment")
    device: str = field("cpu", help="auto, cpu, cuda or cuda:N")
    env_id: str = field("dm_control/cartpole-swingup-v0", help="Gymnasium id (dm_control/<domain>-<task>-v0 too)")
    action_repeat: int = field(8, help="environment steps per agent step (as the planning agent's preset)")
    algorithm: Literal["sac", "td3", "ppo"] = field("sac", help="the SB3 algorithm")
    env_steps: int = field(30_000, help="training budget in environment steps (agent steps x action_repeat)")
    learning_rate: float = field(3e-4, help="Adam learning rate")
    net_arch: list[int] = field(default_factory=lambda: [256, 256], help="hidden widths of the actor and critic")
    algo_kwargs: dict[str, Any] = field(default_factory=dict,
                                        help="further keyword arguments of the SB3 algorithm (batch_size, "
                                             "learning_starts, buffer_size, gamma, ...)")
    eval_every: int = field(10_000, help="evaluate every this many environment steps (0: only at the end)")
    eval_episodes: int = field(10, help="episodes per evaluation (deterministic actions)")
    eval_seed: int = field(1_000_000, help="seed of the evaluation environment")
    checkpoint_every: int = field(10_000, help="save an SB3 checkpoint every this many environment steps")
    export_zip: str | None = field(None, help="with train.py --publish: copy the run\'s model.zip here (e.g. checkpoints/<name>.zip)")
    results_json: str | None = field(None, help="with train.py --publish: write the summary here (e.g. results/<name>.json)")

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("action_repeat", "env_steps", "checkpoint_every", "eval_episodes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.env_steps < self.action_repeat:
            raise ValueError(f"env_steps ({self.env_steps}) must be at least one agent step ({self.action_repeat})")
        if self.eval_every < 0 or any(w < 1 for w in self.net_arch) or self.learning_rate <= 0:
            raise ValueError("eval_every must be >= 0, net_arch widths >= 1 and learning_rate > 0")
        allowed = set(inspect.signature(_algorithm(self.algorithm).__init__).parameters) - _OWN_KWARGS - {"self"}
        unknown = sorted(set(self.algo_kwargs) - allowed)
        if unknown:
            raise ValueError(f"algo_kwargs: {unknown[0]!r} is not an argument of {ALGORITHMS[self.algorithm]} (or is "
                             f"set by the experiment); allowed: {', '.join(sorted(allowed))}")
        for key, value in self.algo_kwargs.items():
            low, high, kind = _ALGO_KWARG_RANGES.get(key, (None, None, None))
            if kind is None:
                continue
            if not isinstance(value, kind) or isinstance(value, bool) or value < low or (high is not None and value > high):
                bound = f">= {low}" if high is None else f"in [{low}, {high}]"
                raise ValueError(f"algo_kwargs.{key} must be {'an integer' if kind is int else 'a number'} {bound}, "
                                 f"got {value!r}")

    @property
    def agent_steps(self) -> int:
        """The training budget in agent steps."""
        return self.env_steps // self.action_repeat


def _evaluate(cfg: Config, policy: Any, label: str | None) -> dict[str, Any]:
    """Deterministic actions of ``policy`` on ``eval_episodes`` episodes with seeds ``eval_seed, eval_seed + 1, ...``."""
    from dcem_agents.sb3.controllers import ObservationPolicyController

    seeds = [cfg.eval_seed + i for i in range(cfg.eval_episodes)]
    run = evaluate_controller(lambda: make_env(cfg.env_id, action_repeat=cfg.action_repeat), None,
                              ObservationPolicyController(policy), seeds, generator=None, label=label)
    return {"seed": cfg.eval_seed} | run.summary(decimals=2)


def _callbacks(cfg: Config, run_dir: Path, summary: dict[str, Any]) -> list[Any]:
    from stable_baselines3.common.callbacks import BaseCallback

    from dcem_agents.sb3.progress import TqdmCallback

    class PeriodicEvaluation(BaseCallback):
        """Every ``eval_every`` environment steps, between updates (at the start of a rollout, and at the end of
        training): evaluate, log ``eval/mean_reward``, append ``[env_steps, mean return]`` to
        ``summary["evaluations"]`` and save it. It runs before the checkpoint callback, so a checkpoint taken at the
        same moment comes after the evaluation's row."""

        def __init__(self) -> None:
            super().__init__()
            self.every = max(cfg.eval_every, 1)  # environment steps
            self.next = self.every

        def _taken(self) -> int:
            return env_steps_taken(self.model, cfg.action_repeat)

        def _on_training_start(self) -> None:
            self.next = (self._taken() // self.every + 1) * self.every  # a resumed run: the next one due

        def _on_rollout_start(self) -> None:
            if self._taken() >= self.next:
                self.evaluate()

        def _on_training_end(self) -> None:
            if self._taken() >= self.next:
                self.evaluate()

        def _on_step(self) -> bool:
            return True

        def evaluate(self) -> None:
            taken = self._taken()
            self.next = (taken // self.every + 1) * self.every
            result = _evaluate(cfg, self.model.policy, None)
            mean = result["return_mean"]
            self.logger.record("eval/mean_reward", mean)
            self.logger.record("eval/mean_ep_length", float(sum(result["agent_steps"]) / result["episodes"]))
            self.logger.record("time/total_timesteps", self.num_timesteps, exclude="tensorboard")
            self.logger.dump(self.num_timesteps)
            summary.setdefault("evaluations", []).append([taken, mean])
            (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))

    callbacks: list[Any] = [EnvStepCounter(cfg.action_repeat)] + ([PeriodicEvaluation()] if cfg.eval_every > 0 else [])
    callbacks += [
        AtomicCheckpointCallback(max(cfg.checkpoint_every // cfg.action_repeat, 1), run_dir / "sb3_checkpoints",
                                 name_prefix=cfg.algorithm, save_replay_buffer=cfg.algorithm != "ppo",
                                 at_rollout_start=True, save_resume_state=True),
        TqdmCallback(cfg.env_steps, desc=cfg.algorithm, position=lambda m: env_steps_taken(m, cfg.action_repeat)),
    ]
    return callbacks


def progress(cfg: Config, run_dir: Path) -> int | None:
    """Environment steps (the unit of ``env_steps``: agent steps x ``action_repeat``) of the run folder's newest SB3
    checkpoint; None: no checkpoint yet."""
    steps = newest_step(run_dir / "sb3_checkpoints", cfg.algorithm)
    return None if steps is None else steps * cfg.action_repeat


def train(cfg: Config, run_dir: Path) -> dict:
    """Train (or resume) the baseline, evaluate it, save ``model.zip``; see the module docstring."""
    from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor

    from dcem_agents.sb3.progress import make_sb3_logger

    device = cfg.setup_torch()
    algo = _algorithm(cfg.algorithm)
    # a replayable environment (every episode seeded, its actions recorded): checkpoints restore it exactly
    env = VecMonitor(DummyVecEnv([partial(make_replayable_env, cfg.env_id, cfg.action_repeat, cfg.seed)]))
    summary_path = run_dir / "summary.json"
    summary: dict[str, Any] = json.loads(summary_path.read_text()) if summary_path.exists() else {}

    def load(path: Path) -> Any:
        model = algo.load(path, env=env, device=device, force_reset=False, custom_objects=safe_custom_objects(path))
        buffer = companion_path(path, "replay_buffer_", "pkl")
        if buffer.exists():
            load_replay_buffer(model, buffer)
        return model

    latest = load_latest(run_dir / "sb3_checkpoints", cfg.algorithm, load)
    if latest is not None:
        resume, model = latest
        log.info("resumed %s from %s at %d agent steps", cfg.algorithm, resume, model.num_timesteps)
        done = env_steps_taken(model, cfg.action_repeat)  # evaluations past the checkpoint are run again
        summary["evaluations"] = [e for e in summary.get("evaluations", []) if e[0] <= done]
    else:
        model = algo("MlpPolicy", env, learning_rate=cfg.learning_rate, seed=cfg.seed, device=device,
                     policy_kwargs={"net_arch": list(cfg.net_arch)}, **cfg.algo_kwargs)
    setattr(model, ENV_ATTRIBUTE, {"env_id": cfg.env_id, "action_repeat": cfg.action_repeat,
                                   "algorithm": ALGORITHMS[cfg.algorithm]})
    model.set_logger(make_sb3_logger(run_dir, model.num_timesteps if latest is not None else None))
    if latest is not None:
        resume_exactly(model, latest[0])  # environments, generators, pending log values
    t0 = time.perf_counter()
    callbacks = _callbacks(cfg, run_dir, summary)
    # ceil(left / action_repeat) agent steps at a time (each is at most action_repeat environment steps, so a call
    # ends less than one agent step past the budget) until the exact count reaches it: one call on tasks that never
    # end an episode inside an action repeat (DeepMind Control), a few more otherwise
    while (left := cfg.env_steps - env_steps_taken(model, cfg.action_repeat)) > 0:
        model.learn(-(-left // cfg.action_repeat), callback=callbacks, reset_num_timesteps=False)
    summary["train_seconds"] = summary.get("train_seconds", 0.0) + time.perf_counter() - t0
    setattr(model, ENV_ATTRIBUTE, {**getattr(model, ENV_ATTRIBUTE),  # the learning curve, for comparison reports
                                   "evaluations": [list(e) for e in summary.get("evaluations", [])]})
    model.save(run_dir / "model.zip")
    final = _evaluate(cfg, model.policy, "final evaluation")
    env.close()
    summary.update({
        "algorithm": ALGORITHMS[cfg.algorithm], "env_id": cfg.env_id, "action_repeat": cfg.action_repeat,
        "agent_steps": int(model.num_timesteps), "env_steps": env_steps_taken(model, cfg.action_repeat),
        "final_eval": final, "model": str(run_dir / "model.zip"), "config": to_dict(cfg),
    })
    log.info("%s after %d env steps: %.1f over %d episodes", ALGORITHMS[cfg.algorithm], summary["env_steps"],
             final["return_mean"], final["episodes"])
    summary_path.write_text(json.dumps(summary, indent=2))
    return {k: v for k, v in summary.items() if k != "config"}
