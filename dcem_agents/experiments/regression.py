"""Energy-based regression: unrolled gradient descent vs DCEM (Amos & Yarats 2020, sect. 5.1, figs. 1-2, app. B).

A deep energy model ``E_θ(y|x)`` (:class:`~dcem_agents.models.energy.EnergyNet`) is fitted to ``y = x sin x`` on
``[0, 2π]`` by minimizing ``L = (ŷ - y*)²`` through the predictor ``ŷ ≈ argmin_y E_θ(y|x)`` (eq. 6), once with
10 unrolled gradient steps (lr 0.1 from ``y0 = 0``) and once with DCEM (10 iterations, 100 samples, 10 elites,
τ = 1, from mean ``y0 = 0``). Both models start from the same initial network, see the same minibatches and are
trained in lockstep, once per seed. Afterwards each is evaluated on held-out inputs with 1 … ``ablation_max_steps``
inner steps (the ablation of app. B, fig. 5 right): the paper's finding is that GD overfits to its 10 steps while
DCEM keeps a minimum of the energy at the target.

Training follows the authors' released experiment where the paper is silent: Adam (lr 1e-3), gradient-norm clipping
at 1, the learning rate halved when the full-training-set loss plateaus. It uses minibatches of ``batch_size`` random
training points (the authors used single points, 3 updates each, for 100k updates) to fit a CPU budget.

Outputs, all in the run folder: ``progress.csv`` / ``tb/``, ``checkpoint.pt``, ``regression.json`` and four PNGs
(``train.py --publish`` copies the JSON to ``results_path`` and the PNGs to ``figures_dir``): ``regression_loss.png``,
``regression_ablation.png``, ``regression_energy.png`` (fig. 1) and ``regression_predictions.png`` (fig. 6).
"""

from __future__ import annotations

import json
import logging
import math
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn
from tqdm import tqdm

from dcem_agents.math.cem import check_cem_sizes
from dcem_agents.config import build, field, to_dict
from dcem_agents.experiments import EvalOptions, write_result
from dcem_agents.evaluation.regression_figures import (
    plot_ablation,
    plot_energy_surfaces,
    plot_losses,
    plot_predictions,
)
from dcem_agents.models.energy import EnergyNet
from dcem_agents.models.energy_predictors import DCEMPredictor, UnrolledGDPredictor
from dcem_agents.training import MetricsLogger, save_checkpoint
from dcem_agents.training.energy_regression import RegressionMember, inner_iterates, regression_data, target
from dcem_agents.training.device import resolve_device
from dcem_agents.training.run_config import RunConfig

__all__ = ["Config", "DCEMConfig", "GDConfig", "evaluate", "make_data", "make_predictor", "train"]

log = logging.getLogger(__name__)
METHODS = ("gd", "dcem")
#: offset of the seed of the evaluation noise (DCEM's samples at test time), so it never equals a training stream
EVAL_SEED_OFFSET = 10_000


@dataclass
class GDConfig:
    """Unrolled gradient descent on the energy (sect. 4.1)."""

    n_steps: int = field(10, help="inner gradient steps unrolled in training (paper: 10)")
    inner_lr: float = field(0.1, help="inner step size γ (paper: 0.1)")


@dataclass
class DCEMConfig:
    """DCEM on the energy (alg. 1)."""

    n_iters: int = field(10, help="DCEM iterations in training (paper: 10)")
    n_samples: int = field(100, help="samples per iteration (paper: 100)")
    n_elites: int = field(10, help="elites per iteration (paper: 10)")
    temperature: float = field(1.0, help="soft top-k temperature τ (paper: 1)")
    init_std: float = field(7.0, help="std of the initial Gaussian (authors' code: 7)")


