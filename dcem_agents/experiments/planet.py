"""Phase 1 of the paper (sect. 5.2.2): the proprioceptive RSSM trained online by maximum likelihood, PlaNet-style,
with MPC by CEM over the full action space collecting the data.

``train``: builds the environment (:func:`dcem_agents.envs.make_env`, any Gymnasium ``Box``-action id, DeepMind
Control through shimmy), the world model (:class:`~dcem_agents.models.rssm.RSSM`) and the controller
(:class:`~dcem_agents.planning.mpc.CEMController`) and runs :class:`~dcem_agents.training.planet.PlanetTrainer`.
Run folder: ``config.yaml``, ``progress.csv``, ``tb/``, ``checkpoint.pt`` (everything to resume, rewritten
atomically after every ``train.checkpoint_every`` episodes; the replay's episodes are written once each, into
``replay/``) and ``summary.json``. Resume a killed run with
``python train.py --config SAME.yaml --run-dir THAT_RUN_DIR``: the checkpoint in the folder is picked up and the
run continues with the same counters, replay and generator states.

At the end an independent evaluation (``final_eval_episodes`` episodes with seeds from ``final_eval_seed``, disjoint
from the periodic evaluations that ``train.stop_return`` looks at) gives the reported return. ``train.py --publish``
also writes the summary to ``results_json`` and copies the checkpoint and ``progress.csv`` to ``export_checkpoint`` /
``export_progress`` (:func:`~dcem_agents.training.run_dir.publish_run`); without it nothing outside the run folder
changes. Every evaluation runs through :func:`~dcem_agents.evaluation.harness.evaluate_controller`.

``evaluate``: runs a checkpoint's controller (``cem``, the default) for ``--episodes`` episodes in batches of parallel
environments and writes the per-episode returns with their statistics (:mod:`dcem_agents.evaluation.stats`) as JSON.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import torch

from dcem_agents.math.cem import check_cem_sizes
from dcem_agents.config import build, field, to_dict
from dcem_agents.envs import make_env
from dcem_agents.experiments import EvalOptions, write_result
from dcem_agents.models.rssm import RSSM
from dcem_agents.planning.mpc import CEMController
from dcem_agents.planning.runtime import DEFAULT_RUNTIME, PlannerRuntime
from dcem_agents.training import MetricsLogger, load_checkpoint, save_checkpoint
from dcem_agents.training.device import resolve_device
from dcem_agents.training.planet import PlanetTrainer, TrainSettings
from dcem_agents.training.replay_store import REPLAY_FOLDER, ReplayStore
from dcem_agents.evaluation.harness import evaluate_controller
from dcem_agents.evaluation.stats import summarize
from dcem_agents.training.run_config import RunConfig

__all__ = ["CHECKPOINT_NAME", "Config", "ModelConfig", "PlannerConfig", "RuntimeConfig", "build_agent", "env_factory", "evaluate", "final_evaluation",
           "learning_curve", "load_agent", "train"]

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"
#: soft-clip threshold of normalized observations outside DeepMind Control (ModelConfig.obs_squash's null default)
DEFAULT_OBS_SQUASH = 10.0
CONTROLLERS = ("cem",)


@dataclass
class ModelConfig:
    """Sizes of the world model (fig. 8; the paper uses 200 everywhere)."""

    hidden_size: int = field(200, help="GRU state size of f_trans")
    layer_size: int = field(200, help="width of the embedding and of the 2 hidden layers of f_odec and f_rew")
    min_std: float = field(0.01, help="lower bound of the observation model's std (normalized units)")
    continuation: bool | None = field(None, help="continuation head c = P(not terminated) weighting imagined rewards "
                                                 "(null: on unless the task is DeepMind Control, whose episodes never "
                                                 "terminate)")
    obs_squash: float | None = field(None, help="soft clip of normalized observations beyond this many standard "
                                                "units (0: off; null: 10 unless the task is DeepMind Control, whose "
                                                "observations the seed episodes already span)")
    value: bool = field(False, help="value head V(h, x̃), trained by TD(lambda) on the replay's rewards; the planners "
                                    "add the value of a rollout's last belief to its predicted rewards")
    value_discount: float = field(0.99, help="discount gamma of the value head")

    def uses_continuation(self, env_id: str) -> bool:
        """Whether the model has the continuation head on ``env_id`` (``continuation``, or the null default)."""
        return (not env_id.startswith("dm_control/")) if self.continuation is None else self.continuation

    def squash_threshold(self, env_id: str) -> float:
        """The soft-clip threshold of normalized observations on ``env_id`` (``obs_squash``, or the null default)."""
        if self.obs_squash is None:
            return 0.0 if env_id.startswith("dm_control/") else DEFAULT_OBS_SQUASH
        return float(self.obs_squash)

    def __post_init__(self) -> None:
        if self.hidden_size < 1 or self.layer_size < 1 or self.min_std <= 0:
            raise ValueError("model.hidden_size and model.layer_size must be >= 1 and model.min_std > 0")
        if self.obs_squash is not None and (not self.obs_squash >= 0 or self.obs_squash == float("inf")):
            raise ValueError(f"model.obs_squash must be a finite number >= 0 (0: off) or null, got {self.obs_squash}")
        if not 0 <= self.value_discount < 1:
            raise ValueError(f"model.value_discount must be in [0, 1), got {self.value_discount}")


@dataclass
class RuntimeConfig:
    """How a planner's calls run (the ``precision`` and ``compile`` keys of both phases' ``planner:`` sections)."""

    precision: Literal["fp32", "bf16"] = field(DEFAULT_RUNTIME.precision, help="rollout arithmetic: fp32 or bf16")
    compile: bool = field(False, help="torch.compile the rollout (first call of each shape compiles, 10-60 s)")

    def runtime(self) -> PlannerRuntime:
        """How the planning calls run (:class:`~dcem_agents.planning.runtime.PlannerRuntime`)."""
        return PlannerRuntime(precision=self.precision, compile=self.compile)


@dataclass
class PlannerConfig(RuntimeConfig):
    """MPC by hard CEM over the full action space (PlaNet's planner; the paper's defaults)."""

    horizon: int = field(12, help="planning horizon H (agent steps)")
    n_samples: int = field(1000, help="candidate action sequences per CEM iteration")
    n_elites: int = field(100, help="elites per CEM iteration")
    n_iters: int = field(10, help="CEM iterations per step")
    warm_start: bool = field(True, help="start from the previous plan shifted by one step")
    execute_best: bool = field(False, help="act on the best sequence the search evaluated, not the final mean plan "
                                           "(which the model never scores)")

    def __post_init__(self) -> None:
        check_cem_sizes(self.n_samples, self.n_elites, self.n_iters, self.horizon, where="planner")


@dataclass
class Config(RunConfig):
    """PlaNet-style maximum-likelihood training of the proprioceptive RSSM with a full-space CEM controller."""

    experiment: Literal["planet"] = field("planet", help="experiment name (selects this runner)")
    name: str = field("cartpole_swingup", help="run name, part of the run folder's name")
    seed: int = field(0, help="seed of the model initialization, replay sampling, noise, episodes and planning")
    env_id: str = field("dm_control/cartpole-swingup-v0", help="Gymnasium id with a Box action space (dm_control/<domain>-<task>-v0 via shimmy)")
    action_repeat: int = field(8, help="environment steps per agent step (rewards summed)")
    model: ModelConfig = field(default_factory=ModelConfig, help="world model sizes")
    planner: PlannerConfig = field(default_factory=PlannerConfig, help="CEM controller")
    train: TrainSettings = field(default_factory=TrainSettings, help="schedule and optimization")
    final_eval_episodes: int = field(10, help="episodes of the independent evaluation at the end (0: skip)")
    final_eval_seed: int = field(2_000_000, help="seed of the first environment of the final evaluation")
    results_json: str | None = field(None, help="with train.py --publish: write the summary here (e.g. results/<name>.json)")
    export_checkpoint: str | None = field(None, help="with train.py --publish: copy the run\'s checkpoint.pt here")
    export_slim: bool = field(False, help="with --publish: ship the checkpoint for evaluation only, without optimizer "
                                          "states and replay (small; later phases start from the run's own checkpoint)")
    export_progress: str | None = field(None, help="with train.py --publish: copy the run\'s progress.csv here")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.action_repeat < 1:
            raise ValueError(f"action_repeat must be >= 1, got {self.action_repeat}")
        if self.final_eval_episodes < 0:
            raise ValueError(f"final_eval_episodes must be >= 0, got {self.final_eval_episodes}")


def env_factory(cfg: Config) -> Callable[[int | None], gym.Env]:
    """``seed -> env``: the task of ``cfg`` with its action repeat (:func:`dcem_agents.envs.make_env`)."""

    def env_fn(seed: int | None = None) -> gym.Env:
        return make_env(cfg.env_id, action_repeat=cfg.action_repeat, seed=seed)

    return env_fn


def build_agent(cfg: Config, device: torch.device) -> tuple[Any, RSSM, CEMController]:
    """The environment factory, world model and controller of ``cfg`` (model initialized from ``cfg.seed``)."""

    env_fn = env_factory(cfg)
    probe = env_fn(None)
    obs_dim, act_dim = probe.observation_space.shape[0], probe.action_space.shape[0]
    low = torch.as_tensor(probe.action_space.low, dtype=torch.float32)
    high = torch.as_tensor(probe.action_space.high, dtype=torch.float32)
    probe.close()
    torch.manual_seed(cfg.seed)
    model = RSSM(obs_dim, act_dim, cfg.model.hidden_size, cfg.model.layer_size, cfg.model.min_std,
                 cfg.model.uses_continuation(cfg.env_id), cfg.model.squash_threshold(cfg.env_id), cfg.model.value,
                 cfg.model.value_discount).to(device)
    model.eval()
    p = cfg.planner
    controller = CEMController(model, low, high, p.horizon, p.n_samples, p.n_elites, p.n_iters, p.warm_start,
                               p.runtime(), p.execute_best)
    return env_fn, model, controller


def train(cfg: Config, run_dir: Path) -> dict:
    """Train (or resume, if ``run_dir`` holds a checkpoint) and return the summary (see the module docstring)."""
    device = cfg.setup_torch()
    env_fn, model, controller = build_agent(cfg, device)
    ckpt_path = run_dir / CHECKPOINT_NAME
    config_dict = to_dict(cfg)

    def save_fn(state: dict[str, Any]) -> None:
        save_checkpoint(ckpt_path, "planet", config_dict, {"trainer": state})

    trainer = PlanetTrainer(env_fn, model, controller, cfg.train, cfg.seed, cfg.action_repeat, save_fn=save_fn)
    trainer.replay_store = ReplayStore(run_dir / REPLAY_FOLDER)
    resume_step = None
    if ckpt_path.exists():
        checkpoint = load_checkpoint(ckpt_path, "planet", map_location=device)
        trainer.load_state_dict(checkpoint["trainer"])
        resume_step = trainer.counters["env_steps"]
        log.info("resumed from %s at %d env steps, %d episodes", ckpt_path, trainer.counters["env_steps"], trainer.counters["episodes"])
    trainer.logger = MetricsLogger(run_dir, resume_step=resume_step)
    try:
        trainer.train()
        summary = _final_summary(cfg, trainer, ckpt_path)
    finally:
        trainer.logger.close()
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def trainer_progress(ckpt_path: Path, experiment: str) -> int | None:
    """Environment steps a trainer checkpoint (``planet`` or ``dcem``) has reached; None when there is none."""
    if not ckpt_path.is_file():
        return None
    return int(load_checkpoint(ckpt_path, experiment)["trainer"]["counters"]["env_steps"])


def progress(cfg: Config, run_dir: Path) -> int | None:
    """How far the run folder's checkpoint is, in the unit of the budget ``train.total_env_steps`` (None: no
    checkpoint yet). ``train.py`` refuses to resume with a budget below it."""
    return trainer_progress(run_dir / CHECKPOINT_NAME, "planet")


def _final_summary(cfg: Config, trainer: PlanetTrainer, ckpt_path: Path) -> dict[str, Any]:
    c = trainer.counters
    if c["updates"] == 0:
        log.warning("the world model was never trained: the budget of %d environment steps ended during the %d seed "
                    "episodes (train.seed_episodes); its evaluation is that of an untrained model", c["env_steps"],
                    cfg.train.seed_episodes)
    summary: dict[str, Any] = {
        "checkpoint": str(ckpt_path),
        "env_id": cfg.env_id,
        "action_repeat": cfg.action_repeat,
        "env_steps": c["env_steps"],
        "episodes": c["episodes"],
        "updates": c["updates"],
        "wall_time_s": round(c["wall_time_s"], 1),
        "ms_per_plan": round(1000.0 * c["plan_seconds"] / max(c["plan_calls"], 1), 2),
        "planner": to_dict(cfg.planner),
        "learning_curve": learning_curve(trainer.evaluations),
    }
    if cfg.final_eval_episodes > 0:
        summary.update(final_evaluation(trainer, cfg.final_eval_seed, cfg.final_eval_episodes))
    return summary


def learning_curve(evaluations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The periodic evaluations as ``env_steps``, ``return_mean``, ``return_std`` (ddof 1, from their returns)."""
    curve = []
    for e in evaluations:
        stats = summarize(e["returns"])
        curve.append({"env_steps": e["env_steps"], "return_mean": round(stats["mean"], 1),
                      "return_std": round(stats["std"], 1)})
    return curve


