"""Phase 2 of the paper (sect. 5.2.2): an embedded DCEM controller learned online on a phase-1 world model.

``train``: loads a ``planet`` (phase-1) checkpoint — world model, optimizer, replay and counters —, builds the latent
action decoder and the :class:`~dcem_agents.planning.latent_mpc.LatentDCEMController`, optionally collects
``reseed_episodes`` episodes with the phase-1 planner (the only replay a slim, shipped phase-1 checkpoint gets; the
model's optimizer then starts afresh), optionally adds and pretrains a value head, pretrains the decoder
by alg. 2 on the replay, then runs :class:`~dcem_agents.training.latent_phase.LatentPhaseTrainer`: the latent
controller collects, the model keeps its likelihood updates and the decoder its alg.-2 updates. Environment steps
continue counting from phase 1 (``train.total_env_steps`` is cumulative). Run folder and resume as for ``planet``:
``python train.py --config SAME.yaml --run-dir THAT_RUN_DIR`` continues from ``checkpoint.pt``.

``evaluate``: ``--controller dcem`` (default) runs the latent controller, ``--controller cem`` the phase-1 full-space
CEM planner on the same (phase-2) model, ``--controller dcem,cem`` both on the same seeds; the JSON holds each
controller's per-episode returns, mean, std and ms per planning call.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from dcem_agents.config import build, field, to_dict
from dcem_agents.experiments import EvalOptions, write_result
from dcem_agents.experiments import planet
from dcem_agents.evaluation.harness import evaluate_controller
from dcem_agents.models.decoder import LatentActionDecoder
from dcem_agents.models.rssm import RSSM
from dcem_agents.planning.latent import LatentCEMSettings
from dcem_agents.planning.latent_mpc import LatentDCEMController
from dcem_agents.planning.mpc import Controller
from dcem_agents.training import MetricsLogger, load_checkpoint, save_checkpoint
from dcem_agents.training.checkpoint import is_slim
from dcem_agents.training.device import resolve_device
from dcem_agents.training.components import components_from_checkpoint
from dcem_agents.training.latent_phase import DecoderSettings, LatentPhaseTrainer
from dcem_agents.training.planet import TrainSettings
from dcem_agents.training.replay_store import REPLAY_FOLDER, ReplayStore, load_replay
from dcem_agents.training.run_config import RunConfig

__all__ = ["Config", "DecoderConfig", "LatentPlannerConfig", "build_latent_agent", "evaluate", "train"]

log = logging.getLogger(__name__)

CONTROLLERS = ("dcem", "cem", "latent-cem")


@dataclass
class DecoderConfig:
    """The latent action decoder ``f_dec: [-b, b]^d -> U^H`` (app. C)."""

    latent_dim: int = field(2, help="latent dimension d")
    horizon: int = field(12, help="planning horizon H (agent steps) of the decoded sequences")
    hidden_sizes: list[int] = field(default_factory=lambda: [256, 256], help="hidden layer widths (ELU)")
    init_scale: float = field(1.0, help="factor on the initial Xavier-normal weights (app. C)")

    def __post_init__(self) -> None:
        if self.latent_dim < 1 or self.horizon < 1 or any(h < 1 for h in self.hidden_sizes) or self.init_scale <= 0:
            raise ValueError("decoder: latent_dim, horizon and hidden_sizes must be >= 1 and init_scale > 0")


@dataclass
class LatentPlannerConfig(planet.RuntimeConfig):
    """(D)CEM over the latent space (the paper's latent controller: 100 samples, 10 elites, 10 iterations, τ = 1)."""

    n_samples: int = field(100, help="latent samples per iteration")
    n_elites: int = field(10, help="(soft) elites per iteration")
    n_iters: int = field(10, help="iterations per planning call")
    temperature: float | None = field(1.0, help="soft top-k temperature (null: hard CEM in the latent space)")
    latent_bound: float = field(1.0, help="half-width b of the latent box")
    init_std: float = field(0.5, help="initial sampling std in the latent space")
    execute_best: bool = field(False, help="act on the best latent sample the search evaluated, not the final mean "
                                           "(which the model never scores); alg. 2 still trains through the mean")
    reuse_plan: bool = field(False, help="the previous step's executed plan, shifted by one step, competes with the "
                                         "new one under the model's cost; the cheaper is executed (acting only)")

    def settings(self) -> LatentCEMSettings:
        """As :class:`~dcem_agents.planning.latent.LatentCEMSettings` (validated there)."""
        return LatentCEMSettings(self.n_samples, self.n_elites, self.n_iters, self.temperature, self.latent_bound,
                                 self.init_std, execute_best=self.execute_best,
                                 reuse_plan=self.reuse_plan)

    def __post_init__(self) -> None:
        self.settings()


@dataclass
class Config(RunConfig):
    """Online learning of the latent action space on a phase-1 world model (alg. 2 variant)."""

    experiment: Literal["dcem"] = field("dcem", help="experiment name (selects this runner)")
    name: str = field("cartpole_swingup", help="run name, part of the run folder's name")
    seed: int = field(0, help="seed of the decoder initialization, replay sampling, noise, episodes and planning")
    phase1_checkpoint: str = field("checkpoints/planet_cartpole_swingup.pt", help="the planet checkpoint to start from")
    decoder: DecoderConfig = field(default_factory=DecoderConfig, help="latent action decoder")
    planner: LatentPlannerConfig = field(default_factory=LatentPlannerConfig, help="latent DCEM controller")
    decoder_training: DecoderSettings = field(default_factory=DecoderSettings, help="alg.-2 optimization of the decoder")
    train: TrainSettings = field(default_factory=TrainSettings, help="schedule (total_env_steps counts from phase 1)")
    reseed_episodes: int = field(0, help="episodes the phase-1 full-space planner collects into the replay before the "
                                         "decoder's pretraining; needed (>= 1) to start from a slim phase-1 "
                                         "checkpoint, whose replay was not kept; their env steps count in "
                                         "train.total_env_steps")
    reseed_envs: int = field(10, help="environments that collect the reseed episodes at once (one batched planning "
                                      "call per step); the run is saved after each batch, and a resume continues it")
    value_head: bool = field(False, help="give a phase-1 model without one a value head (model.value): trained here by "
                                         "TD(lambda) on the replay, first value_pretrain_updates steps alone; the "
                                         "planners and alg. 2 then add the value of a rollout's last belief")
    value_pretrain_updates: int = field(1000, help="with value_head: steps on the new head alone before the decoder's "
                                                   "pretraining")
    final_eval_episodes: int = field(10, help="episodes of the independent evaluation at the end (0: skip)")
    final_eval_seed: int = field(2_000_000, help="seed of the first environment of the final evaluation")
    results_json: str | None = field(None, help="with train.py --publish: write the summary here (e.g. results/<name>.json)")
    export_checkpoint: str | None = field(None, help="with train.py --publish: copy the run\'s checkpoint.pt here")
    export_slim: bool = field(False, help="with --publish: ship the checkpoint for evaluation only, without optimizer "
                                          "states and replay (small; later phases start from the run's own checkpoint)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.final_eval_episodes < 0:
            raise ValueError(f"final_eval_episodes must be >= 0, got {self.final_eval_episodes}")
        if min(self.reseed_episodes, self.value_pretrain_updates) < 0:
            raise ValueError("reseed_episodes and value_pretrain_updates must be >= 0")
        if self.reseed_envs < 1:
            raise ValueError(f"reseed_envs must be >= 1, got {self.reseed_envs}")


def _phase1(checkpoint: dict[str, Any]) -> tuple[planet.Config, dict[str, Any]]:
    """The phase-1 config and trainer state of a ``planet`` checkpoint (or of the copy inside a ``dcem`` one)."""
    cfg = build(planet.Config, checkpoint["config"])
    return cfg, checkpoint.get("trainer", checkpoint)


def build_latent_agent(p1: planet.Config, cfg: Config, device: torch.device) -> tuple[Any, RSSM, LatentDCEMController]:
    """Environment factory, world model (phase-1 sizes) and latent controller (decoder initialized from ``cfg.seed``)."""
    env_fn, model, _ = planet.build_agent(p1, device)
    probe = env_fn(None)
    low, high = probe.action_space.low.tolist(), probe.action_space.high.tolist()
    probe.close()
    torch.manual_seed(cfg.seed)
    d = cfg.decoder
    decoder = LatentActionDecoder(d.latent_dim, d.horizon, model.action_dim, low, high, d.hidden_sizes, d.init_scale)
    return env_fn, model, LatentDCEMController(model, decoder.to(device), cfg.planner.settings(), cfg.planner.runtime())


def validate(cfg: Config) -> None:
    """Before a run starts: the phase-1 checkpoint's model must have been trained, a slim one (no replay) needs
    ``reseed_episodes``, and ``train.total_env_steps`` must exceed its steps (it counts from the start of phase 1)."""
    phase1 = load_checkpoint(cfg.phase1_checkpoint, "planet")
    _check_replay(cfg, phase1)
    counters = phase1["trainer"]["counters"]
    if not counters.get("updates"):
        raise ValueError(f"{cfg.phase1_checkpoint}: its world model was never trained (0 updates in "
                         f"{counters['env_steps']} env steps, all of them seed episodes): run phase 1 longer, or with "
                         "fewer train.seed_episodes, before phase 2")
    _check_budget(cfg, counters["env_steps"])


def _load_model(model: RSSM, state: dict[str, Any], added_value: bool) -> None:
    """The phase-1 weights into ``model``; with ``added_value``, the new value head alone keeps its initial weights."""
    if not added_value:
        model.load_state_dict(state)
        return
    missing, unexpected = model.load_state_dict(state, strict=False)
    wrong = [k for k in missing if not k.startswith("value_head.") and k != "value_discount"] + list(unexpected)
    if wrong:
        raise ValueError(f"the phase-1 model does not fit the phase-2 one: {', '.join(wrong)}")


def _load_optimizer(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """The phase-1 optimizer state into ``optimizer``, whose one parameter group may end with parameters phase 1 did
    not have (an added value head, registered last in the model): those start with no state."""
    group = state["param_groups"][0]
    extra = len(optimizer.param_groups[0]["params"]) - len(group["params"])
    if extra > 0:
        start = max(group["params"], default=-1) + 1
        params = list(group["params"]) + list(range(start, start + extra))
        state = {**state, "param_groups": [{**group, "params": params}]}
    optimizer.load_state_dict(state)


def _check_replay(cfg: Config, phase1: dict[str, Any]) -> None:
    if is_slim(phase1) and cfg.reseed_episodes < 1:
        raise ValueError(f"{cfg.phase1_checkpoint} was shipped for evaluation only (no replay, no optimizer state): "
                         "start phase 2 from the phase-1 run's own checkpoint, --set "
                         "phase1_checkpoint=<phase-1 run folder>/checkpoint.pt, or collect a new replay with its "
                         "planner first, --set reseed_episodes=N (e.g. 20)")


def _check_budget(cfg: Config, phase1_steps: int) -> None:
    if cfg.train.total_env_steps <= phase1_steps:
        raise ValueError(f"train.total_env_steps={cfg.train.total_env_steps} counts from the start of phase 1 and must "
                         f"exceed the phase-1 checkpoint's {phase1_steps} env steps")


def progress(cfg: Config, run_dir: Path) -> int | None:
    """Environment steps (from the start of phase 1, the unit of ``train.total_env_steps``) of the run folder's
    checkpoint; None: no checkpoint yet."""
    return planet.trainer_progress(run_dir / planet.CHECKPOINT_NAME, "dcem")


def train(cfg: Config, run_dir: Path) -> dict:
    """Phase 2 from ``cfg.phase1_checkpoint`` (or resume from ``run_dir/checkpoint.pt``); returns the summary."""
    device = cfg.setup_torch()
    ckpt_path = run_dir / planet.CHECKPOINT_NAME
    # a resumed run needs nothing from the phase-1 checkpoint: its own holds the phase-1 config (sizes, env) and all
    # the state (model, optimizer, replay) it has trained since; only a fresh start reads phase 1
    resumed = load_checkpoint(ckpt_path, "dcem", map_location=device) if ckpt_path.exists() else None
    if resumed is None:
        phase1_ckpt = load_checkpoint(cfg.phase1_checkpoint, "planet", map_location=device)
        phase1_config = phase1_ckpt["config"]
        p1, p1_state = _phase1(phase1_ckpt)
        added_value = cfg.value_head and not p1.model.value
        if added_value:  # the phase-1 config as it now is, so that every loader of this run builds the head too
            phase1_config = {**phase1_config, "model": {**phase1_config.get("model", {}), "value": True}}
            p1 = build(planet.Config, phase1_config)
    else:
        phase1_config = resumed["phase1_config"]
        p1 = build(planet.Config, phase1_config)
    env_fn, model, controller = build_latent_agent(p1, cfg, device)
    config_dict = to_dict(cfg)

    def save_fn(state: dict[str, Any]) -> None:
        save_checkpoint(ckpt_path, "dcem", config_dict, {"trainer": state, "phase1_config": phase1_config})

    trainer = LatentPhaseTrainer(env_fn, model, controller, cfg.train, cfg.decoder_training, cfg.seed,
                                 p1.action_repeat, save_fn=save_fn)
    trainer.replay_store = ReplayStore(run_dir / REPLAY_FOLDER)
    resume_step = None
    if resumed is not None:
        trainer.load_state_dict(resumed["trainer"])
        resume_step = trainer.counters["env_steps"]
        log.info("resumed phase 2 from %s at %d env steps", ckpt_path, trainer.counters["env_steps"])
    else:
        _check_replay(cfg, phase1_ckpt)
        _load_model(model, p1_state["model"], added_value)
        if not is_slim(phase1_ckpt):  # else an empty replay, filled by trainer.reseed, and a fresh Adam
            load_replay(p1_state["replay"], trainer.replay, cfg.phase1_checkpoint)
            _load_optimizer(trainer.optimizer, p1_state["optimizer"])
        for key in ("env_steps", "episodes", "updates", "normalized"):
            trainer.counters[key] = p1_state["counters"][key]
        trainer.counters["phase1_env_steps"] = p1_state["counters"]["env_steps"]
        trainer.counters["value_added"] = int(added_value)
        trainer.counters["next_eval"] = trainer.counters["env_steps"] + (cfg.train.eval_every or cfg.train.total_env_steps)
        _check_budget(cfg, trainer.counters["env_steps"])
    trainer.logger = MetricsLogger(run_dir, resume_step=resume_step)
    try:
        if cfg.reseed_episodes and not trainer.counters.get("reseeded"):
            trainer.reseed(named_controller("cem", p1, model, controller, device), cfg.reseed_episodes,
                           cfg.reseed_envs)
            c = trainer.counters
            log.info("reseeded the replay with %d episodes of the phase-1 planner: mean return %.1f",
                     c["reseed_done"], c["reseed_return_sum"] / c["reseed_done"])
        if trainer.counters.get("value_added"):  # a no-op once done (a resume)
            value = trainer.pretrain_value(cfg.value_pretrain_updates)
            if value:
                log.info("value head pretraining: loss %.3f -> %.3f", np.mean(value[:10]), np.mean(value[-10:]))
        pretrain = trainer.pretrain_decoder()
        if pretrain:
            log.info("decoder pretraining: planned cost %.2f -> %.2f", np.mean(pretrain[:10]), np.mean(pretrain[-10:]))
        trainer.train()
        summary = _summary(cfg, p1, trainer, ckpt_path)
    finally:
        trainer.logger.close()
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _summary(cfg: Config, p1: planet.Config, trainer: LatentPhaseTrainer, ckpt_path: Path) -> dict[str, Any]:
    c = trainer.counters
    summary: dict[str, Any] = {
        "checkpoint": str(ckpt_path),
        "phase1_checkpoint": cfg.phase1_checkpoint,
        "env_id": p1.env_id,
        "env_steps": c["env_steps"],
        "phase1_env_steps": c.get("phase1_env_steps"),
        "reseed_env_steps": c.get("reseed_env_steps", 0),
        "decoder_updates": c["decoder_updates"],
        "wall_time_s": round(c["wall_time_s"], 1),
        "learning_curve": planet.learning_curve(trainer.evaluations),
    }
    if cfg.final_eval_episodes > 0:
        summary.update(planet.final_evaluation(trainer, cfg.final_eval_seed, cfg.final_eval_episodes))
    return summary


def named_controller(name: str, p1: planet.Config, model: RSSM, latent: LatentDCEMController,
                     device: torch.device) -> Controller:
    """A controller of a ``dcem`` checkpoint by name (:data:`CONTROLLERS`): ``dcem``, its latent controller;
    ``latent-cem``, the same latent space searched with hard top-k elites; ``cem``, phase 1's full-space planner on the
    phase-2 model."""
    if name == "dcem":
        return latent
    if name == "latent-cem":
        return LatentDCEMController(model, latent.decoder, replace(latent.settings, temperature=None), latent.runtime)
    if name == "cem":
        _, _, cem = planet.build_agent(p1, device)
        cem.model = model
        return cem
    raise ValueError(f"unknown controller {name!r} for a dcem checkpoint; available: {', '.join(CONTROLLERS)}")


def load_latent_agent(checkpoint: dict[str, Any], device: torch.device) -> tuple[Config, planet.Config, Any, RSSM, LatentDCEMController]:
    """Rebuild the config, phase-1 config, environment factory, model and latent controller of a ``dcem`` checkpoint."""
    cfg = build(Config, checkpoint["config"])
    p1 = build(planet.Config, checkpoint["phase1_config"])
    comps = components_from_checkpoint(checkpoint)  # the one loader of a dcem checkpoint's components
    model = comps.model.to(device).eval()
    controller = LatentDCEMController(model, comps.decoder.to(device), comps.settings, cfg.planner.runtime())
    return cfg, p1, planet.env_factory(p1), model, controller


def evaluate(checkpoint: dict, options: EvalOptions) -> dict:
    """Evaluate the latent DCEM and/or the full-space CEM controller of a ``dcem`` checkpoint on the same seeds."""
    names = [n.strip() for n in (options.controller or "dcem").split(",") if n.strip()]
    unknown = [n for n in names if n not in CONTROLLERS]
    if unknown or not names:
        raise ValueError(f"unknown controller {unknown[0] if unknown else ''!r} for a dcem checkpoint; available: "
                         f"{', '.join(CONTROLLERS)} (comma-separated for several)")
    device = resolve_device(options.device)
    cfg, p1, env_fn, model, latent = load_latent_agent(checkpoint, device)
    seeds = [options.seed + i for i in range(options.episodes)]
    result: dict[str, Any] = {"experiment": "dcem", "name": cfg.name, "env_id": p1.env_id, "episodes": len(seeds),
                              "seed": options.seed, "env_steps": checkpoint["trainer"]["counters"]["env_steps"],
                              "controllers": {}}
    for name in names:
        controller = named_controller(name, p1, model, latent, device)
        run = evaluate_controller(lambda: env_fn(None), model, controller, seeds, label=f"evaluate {name}",
                                  generator=torch.Generator(device=device).manual_seed(options.seed))
        result["controllers"][name] = run.summary(decimals=2) | {"sequences_per_plan": controller.samples_per_step}
    if {"dcem", "cem"} <= set(names):
        c = result["controllers"]
        dcem_mean, cem_mean = c["dcem"]["return_mean"], c["cem"]["return_mean"]
        # a ratio of returns means "fraction of CEM's return" only when both are positive (DMC rewards are >= 0;
        # Gymnasium's can be negative, and a sparse task's mean can be 0): else it is left out (None)
        result["dcem_over_cem_return"] = dcem_mean / cem_mean if dcem_mean >= 0 and cem_mean > 0 else None
        result["dcem_minus_cem_return"] = dcem_mean - cem_mean
    write_result(result, options.out)
    return result