@dataclass
class Config(RunConfig):
    """Fit E_θ(y|x) to y = x sin x with unrolled GD and with DCEM; ablate the number of inner steps."""

    experiment: Literal["regression"] = field("regression", help="experiment name (selects this runner)")
    name: str = field("xsinx", help="run name, part of the run folder's name")
    seed: int = field(0, help="first seed; seeds are seed, seed+1, ..., seed+n_seeds-1")
    n_seeds: int = field(1, help="independent trainings of each model (paper: 3)")
    device: str = field("cpu", help="auto, cpu, cuda or cuda:N")
    num_threads: int = field(1, help="torch CPU threads (1 avoids oversubscription on a shared CPU; 0 = torch default)")
    n_train: int = field(100, help="training inputs, evenly spaced on [0, 2π] (authors' code: 100)")
    n_test: int = field(256, help="held-out test inputs, the midpoints of an even grid on [0, 2π]")
    hidden: int = field(128, help="width of the energy MLP's hidden layers (authors' code: 128)")
    n_layers: int = field(3, help="hidden layers of the energy MLP (authors' code: 3)")
    y0: float = field(0.0, help="initial iterate of GD and initial mean of DCEM (paper: 0)")
    gd: GDConfig = field(default_factory=GDConfig, help="unrolled gradient descent predictor")
    dcem: DCEMConfig = field(default_factory=DCEMConfig, help="DCEM predictor")
    n_updates: int = field(2000, help="optimizer updates of each model")
    batch_size: int = field(10, help="random training points per update")
    lr: float = field(1e-3, help="Adam learning rate (authors' code: 1e-3)")
    clip_norm: float = field(1.0, help="gradient-norm clipping threshold; 0 disables (authors' code: 1)")
    lr_patience: int = field(4, help="evaluations without improvement before the lr is multiplied by lr_factor")
    lr_factor: float = field(0.5, help="learning-rate decay factor on plateaus (authors' code: 0.5)")
    eval_every: int = field(50, help="updates between evaluations of the full-training-set loss")
    ablation_max_steps: int = field(30, help="test both models with 1 ... this many inner steps (paper: 30)")
    surface_grid: int = field(200, help="grid points per axis of the energy-surface figure")
    results_path: str = field("results/regression.json", help="where --publish copies the run's regression.json")
    figures_dir: str = field("results", help="where --publish copies the run's PNG figures ('': not copied)")

    def __post_init__(self) -> None:
        super().__post_init__()
        positive = {"n_seeds": self.n_seeds, "n_train": self.n_train, "n_test": self.n_test, "hidden": self.hidden,
                    "n_layers": self.n_layers, "n_updates": self.n_updates, "batch_size": self.batch_size,
                    "eval_every": self.eval_every, "ablation_max_steps": self.ablation_max_steps,
                    "surface_grid": self.surface_grid, "gd.n_steps": self.gd.n_steps, "dcem.n_iters": self.dcem.n_iters}
        for key, value in positive.items():
            if value < 1:
                raise ValueError(f"{key} must be >= 1, got {value}")
        if self.lr <= 0 or self.gd.inner_lr <= 0 or self.dcem.init_std <= 0 or self.dcem.temperature <= 0:
            raise ValueError("lr, gd.inner_lr, dcem.init_std and dcem.temperature must be > 0")
        if not 0 < self.lr_factor < 1 or self.lr_patience < 0 or self.clip_norm < 0:
            raise ValueError("need 0 < lr_factor < 1, lr_patience >= 0 and clip_norm >= 0")
        check_cem_sizes(self.dcem.n_samples, self.dcem.n_elites, self.dcem.n_iters, where="dcem")


def make_data(cfg: Config, device: torch.device) -> dict[str, Tensor]:
    """The data of ``cfg`` (:func:`~dcem_agents.training.energy_regression.regression_data`)."""
    return regression_data(cfg.n_train, cfg.n_test, device)


def make_predictor(method: str, energy: EnergyNet, cfg: Config) -> nn.Module:
    """The GD or DCEM predictor of ``cfg`` over ``energy``."""
    if method == "gd":
        return UnrolledGDPredictor(energy, cfg.gd.n_steps, cfg.gd.inner_lr, cfg.y0)
    if method == "dcem":
        d = cfg.dcem
        return DCEMPredictor(energy, d.n_iters, d.n_samples, d.n_elites, d.temperature, d.init_std, cfg.y0)
    raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")


def _make_member(method: str, seed: int, cfg: Config, device: torch.device) -> RegressionMember:
    return RegressionMember.create(method, seed, lambda energy: make_predictor(method, energy, cfg), hidden=cfg.hidden,
                                   n_layers=cfg.n_layers, lr=cfg.lr, lr_patience=cfg.lr_patience,
                                   lr_factor=cfg.lr_factor, device=device)


def _stats(per_seed: list[list[float]]) -> dict[str, list[float]]:
    t = torch.tensor(per_seed, dtype=torch.float64)
    return {"mean": t.mean(0).tolist(), "min": t.amin(0).tolist(), "max": t.amax(0).tolist(), "per_seed": per_seed}