def final_evaluation(trainer: PlanetTrainer, seed: int, episodes: int) -> dict[str, Any]:
    """The independent evaluation at the end of a run (seeds from ``seed``; the planner's generator seeded with it):
    ``eval_episodes``, ``eval_seed``, ``eval_return_mean``, ``eval_return_std`` (ddof 1), ``eval_ci95``,
    ``eval_returns`` and ``eval_ms_per_batched_plan``."""
    seeds = [seed + i for i in range(episodes)]
    gen = torch.Generator(device=trainer.torch_gen.device).manual_seed(seed)
    run = evaluate_controller(lambda: trainer.env_fn(None), trainer.model, trainer.controller, seeds, generator=gen,
                              label="final evaluation")
    s = run.summary(decimals=1)
    return {"eval_episodes": s["episodes"], "eval_seed": seed, "eval_return_mean": round(s["return_mean"], 1),
            "eval_return_std": round(s["return_std"], 1), "eval_ci95": [round(x, 1) for x in s["ci95"]],
            "eval_returns": s["returns"], "eval_ms_per_batched_plan": round(s["ms_per_plan"], 1)}


def load_agent(checkpoint: dict[str, Any], device: torch.device) -> tuple[Config, Any, RSSM, CEMController]:
    """The config, environment factory, trained world model (eval mode) and CEM controller of a ``planet`` checkpoint."""
    cfg = build(Config, checkpoint["config"])
    env_fn, model, controller = build_agent(cfg, device)
    state = checkpoint["trainer"] if "trainer" in checkpoint else checkpoint
    model.load_state_dict(state["model"])
    return cfg, env_fn, model.eval(), controller


def evaluate(checkpoint: dict, options: EvalOptions) -> dict:
    """Evaluate a ``planet`` checkpoint's controller for ``options.episodes`` episodes (seeds from ``options.seed``)."""
    controller_name = options.controller or "cem"
    if controller_name not in CONTROLLERS:
        raise ValueError(f"unknown controller {controller_name!r} for a planet checkpoint; available: {', '.join(CONTROLLERS)}")
    device = resolve_device(options.device)
    cfg, env_fn, model, controller = load_agent(checkpoint, device)
    counters = checkpoint.get("trainer", checkpoint).get("counters", {})
    seeds = [options.seed + i for i in range(options.episodes)]
    run = evaluate_controller(lambda: env_fn(None), model, controller, seeds,
                              generator=torch.Generator(device=device).manual_seed(options.seed))
    result = {"experiment": "planet", "name": cfg.name, "env_id": cfg.env_id, "controller": controller_name,
              "env_steps": counters.get("env_steps"), "wall_time_s": counters.get("wall_time_s"), "seed": options.seed,
              **run.summary(decimals=2)}
    write_result(result, options.out)
    return result
