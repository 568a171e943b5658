"""Phase 3 of the paper: PPO fine-tuning of the embedded DCEM controller's components, with stock SB3 ``PPO``.

``train``: from a phase-2 (``dcem``) checkpoint, builds :func:`~dcem_agents.sb3.make_belief_vec_env` environments
(optionally ``VecNormalize`` on rewards) and ``PPO(EmbeddedDCEMPolicy, ...)``, evaluates the policy's mean action on
``eval_episodes`` episodes, fine-tunes for ``total_timesteps``, and evaluates again with the same seeds. SB3's logger
writes ``progress.csv`` and TensorBoard (``tb/``) into the run folder; ``AtomicCheckpointCallback`` writes
``sb3_checkpoints/`` every ``checkpoint_every`` steps. Re-running with ``--run-dir THAT_RUN_DIR`` resumes from the
newest of those. The final policy is saved twice: ``model.zip`` (``PPO.load``) and ``checkpoint.pt`` (this package's
format, for ``evaluate.py``), and the before/after numbers go to ``summary.json`` (and ``results_json``).

``evaluate``: ``--controller ppo`` (default) runs the fine-tuned policy's mean action, ``--controller dcem`` the
phase-2 controller it started from, ``--controller ppo,dcem`` both on the same seeds.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import VecNormalize

from dcem_agents.config import build, field, to_dict
from dcem_agents.experiments import EvalOptions, write_result
from dcem_agents.sb3 import COMPONENTS, BeliefSyncCallback, EmbeddedDCEMPolicy, make_belief_vec_env
from dcem_agents.sb3.controllers import evaluate_belief_policy
from dcem_agents.sb3.safe_pickle import load_vecnormalize, safe_custom_objects
from dcem_agents.sb3.progress import EnvStepCounter, TqdmCallback, env_steps_taken, make_sb3_logger
from dcem_agents.training import load_checkpoint, save_checkpoint
from dcem_agents.sb3.checkpoints import AtomicCheckpointCallback, companion_path, load_latest, resume_exactly
from dcem_agents.training.checkpoint import newest_step
from dcem_agents.training.device import resolve_device
from dcem_agents.training.run_config import RunConfig

__all__ = ["Config", "PPOSettings", "PolicySettings", "evaluate", "train"]

log = logging.getLogger(__name__)

CONTROLLERS = ("ppo", "dcem")


@dataclass
class PPOSettings:
    """Stable-Baselines3 ``PPO`` arguments (the ``ppo:`` section)."""

    n_steps: int = field(128, help="steps per environment per rollout")
    batch_size: int = field(128, help="minibatch size")
    n_epochs: int = field(4, help="epochs per update")
    learning_rate: float = field(1e-4, help="Adam learning rate")
    gamma: float = field(0.99, help="discount")
    gae_lambda: float = field(0.95, help="GAE lambda")
    clip_range: float = field(0.2, help="PPO clip range")
    ent_coef: float = field(0.0, help="entropy coefficient")
    vf_coef: float = field(0.5, help="value loss coefficient")
    max_grad_norm: float = field(0.5, help="gradient clipping")
    target_kl: float | None = field(None, help="stop an update early past this KL (None: never)")
    normalize_advantage: bool = field(True, help="normalize the advantages of each minibatch (SB3's default)")

    def __post_init__(self) -> None:
        if self.n_steps < 1 or self.n_epochs < 1 or self.batch_size < 1 + self.normalize_advantage:
            least = "2 (SB3 normalizes advantages per minibatch)" if self.normalize_advantage else "1"
            raise ValueError(f"ppo: need n_steps >= 1, n_epochs >= 1 and batch_size >= {least}, got {self.n_steps}, "
                             f"{self.n_epochs}, {self.batch_size}")
        if not 0 < self.gamma <= 1 or not 0 <= self.gae_lambda <= 1:
            raise ValueError(f"ppo: need 0 < gamma <= 1 and 0 <= gae_lambda <= 1, got {self.gamma}, {self.gae_lambda}")
        for name in ("learning_rate", "clip_range", "max_grad_norm"):
            if getattr(self, name) <= 0:
                raise ValueError(f"ppo.{name} must be > 0, got {getattr(self, name)}")
        if self.ent_coef < 0 or self.vf_coef < 0 or (self.target_kl is not None and self.target_kl <= 0):
            raise ValueError("ppo: need ent_coef >= 0, vf_coef >= 0 and target_kl > 0 (or null)")


@dataclass
class PolicySettings:
    """``EmbeddedDCEMPolicy`` arguments (the ``policy:`` section)."""

    train_components: list[str] = field(default_factory=lambda: ["decoder", "reward"],
                                        help="components PPO trains: decoder, reward, transition, observation")
    learn_log_std: bool = field(False, help="learn the state-independent log std (False: fixed, as the paper's 0.1)")
    std_init: float = field(0.1, help="initial (or fixed) std of the Gaussian policy")
    value_arch: list[int] = field(default_factory=lambda: [64, 64], help="value network widths")
    update_iters: int | None = field(None, help="at update time re-plan only the last update_iters DCEM iterations, "
                                                "from the collection-time distribution (null: in full); cheaper updates")
    value_input: Literal["belief", "belief+plan"] = field("belief", help="what the value network sees: the belief, or "
                                                                          "also the plan's predicted return per step")
    precision: Literal["fp32", "bf16"] | None = field(None, help="planner rollout arithmetic (null: fp32, which keeps PPO's ratio at 1)")
    compile: bool = field(False, help="torch.compile the planner's rollout")
    grad_iters: int | None = field(None, help="backpropagate through the last grad_iters DCEM iterations only (null: "
                                              "all); same actions, cheaper updates")

    def __post_init__(self) -> None:
        if self.grad_iters is not None and self.grad_iters < 1:
            raise ValueError(f"policy.grad_iters must be >= 1 (or null: all iterations), got {self.grad_iters}")
        if self.update_iters is not None and self.update_iters < 1:
            raise ValueError(f"policy.update_iters must be >= 1 (or null: plan in full), got {self.update_iters}")
        if self.std_init <= 0:
            raise ValueError(f"policy.std_init must be > 0, got {self.std_init}")
        unknown = [c for c in self.train_components if c not in COMPONENTS]
        if unknown or not self.train_components:
            raise ValueError(f"policy.train_components: {unknown[0] if unknown else 'empty'!r} is not a component; "
                             f"choose from {', '.join(COMPONENTS)}")
        if any(w < 1 for w in self.value_arch):
            raise ValueError(f"policy.value_arch widths must be >= 1, got {self.value_arch}")


@dataclass
class Config(RunConfig):
    """PPO fine-tuning of the decoder and reward head through the embedded DCEM controller (phase 3)."""

    experiment: Literal["ppo"] = field("ppo", help="experiment name (selects this runner)")
    name: str = field("cartpole_swingup", help="run name, part of the run folder's name")
    seed: int = field(0, help="seed of PPO, the environments and the planner-noise seeds")
    device: str = field("cpu", help="auto, cpu, cuda or cuda:N")
    phase2_checkpoint: str = field("checkpoints/dcem_cartpole_swingup.pt", help="the dcem checkpoint to start from")
    n_envs: int = field(4, help="parallel environments (planned in one batched call)")
    total_timesteps: int = field(5000, help="PPO agent steps (each is action_repeat environment steps)")
    normalize_reward: bool = field(True, help="VecNormalize on rewards (observations are never normalized)")
    ppo: PPOSettings = field(default_factory=PPOSettings, help="PPO arguments")
    policy: PolicySettings = field(default_factory=PolicySettings, help="policy arguments")
    eval_episodes: int = field(100, help="episodes of the before/after evaluations (0: skip)")
    eval_seed: int = field(3_000_000, help="seed of the before/after evaluations (same for both)")
    checkpoint_every: int = field(1024, help="save an SB3 checkpoint every this many agent steps")
    results_json: str | None = field(None, help="with train.py --publish: write the summary here (e.g. results/<name>.json)")
    export_checkpoint: str | None = field(None, help="with train.py --publish: copy the run\'s checkpoint.pt here")

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("n_envs", "total_timesteps", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.eval_episodes < 0:
            raise ValueError("eval_episodes must be >= 0")
        if self.ppo.batch_size > self.ppo.n_steps * self.n_envs:
            raise ValueError(f"ppo.batch_size ({self.ppo.batch_size}) exceeds a rollout (ppo.n_steps x n_envs = "
                             f"{self.ppo.n_steps * self.n_envs} samples)")


def _policy_kwargs(cfg: Config) -> dict[str, Any]:
    p = cfg.policy
    return EmbeddedDCEMPolicy.policy_kwargs(cfg.phase2_checkpoint, train_components=list(p.train_components),
                learn_log_std=p.learn_log_std, log_std_init=math.log(p.std_init), value_arch=list(p.value_arch),
                precision=p.precision, compile=p.compile, grad_iters=p.grad_iters, value_input=p.value_input,
                update_iters=p.update_iters)


def validate(cfg: Config) -> None:
    """Before a run starts: ``policy.grad_iters`` and ``policy.update_iters`` must not exceed the phase-2 planner's
    iterations."""
    n_iters = load_checkpoint(cfg.phase2_checkpoint, "dcem")["config"]["planner"]["n_iters"]
    for key in ("grad_iters", "update_iters"):
        value = getattr(cfg.policy, key)
        if value is not None and value > n_iters:
            raise ValueError(f"policy.{key}={value} exceeds the {n_iters} iterations of the phase-2 planner "
                             f"({cfg.phase2_checkpoint})")


def progress(cfg: Config, run_dir: Path) -> int | None:
    """Timesteps (all environments, the unit of ``total_timesteps``) of the run folder's newest SB3 checkpoint;
    None: no checkpoint yet."""
    return newest_step(run_dir / "sb3_checkpoints", "ppo")


def train(cfg: Config, run_dir: Path) -> dict:
    """Evaluate, fine-tune with PPO (or resume), evaluate again; see the module docstring."""
    device = cfg.setup_torch()
    env = make_belief_vec_env(cfg.phase2_checkpoint, n_envs=cfg.n_envs, seed=cfg.seed)
    if cfg.normalize_reward:
        env = VecNormalize(env, norm_obs=False, norm_reward=True, gamma=cfg.ppo.gamma)
    sb3_dir = run_dir / "sb3_checkpoints"
    policy_kwargs = _policy_kwargs(cfg)  # reads the phase-2 checkpoint for its architecture: once
    summary_path = run_dir / "summary.json"
    summary: dict[str, Any] = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    def load(path: Path) -> PPO:
        model = PPO.load(path, env=env, device=device, force_reset=False, custom_objects=safe_custom_objects(path))
        vecnorm = companion_path(path, "vecnormalize_", "pkl")
        if cfg.normalize_reward and vecnorm.exists():
            model.set_env(load_vecnormalize(vecnorm, env.venv), force_reset=False)
        return model

    latest = load_latest(sb3_dir, "ppo", load)
    if latest is not None:
        resume, model = latest
        log.info("resumed PPO from %s at %d timesteps", resume, model.num_timesteps)
    else:
        p = cfg.ppo
        model = PPO(EmbeddedDCEMPolicy, env, n_steps=p.n_steps, batch_size=p.batch_size, n_epochs=p.n_epochs,
                    learning_rate=p.learning_rate, gamma=p.gamma, gae_lambda=p.gae_lambda, clip_range=p.clip_range,
                    ent_coef=p.ent_coef, vf_coef=p.vf_coef, max_grad_norm=p.max_grad_norm, target_kl=p.target_kl,
                    normalize_advantage=p.normalize_advantage, policy_kwargs=policy_kwargs, seed=cfg.seed, device=device)
    model.set_logger(make_sb3_logger(run_dir, model.num_timesteps if latest is not None else None))
    if latest is not None:
        resume_exactly(model, latest[0])  # environments, generators, pending log values
    if cfg.eval_episodes and not _current(summary.get("before"), cfg):
        # "before" is the phase-2 controller PPO starts from, also when a resumed run (one started without evaluations)
        # already holds fine-tuned weights
        start = model.policy if latest is None else EmbeddedDCEMPolicy.for_evaluation(policy_kwargs, None, device)
        summary["before"] = _evaluate(start, cfg.eval_episodes, cfg.eval_seed, "evaluate before PPO")
        summary_path.write_text(json.dumps(summary, indent=2))
        log.info("before PPO: %.1f (95%% CI %.1f to %.1f)", summary["before"]["return_mean"], *summary["before"]["ci95"])
    repeat = policy_kwargs["architecture"]["action_repeat"]
    callbacks = [EnvStepCounter(repeat),  # first: the checkpoints save the count
                 AtomicCheckpointCallback(max(cfg.checkpoint_every // cfg.n_envs, 1), sb3_dir, name_prefix="ppo",
                                          save_vecnormalize=True, at_rollout_start=True, save_resume_state=True),
                 TqdmCallback(cfg.total_timesteps)]
    if {"transition", "observation"} & set(cfg.policy.train_components):
        callbacks.append(BeliefSyncCallback())
    remaining = cfg.total_timesteps - model.num_timesteps
    t0 = time.perf_counter()
    if remaining > 0:
        model.learn(remaining, callback=callbacks, reset_num_timesteps=False)
    summary["train_seconds"] = summary.get("train_seconds", 0.0) + time.perf_counter() - t0
    model.save(run_dir / "model.zip")
    def save_final() -> Path:
        """``checkpoint.pt``; with the before/after evaluations as its curve ``[[env steps, mean return]]``."""
        start, taken = policy_kwargs["architecture"]["env_steps"], env_steps_taken(model, repeat)
        curve = [[start + steps, summary[k]["return_mean"]] for k, steps in (("before", 0), ("after", taken))
                 if k in summary]
        return save_checkpoint(run_dir / "checkpoint.pt", "ppo", to_dict(cfg),
                               {"policy_kwargs": policy_kwargs, "policy_state": model.policy.state_dict(),
                                "num_timesteps": model.num_timesteps, "env_steps": taken, "evaluations": curve})

    ckpt_path = save_final()
    if cfg.eval_episodes and (remaining > 0 or not _current(summary.get("after"), cfg)):
        summary["after"] = _evaluate(model.policy, cfg.eval_episodes, cfg.eval_seed, "evaluate after PPO")
        log.info("after PPO: %.1f (95%% CI %.1f to %.1f)", summary["after"]["return_mean"], *summary["after"]["ci95"])
        ckpt_path = save_final()  # now with the "after" point
    summary.update({"checkpoint": str(ckpt_path), "phase2_checkpoint": cfg.phase2_checkpoint,
                    "ppo_timesteps": model.num_timesteps, "n_envs": cfg.n_envs,
                    "train_components": list(cfg.policy.train_components)})
    summary_path.write_text(json.dumps(summary, indent=2))
    return summary | {f"{k}_return_mean": summary[k]["return_mean"] for k in ("before", "after") if k in summary}


def _current(result: dict[str, Any] | None, cfg: Config) -> bool:
    """Whether an evaluation kept in a run's summary was made with the config's episodes and seed (a resumed run may
    change both)."""
    return result is not None and (result.get("episodes"), result.get("seed")) == (cfg.eval_episodes, cfg.eval_seed)


def _evaluate(policy: EmbeddedDCEMPolicy, episodes: int, seed: int, label: str) -> dict[str, Any]:
    """Mean actions of ``policy`` on ``episodes`` episodes with environment seeds ``seed, seed + 1, ...``."""
    run = evaluate_belief_policy(policy, [seed + i for i in range(episodes)], seed, label=label)
    return {"seed": seed} | run.summary(decimals=2)


def load_policy(checkpoint: dict[str, Any], device: torch.device, fine_tuned: bool = True) -> EmbeddedDCEMPolicy:
    """The policy of a ``ppo`` checkpoint: its fine-tuned weights, or (``fine_tuned=False``) the same architecture with
    the phase-2 weights it started from."""
    state = checkpoint["policy_state"] if fine_tuned else None
    return EmbeddedDCEMPolicy.for_evaluation(checkpoint["policy_kwargs"], state, device)


def evaluate(checkpoint: dict, options: EvalOptions) -> dict:
    """Evaluate the fine-tuned policy (``ppo``) and/or the phase-2 controller it started from (``dcem``)."""
    names = [n.strip() for n in (options.controller or "ppo").split(",") if n.strip()]
    unknown = [n for n in names if n not in CONTROLLERS]
    if unknown or not names:
        raise ValueError(f"unknown controller {unknown[0] if unknown else ''!r} for a ppo checkpoint; available: "
                         f"{', '.join(CONTROLLERS)} (comma-separated for several)")
    cfg = build(Config, checkpoint["config"])
    device = resolve_device(options.device)
    result: dict[str, Any] = {"experiment": "ppo", "name": cfg.name, "phase2_checkpoint": cfg.phase2_checkpoint,
                              "ppo_timesteps": checkpoint.get("num_timesteps"), "controllers": {}}
    for name in names:
        policy = load_policy(checkpoint, device, fine_tuned=name == "ppo")
        result["controllers"][name] = _evaluate(policy, options.episodes, options.seed, f"evaluate {name}")
    write_result(result, options.out)
    return result