def _ablation_summary(steps: list[int], mse: list[float], trained: int) -> dict[str, object]:
    best = min(mse)
    at = {str(s): mse[s - 1] for s in (1, 5, 10, 20, 30, trained) if s <= len(mse)}
    tail = mse[trained - 1:]
    return {"trained_steps": trained, "best_steps": steps[mse.index(best)], "best_mse": best, "mse_at_steps": at,
            "ratio_to_best_at_steps": {k: v / best for k, v in at.items()},
            "worst_ratio_to_best_from_trained_steps_on": max(tail) / best if tail else None}


def train(cfg: Config, run_dir: Path) -> dict:
    """Train both models per seed in lockstep, run the inner-step ablation, draw the figures, write the JSON."""
    t_start = time.perf_counter()
    device = cfg.setup_torch()
    data = make_data(cfg, device)
    x, y = data["x_train"], data["y_train"]
    seeds = [cfg.seed + i for i in range(cfg.n_seeds)]
    members = [_make_member(method, s, cfg, device) for s in seeds for method in METHODS]
    eval_seed = cfg.seed + EVAL_SEED_OFFSET
    logger = MetricsLogger(run_dir)
    curves: dict[str, list[float]] = {m.key: [] for m in members}
    eval_steps: list[int] = []
    window: dict[str, list[Tensor]] = {m.key: [] for m in members}
    bar = tqdm(range(0, cfg.n_updates + 1), desc="regression", unit="update")
    for step in bar:
        if step > 0:
            for m in members:
                window[m.key].append(m.update(x, y, cfg.batch_size, cfg.clip_norm))
        if step % cfg.eval_every and step != cfg.n_updates:
            continue
        eval_steps.append(step)
        for m in members:
            train_mse = m.mse_per_step(x, y, _train_steps(m.method, cfg), eval_seed)[-1]
            if step > 0:
                m.scheduler.step(train_mse)
                logger.record(f"{m.key}/batch_loss", float(torch.stack(window[m.key]).mean()))
            curves[m.key].append(train_mse)
            logger.record(f"{m.key}/train_mse", train_mse)
            logger.record(f"{m.key}/lr", m.optimizer.param_groups[0]["lr"])
            window[m.key] = []
        means = {method: sum(curves[m.key][-1] for m in members if m.method == method) / len(seeds)
                 for method in METHODS}
        for method, value in means.items():
            logger.record(f"{method}/train_mse", value)
        bar.set_postfix({f"{method}_mse": f"{value:.3g}" for method, value in means.items()})
        logger.dump(step)
    logger.close()
    train_seconds = time.perf_counter() - t_start

    t_eval = time.perf_counter()
    steps = list(range(1, cfg.ablation_max_steps + 1))
    ablation: dict[str, object] = {"inner_steps": steps}
    for method in METHODS:
        per_seed = [m.mse_per_step(data["x_test"], data["y_test"], cfg.ablation_max_steps, eval_seed)
                    for m in members if m.method == method]
        stats = _stats(per_seed)
        ablation[method] = {**stats, "summary": _ablation_summary(steps, stats["mean"], _train_steps(method, cfg))}
    eval_seconds = time.perf_counter() - t_eval

    first = {m.method: m for m in members if m.seed == seeds[0]}
    save_checkpoint(run_dir / "checkpoint.pt", "regression", to_dict(cfg),
                    {"seeds": seeds, "models": {m.key: m.energy.state_dict() for m in members}})
    t_fig = time.perf_counter()
    figures = _draw_figures(cfg, data, first, eval_steps, curves, ablation, seeds, eval_seed, run_dir)
    fig_seconds = time.perf_counter() - t_fig

    results = {
        "experiment": "regression",
        "paper": "Amos & Yarats (2020), The Differentiable Cross-Entropy Method, sect. 5.1, figs. 1-2, app. B",
        "task": "fit E_theta(y|x) to y = x sin x on [0, 2pi]; predict y_hat = argmin_y E by unrolled GD or DCEM",
        "config": to_dict(cfg),
        "seeds": seeds,
        "eval_noise_seed": eval_seed,
        "n_parameters": sum(p.numel() for p in members[0].energy.parameters()),
        "train_inner_steps": {method: _train_steps(method, cfg) for method in METHODS},
        "final_train_mse": {method: _stats([[curves[m.key][-1]] for m in members if m.method == method])
                            for method in METHODS},
        "loss_curves": {"description": "full-training-set MSE at the trained number of inner steps",
                        "updates": eval_steps, **{method: _stats([curves[m.key] for m in members if m.method == method])
                                                  for method in METHODS}},
        "ablation": {"description": "test MSE (mean over seeds, and per seed) against the number of inner steps "
                                    f"used at test time; trained with {cfg.gd.n_steps} GD steps / "
                                    f"{cfg.dcem.n_iters} DCEM iterations",
                     **ablation},
        "wall_time_s": {"total_train_loop": train_seconds,
                        **{f"train_updates_{method}": sum(m.train_seconds for m in members if m.method == method)
                           for method in METHODS},
                        "ablation": eval_seconds, "figures": fig_seconds},
        "environment": {"torch": torch.__version__, "python": platform.python_version(), "device": str(device),
                        "num_threads": torch.get_num_threads()},
        "figures": figures,
        "run_dir": str(run_dir),
    }
    results["wall_time_s"]["total"] = time.perf_counter() - t_start
    text = json.dumps(results, indent=2)
    (run_dir / "regression.json").write_text(text)
    log.info("wrote %s and %d figures", run_dir / "regression.json", len(figures))
    return {"results": str(run_dir / "regression.json"), "wall_time_s": round(results["wall_time_s"]["total"], 1),
            "final_train_mse": {k: v["mean"][0] for k, v in results["final_train_mse"].items()},
            **{f"{method}_test_mse_at_steps": ablation[method]["summary"]["mse_at_steps"] for method in METHODS}}


