"""Embedding the cartpole's action space with DCEM (paper sect. 5.2.1, fig. 3, app. C; alg. 2).

``train``: learns a decoder ``f_dec: [-b, b]^2 -> [-100, 100]^20`` on the known, differentiable cartpole by
backpropagating the controller cost through latent DCEM (100 samples, 10 elites, 10 iterations, τ = 1), validating
on a fixed set of initial states and keeping the decoder with the best validation cost (as the paper's fig. 9).
Writes ``progress.csv``, ``tb/`` and ``checkpoint.pt`` (best decoder + config) into the run folder.

``evaluate``: compares four controllers on held-out initial states, each solving eq. (7) once from the initial
state (open loop over the horizon, as the paper's cartpole comparison of controller costs, app. C) and scored by the
true return ``Σ_{t=1}^{H} r(x_t, u_t)`` of the planned sequence:

- ``latent_dcem``: DCEM over the learned latent space (the controller trained with alg. 2);
- ``latent_cem``: hard CEM over the same latent space;
- ``full_cem_100``: CEM over the full ``H``-dimensional action space with 100 samples per iteration;
- ``full_cem_1000``: the same with 1,000 samples per iteration, the "expert".

Writes the JSON to ``options.out`` (``evaluate.py --out results/cartpole_embed.json`` for the shipped one) and two
figures beside it (fig. 3 and fig. 10 analogues).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from tqdm import tqdm

from dcem_agents.math.cem import check_cem_sizes
from dcem_agents.config import build, field, to_dict
from dcem_agents.experiments import EvalOptions, write_result
from dcem_agents.evaluation.stats import summarize
from dcem_agents.models.cartpole import ACTION_DIM, FORCE_BOUND, cartpole_cost, cartpole_return, sample_initial_states
from dcem_agents.models.decoder import LatentActionDecoder
from dcem_agents.planning.action_space import action_space_plan
from dcem_agents.planning.latent import ActionCost, LatentCEMSettings, latent_plan
from dcem_agents.training import MetricsLogger, save_checkpoint
from dcem_agents.training.device import resolve_device
from dcem_agents.training.embed import EmbeddingTrainer
from dcem_agents.training.run_config import RunConfig

__all__ = ["Config", "CONTROLLERS", "EXPERT", "train", "evaluate", "improvement_factor", "make_cost", "load_decoder"]

log = logging.getLogger(__name__)

#: Seed offsets of the three disjoint state sets: training draws from ``seed``, validation from ``seed + VAL``,
#: the evaluation from ``options.seed + TEST``.
VAL_SEED_OFFSET = 1_000
TEST_SEED_OFFSET = 2_000_000
#: Controllers of the evaluation; the expert is the reference of the improvement factor.
CONTROLLERS = ("latent_dcem", "latent_cem", "full_cem_100", "full_cem_1000")
EXPERT = "full_cem_1000"
IMPROVEMENT_DEFINITION = (
    "improvement_factor = 1 + (R - R_expert) / |R_expert|, R = mean return (summed reward over the horizon, = -cost). "
    "Above 1 means a higher return than the 1,000-sample full-space CEM expert. For a positive expert return it equals "
    "R / R_expert (the paper's fig. 9 ratio of controller costs, which are negative here); for a negative one it stays "
    "above 1 exactly when R is better."
)


@dataclass
class Config(RunConfig):
    """Learning a 2-D latent action space for the cartpole with alg. 2, and its evaluation."""

    experiment: Literal["cartpole_embed"] = field("cartpole_embed", help="experiment name (selects this runner)")
    name: str = field("dcem", help="run name, part of the run folder's name")
    seed: int = field(0, help="seed of the initial-state sampler, the DCEM noise and the decoder's initialization")
    device: str = field("cpu", help="auto, cpu, cuda or cuda:N")
    num_threads: int = field(1, help="torch CPU threads (1 is fastest for these small, overhead-bound ops; 0: torch's default)")
    horizon: int = field(20, help="planning horizon H")
    latent_dim: int = field(2, help="dimension of the latent space Z")
    latent_bound: float = field(1.0, help="the latent space is the box [-b, b]^latent_dim")
    hidden_sizes: list[int] = field(default_factory=lambda: [256, 256, 256], help="decoder hidden layer widths (ELU)")
    init_scale: float = field(1.0, help="decoder initial weight scale alpha (app. C), times Xavier-normal")
    n_samples: int = field(100, help="latent DCEM samples per iteration")
    n_elites: int = field(10, help="latent DCEM elites")
    n_iters: int = field(10, help="latent DCEM iterations")
    temperature: float = field(1.0, help="latent DCEM soft top-k temperature tau (> 0)")
    init_std: float = field(0.5, help="initial latent sampling std")
    n_steps: int = field(1000, help="alg.-2 gradient steps")
    batch_size: int = field(16, help="initial states per gradient step")
    lr: float = field(1e-3, help="Adam learning rate (cosine-decayed to lr * lr_min_factor)")
    lr_min_factor: float = field(0.05, help="final learning rate as a fraction of lr")
    grad_clip: float = field(1.0, help="gradient-norm clip (<= 0: none)")
    n_val_states: int = field(100, help="fixed validation initial states")
    val_interval: int = field(25, help="validate (and keep the best decoder) every this many steps")
    full_iters: int = field(10, help="evaluation: iterations of full-space CEM")
    expert_samples: int = field(1000, help="evaluation: samples per iteration of the full-space expert")
    checkpoint: str = field("checkpoint.pt", help="checkpoint file name inside the run folder")

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("horizon", "latent_dim", "n_iters", "n_steps", "batch_size", "n_val_states", "val_interval",
                    "full_iters"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        check_cem_sizes(self.n_samples, self.n_elites, self.n_iters, self.horizon, where="cartpole_embed")
        if self.expert_samples < 10:
            raise ValueError(f"expert_samples must be >= 10, got {self.expert_samples}")
        for key in ("temperature", "latent_bound", "init_std", "init_scale", "lr"):
            if getattr(self, key) <= 0:
                raise ValueError(f"{key} must be > 0, got {getattr(self, key)}")
        if not self.hidden_sizes or min(self.hidden_sizes) < 1:
            raise ValueError(f"hidden_sizes must be a non-empty list of positive widths, got {self.hidden_sizes}")

    def latent_settings(self, temperature: float | None | str = "config") -> LatentCEMSettings:
        """The latent controller's settings; ``temperature`` overrides τ (``None``: hard CEM)."""
        return LatentCEMSettings(
            self.n_samples, self.n_elites, self.n_iters,
            self.temperature if temperature == "config" else temperature, self.latent_bound, self.init_std,
        )


