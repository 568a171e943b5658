"""Model-free baselines: Stable-Baselines3 SAC, TD3 or PPO on the agents' environments, for the comparison report.

``python train.py --config configs/baselines/sac_cartpole_swingup.yaml`` trains an SB3 algorithm on
``make_env(env_id, action_repeat)`` (flat ``float32`` observations, the same environment and action repeat the
planning agents use) for ``env_steps`` environment steps, evaluates it every ``eval_every`` environment steps
(deterministic actions, ``eval_episodes`` episodes: ``eval/mean_reward`` in ``progress.csv`` and TensorBoard, and
``evaluations`` ``[env_steps, mean return]`` in ``summary.json``), evaluates the final model and saves ``model.zip``.
The zip records its environment id and action repeat (the attribute :data:`ENV_ATTRIBUTE`), so ``evaluate.py --entry model.zip`` compares it with the planners with nothing to repeat.

Interrupted runs resume from the last SB3 checkpoint in ``sb3_checkpoints/`` (with the replay buffer of off-policy
algorithms) when re-run with ``--run-dir``.
"""

from __future__ import annotations

import inspect
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from dcem_agents.config import field, to_dict
from dcem_agents.envs import make_env
from dcem_agents.sb3.checkpoints import AtomicCheckpointCallback, load_latest
from dcem_agents.training.device import resolve_device
from dcem_agents.training.run_dir import publish

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


@dataclass
class Config:
    """A model-free SB3 baseline on the planning agents' environment."""

    experiment: Literal["baseline"] = field("baseline", help="experiment name (selects this runner)")
    name: str = field("sac_cartpole_swingup", help="run name, part of the run folder's name")
    seed: int = field(0, help="seed of the algorithm and the training environment")
    device: str = field("cpu", help="auto, cpu or cuda")
    num_threads: int = field(0, help="torch intra-op CPU threads (0: torch's default)")
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
    export_zip: str | None = field(None, help="copy the final model.zip here (e.g. checkpoints/<name>.zip)")
    results_json: str | None = field(None, help="also write the summary here")

    def __post_init__(self) -> None:
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

    @property
    def agent_steps(self) -> int:
        """The training budget in agent steps."""
        return self.env_steps // self.action_repeat


def _callbacks(cfg: Config, run_dir: Path, eval_env: Any, summary: dict[str, Any]) -> list[Any]:
    from stable_baselines3.common.callbacks import BaseCallback, EvalCallback

    from dcem_agents.sb3.progress import TqdmCallback

    class RecordEvaluation(BaseCallback):
        """After each evaluation: append ``[env_steps, mean return]`` to ``summary["evaluations"]``, save it."""

        def _on_step(self) -> bool:
            summary.setdefault("evaluations", []).append(
                [self.num_timesteps * cfg.action_repeat, float(self.parent.last_mean_reward)])
            (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
            return True

    callbacks: list[Any] = [
        AtomicCheckpointCallback(max(cfg.checkpoint_every // cfg.action_repeat, 1), run_dir / "sb3_checkpoints",
                                 name_prefix=cfg.algorithm, save_replay_buffer=cfg.algorithm != "ppo",
                                 at_rollout_start=cfg.algorithm in ("ppo", "a2c")),
        TqdmCallback(cfg.agent_steps, desc=cfg.algorithm),
    ]
    if cfg.eval_every > 0:
        callbacks.append(EvalCallback(eval_env, n_eval_episodes=cfg.eval_episodes,
                                      eval_freq=max(cfg.eval_every // cfg.action_repeat, 1), deterministic=True,
                                      callback_after_eval=RecordEvaluation(), verbose=0))
    return callbacks


def train(cfg: Config, run_dir: Path) -> dict:
    """Train (or resume) the baseline, evaluate it, save ``model.zip``; see the module docstring."""
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.monitor import Monitor

    from dcem_agents.sb3.progress import make_sb3_logger

    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    device = resolve_device(cfg.device)
    algo = _algorithm(cfg.algorithm)
    env = make_env(cfg.env_id, action_repeat=cfg.action_repeat, seed=cfg.seed)
    eval_env = Monitor(make_env(cfg.env_id, action_repeat=cfg.action_repeat, seed=cfg.eval_seed))
    summary_path = run_dir / "summary.json"
    summary: dict[str, Any] = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    latest = load_latest(run_dir / "sb3_checkpoints", cfg.algorithm, lambda path: algo.load(path, env=env, device=device))
    if latest is not None:
        resume, model = latest
        buffer = resume.with_name(f"{cfg.algorithm}_replay_buffer_{model.num_timesteps}_steps.pkl")
        if buffer.exists():
            model.load_replay_buffer(buffer)
        log.info("resumed %s from %s at %d agent steps", cfg.algorithm, resume, model.num_timesteps)
    else:
        model = algo("MlpPolicy", env, learning_rate=cfg.learning_rate, seed=cfg.seed, device=device,
                     policy_kwargs={"net_arch": list(cfg.net_arch)}, **cfg.algo_kwargs)
    setattr(model, ENV_ATTRIBUTE, {"env_id": cfg.env_id, "action_repeat": cfg.action_repeat,
                                   "algorithm": ALGORITHMS[cfg.algorithm]})
    model.set_logger(make_sb3_logger(run_dir, model.num_timesteps if latest is not None else None))
    remaining = cfg.agent_steps - model.num_timesteps
    t0 = time.perf_counter()
    if remaining > 0:
        model.learn(remaining, callback=_callbacks(cfg, run_dir, eval_env, summary), reset_num_timesteps=False)
    summary["train_seconds"] = summary.get("train_seconds", 0.0) + time.perf_counter() - t0
    model.save(run_dir / "model.zip")
    returns, _ = evaluate_policy(model, eval_env, n_eval_episodes=cfg.eval_episodes, deterministic=True,
                                 return_episode_rewards=True)
    env.close()
    eval_env.close()
    summary.update({
        "algorithm": ALGORITHMS[cfg.algorithm], "env_id": cfg.env_id, "action_repeat": cfg.action_repeat,
        "agent_steps": int(model.num_timesteps), "env_steps": int(model.num_timesteps) * cfg.action_repeat,
        "final_eval": {"episodes": len(returns), "seed": cfg.eval_seed,
                       "return_mean": float(sum(returns) / len(returns)), "returns": [float(r) for r in returns]},
        "model": cfg.export_zip or str(run_dir / "model.zip"), "config": to_dict(cfg),
    })
    log.info("%s after %d env steps: %.1f over %d episodes", ALGORITHMS[cfg.algorithm], summary["env_steps"],
             summary["final_eval"]["return_mean"], len(returns))
    summary_path.write_text(json.dumps(summary, indent=2))
    publish(summary, cfg.results_json, [(run_dir / "model.zip", cfg.export_zip)])
    return {k: v for k, v in summary.items() if k != "config"}