def _train_steps(method: str, cfg: Config) -> int:
    return cfg.gd.n_steps if method == "gd" else cfg.dcem.n_iters


def _draw_figures(cfg: Config, data: dict[str, Tensor], first: dict[str, RegressionMember], eval_steps: list[int],
                  curves: dict[str, list[float]], ablation: dict, seeds: list[int], eval_seed: int,
                  out: Path) -> list[str]:
    """Draw the four figures into ``out`` (the run folder); return their paths."""
    x_test, n_max = data["x_test"], cfg.ablation_max_steps
    shown = sorted({s for s in (1, 5, 10, 20, 30, n_max) if s <= n_max})
    preds = {method: inner_iterates(m.predictor, x_test, n_max, eval_seed) for method, m in first.items()}
    paths = [
        plot_losses(eval_steps, {k: v for k, v in curves.items()}, out / "regression_loss.png"),
        plot_ablation(ablation, _train_steps("gd", cfg), out / "regression_ablation.png"),
        plot_energy_surfaces({method: m.energy for method, m in first.items()},
                             {method: p[_train_steps(method, cfg) - 1] for method, p in preds.items()},
                             x_test, cfg.surface_grid, seeds[0], out / "regression_energy.png"),
        plot_predictions(x_test, {method: {s: p[s - 1] for s in shown} for method, p in preds.items()},
                         out / "regression_predictions.png"),
    ]
    return [str(p) for p in paths]


def evaluate(checkpoint: dict, options: EvalOptions) -> dict:
    """Re-run the inner-step ablation of a checkpoint on ``options.episodes`` evenly spaced test inputs.

    ``options.controller`` picks ``gd`` or ``dcem`` (default: both); ``options.seed`` seeds DCEM's sampling noise.
    The result is also written to ``options.out`` when given.
    """
    cfg = build(Config, checkpoint["config"])
    methods = METHODS if options.controller is None else (options.controller,)
    if any(method not in METHODS for method in methods):
        raise ValueError(
            f"unknown controller {options.controller!r} for a regression checkpoint; known: {', '.join(METHODS)}"
        )
    device = resolve_device(options.device)
    x = ((torch.arange(options.episodes, device=device) + 0.5) * (2 * math.pi / options.episodes)).unsqueeze(1)
    steps = list(range(1, cfg.ablation_max_steps + 1))
    result: dict[str, object] = {"experiment": "regression", "n_test": options.episodes, "noise_seed": options.seed,
                                 "inner_steps": steps}
    for method in methods:
        per_seed = []
        for seed in checkpoint["seeds"]:
            energy = EnergyNet(1, 1, cfg.hidden, cfg.n_layers).to(device)
            energy.load_state_dict(checkpoint["models"][f"{method}/seed{seed}"])
            its = inner_iterates(make_predictor(method, energy, cfg), x, cfg.ablation_max_steps, options.seed)
            per_seed.append(((its - target(x)) ** 2).mean(dim=(1, 2)).tolist())
        stats = _stats(per_seed)
        result[method] = {**stats, "summary": _ablation_summary(steps, stats["mean"], _train_steps(method, cfg))}
    write_result(result, options.out)
    return result