def make_cost(x_init: torch.Tensor) -> ActionCost:
    """Cartpole controller cost for the states ``x_init`` (B, 4): actions (B, N, H, 1) -> costs (B, N)."""
    x = x_init.unsqueeze(1)
    return lambda actions: cartpole_cost(x, actions)


def build_decoder(cfg: Config) -> LatentActionDecoder:
    """The decoder of ``cfg`` (a fresh initialization from the current torch seed)."""
    return LatentActionDecoder(
        cfg.latent_dim, cfg.horizon, ACTION_DIM, -FORCE_BOUND, FORCE_BOUND, cfg.hidden_sizes, cfg.init_scale
    )


def train(cfg: Config, run_dir: Path) -> dict[str, Any]:
    """Alg. 2 on the cartpole; writes metrics and ``checkpoint.pt`` (the best-validation decoder) into ``run_dir``."""
    device = cfg.setup_torch()
    torch.manual_seed(cfg.seed)
    decoder = build_decoder(cfg).to(device)
    trainer = EmbeddingTrainer(
        decoder, make_cost, cfg.latent_settings(),
        lr=cfg.lr, total_steps=cfg.n_steps, lr_min_factor=cfg.lr_min_factor, grad_clip=cfg.grad_clip,
    )
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    val_generator = torch.Generator().manual_seed(cfg.seed + VAL_SEED_OFFSET)
    x_val = sample_initial_states(cfg.n_val_states, val_generator, device=device)
    val_seed = cfg.seed + VAL_SEED_OFFSET + 1
    logger = MetricsLogger(run_dir)
    start = time.perf_counter()
    logger.record("val/cost", trainer.validate(x_val, val_seed, step=0))
    logger.dump(0)
    bar = tqdm(range(1, cfg.n_steps + 1), desc="alg. 2", unit="step")
    running = None
    for step in bar:
        x_init = sample_initial_states(cfg.batch_size, generator, device=device)
        out = trainer.train_step(x_init, generator)
        running = out["loss"] if running is None else 0.95 * running + 0.05 * out["loss"]
        for key, value in out.items():
            logger.record(f"train/{key}", value)
        if step % cfg.val_interval == 0 or step == cfg.n_steps:
            val = trainer.validate(x_val, val_seed, step=step)
            logger.record("val/cost", val)
            logger.record("val/best_cost", trainer.best_cost)
            bar.set_postfix(loss=f"{running:.2f}", val=f"{val:.3f}", best=f"{trainer.best_cost:.3f}")
        logger.record("time/elapsed_s", time.perf_counter() - start)
        logger.dump(step)
    logger.close()
    wall = time.perf_counter() - start
    assert trainer.best_state is not None
    path = save_checkpoint(
        run_dir / cfg.checkpoint, "cartpole_embed", to_dict(cfg),
        {"decoder": trainer.best_state, "decoder_config": decoder.config(), "best_step": trainer.best_step,
         "best_val_cost": trainer.best_cost, "train_wall_s": wall},
    )
    log.info("best validation cost %.4f at step %d; checkpoint %s", trainer.best_cost, trainer.best_step, path)
    return {"checkpoint": str(path), "best_val_cost": trainer.best_cost, "best_step": trainer.best_step,
            "final_val_cost": val, "train_wall_s": round(wall, 1)}


def load_decoder(checkpoint: dict[str, Any], device: torch.device | str = "cpu") -> LatentActionDecoder:
    """Rebuild the trained decoder from a loaded ``cartpole_embed`` checkpoint."""
    decoder = LatentActionDecoder(**checkpoint["decoder_config"])
    decoder.load_state_dict(checkpoint["decoder"])
    return decoder.to(device).eval()


def improvement_factor(mean_return: float, expert_return: float) -> float:
    """``1 + (R - R_expert) / |R_expert|``: above 1 means better than the expert (see ``IMPROVEMENT_DEFINITION``)."""
    return 1.0 + (mean_return - expert_return) / abs(expert_return)


def _planners(cfg: Config, decoder: LatentActionDecoder) -> dict[str, tuple[int, Any]]:
    """name -> (samples per iteration, planner(x_init (B, 4), generator, callback) -> actions (B, H, 1))."""

    def latent(temperature: float | None):
        settings = cfg.latent_settings(temperature)

        def plan(x, generator, callback=None):
            return latent_plan(make_cost(x), decoder, x.shape[0], generator=generator, callback=callback,
                               **settings.as_kwargs()).actions

        return plan

    def full(n_samples: int):
        def plan(x, generator, callback=None):
            return action_space_plan(make_cost(x), cfg.horizon, -FORCE_BOUND, FORCE_BOUND, x.shape[0],
                                     n_samples=n_samples, n_elites=max(1, n_samples // 10), n_iters=cfg.full_iters,
                                     generator=generator, callback=callback, device=x.device, dtype=x.dtype)

        return plan

    return {
        "latent_dcem": (cfg.n_samples, latent(cfg.temperature)),
        "latent_cem": (cfg.n_samples, latent(None)),
        "full_cem_100": (100, full(100)),
        "full_cem_1000": (cfg.expert_samples, full(cfg.expert_samples)),
    }


def evaluate(checkpoint: dict[str, Any], options: EvalOptions) -> dict[str, Any]:
    """Compare the controllers on ``options.episodes`` held-out initial states (open loop, one plan per state).

    Each state is solved on its own (batch of one, as in MPC) with a generator seeded by the state's index, so the
    returns are reproducible on CPU; ``ms_per_plan`` is the mean wall time of one such call (machine-dependent).
    ``options.controller`` restricts the run to one controller (plus the expert, needed for the improvement factor).
    """
    config = dict(checkpoint["config"])
    if "threads" in config:  # written before the shared run header (RunConfig) named it num_threads
        config["num_threads"] = config.pop("threads")
    cfg = build(Config, config)
    device = resolve_device(options.device)
    decoder = load_decoder(checkpoint, device)
    planners = _planners(cfg, decoder)
    names = list(CONTROLLERS)
    if options.controller is not None:
        if options.controller not in planners:
            raise ValueError(f"unknown controller {options.controller!r}; choose from {', '.join(CONTROLLERS)}")
        names = [options.controller] + ([EXPERT] if options.controller != EXPERT else [])
    x_test = sample_initial_states(
        options.episodes, torch.Generator().manual_seed(options.seed + TEST_SEED_OFFSET), device=device
    )
    start = time.perf_counter()
    returns: dict[str, list[float]] = {n: [] for n in names}
    times: dict[str, list[float]] = {n: [] for n in names}
    with torch.no_grad():
        for i in tqdm(range(options.episodes), desc="evaluate", unit="state"):
            x = x_test[i : i + 1]
            for name in names:
                generator = torch.Generator(device=device).manual_seed(options.seed * 100_003 + i)
                t0 = time.perf_counter()
                actions = planners[name][1](x, generator)
                times[name].append(time.perf_counter() - t0)
                returns[name].append(float(cartpole_return(x, actions)[0]))
    expert_mean = sum(returns[EXPERT]) / len(returns[EXPERT])
    iters = {n: cfg.n_iters if n.startswith("latent") else cfg.full_iters for n in names}
    controllers = {}
    for name in names:
        stats = summarize(returns[name])  # the package's statistics convention (ddof 1, bootstrap CI)
        controllers[name] = {
            "mean_return": stats["mean"],
            "std_return": stats["std"],
            "ci95": stats["ci95"],
            "improvement_factor": improvement_factor(stats["mean"], expert_mean),
            "samples_per_iter": planners[name][0],
            "iters": iters[name],
            "transitions_per_plan": planners[name][0] * iters[name] * cfg.horizon,
            "ms_per_plan": 1000 * sum(times[name]) / len(times[name]),
        }
    table = _markdown_table(controllers)
    log.info("cartpole embedding, %d held-out initial states:\n%s", options.episodes, table)
    # the figures go beside the JSON result (none without one)
    figures = [] if options.out is None else _figures(cfg, decoder, planners, Path(options.out).parent, device)
    result = {
        "experiment": "cartpole_embed",
        "n_states": options.episodes,
        "seed": options.seed,
        "horizon": cfg.horizon,
        "protocol": "open loop: one plan from each initial state, scored by the true summed reward over the horizon",
        "improvement_factor_definition": IMPROVEMENT_DEFINITION,
        "checkpoint_best_step": checkpoint.get("best_step"),
        "checkpoint_best_val_cost": checkpoint.get("best_val_cost"),
        "controllers": controllers,
        "eval_wall_s": round(time.perf_counter() - start, 1),
        "figures": [str(f) for f in figures],
        "table": table,
    }
    write_result(result, options.out)
    return result


def _markdown_table(controllers: dict[str, dict[str, float]]) -> str:
    lines = [
        "| controller | samples/iter | iters | transitions/plan | mean return ± std | improvement factor | ms/plan |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, c in controllers.items():
        lines.append(
            f"| {name} | {c['samples_per_iter']} | {c['iters']} | {c['transitions_per_plan']:,} "
            f"| {c['mean_return']:.3f} ± {c['std_return']:.2f} | {c['improvement_factor']:.3f} "
            f"| {c['ms_per_plan']:.1f} |"
        )
    return "\n".join(lines)


def _figures(
    cfg: Config, decoder: LatentActionDecoder, planners: dict, folder: Path, device: torch.device
) -> list[Path]:
    """Fig. 3 (iterates of full CEM and latent DCEM from one state) and fig. 10 (C(z) for a few states)."""
    from dcem_agents.evaluation.cartpole_embed_figures import plot_cost_surfaces, plot_iterates

    folder.mkdir(parents=True, exist_ok=True)
    x_fig = sample_initial_states(4, torch.Generator().manual_seed(TEST_SEED_OFFSET + 7), device=device)
    paths = []
    if cfg.latent_dim == 2:
        paths.append(plot_iterates(cfg, decoder, planners, make_cost(x_fig[:1]), x_fig[:1],
                                   folder / "cartpole_embed_iterates.png", EXPERT))
        paths.append(plot_cost_surfaces(cfg, decoder, make_cost(x_fig), x_fig, folder / "cartpole_embed_cost_surface.png"))
    return paths

