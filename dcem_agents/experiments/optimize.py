"""Demo: hard CEM and DCEM side by side on a non-convex test function (alg. 1).

Solves ``n_problems`` independent copies of a 2-D (or d-D) Rastrigin or Ackley problem in a box, records the best
and mean-iterate objective per iteration, and draws the sample clouds of both methods over the function's contours.
Outputs in the run folder: ``summary.json``, ``progress.csv`` and ``tb/`` (per-iteration metrics), ``iterates.png``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from tqdm import tqdm

from dcem_agents.config import field
from dcem_agents.math import CEMIterate, ackley, check_cem_sizes, dcem, rastrigin
from dcem_agents.training import MetricsLogger
from dcem_agents.training.run_config import RunConfig

__all__ = ["Config", "train"]

_FUNCTIONS = {"rastrigin": (rastrigin, 5.12), "ackley": (ackley, 32.768)}


@dataclass
class Config(RunConfig):
    """CEM vs DCEM on a test function."""

    experiment: Literal["optimize"] = field("optimize", help="experiment name (selects this runner)")
    name: str = field("rastrigin", help="run name, part of the run folder's name")
    seed: int = field(0, help="seed of the sampling generator")
    function: Literal["rastrigin", "ackley"] = field("rastrigin", help="test function to minimize")
    dim: int = field(2, help="dimension of the search space")
    n_problems: int = field(64, help="independent problems solved in one batched call")
    n_samples: int = field(500, help="samples per iteration")
    n_elites: int = field(50, help="elites per iteration")
    n_iters: int = field(50, help="iterations")
    temperature: float = field(1.0, help="DCEM soft top-k temperature (> 0)")
    tolerance: float = field(1e-2, help="a problem counts as solved when every coordinate is within this of the optimum 0")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.dim < 1 or self.n_problems < 1 or self.n_iters < 1:
            raise ValueError("dim, n_problems and n_iters must be >= 1")
        check_cem_sizes(self.n_samples, self.n_elites, self.n_iters, where="optimize")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")


def train(cfg: Config, run_dir: Path) -> dict:
    """Run hard CEM and DCEM with the same noise seed; write metrics, the figure and ``summary.json``."""
    device = cfg.setup_torch()
    fn, bound = _FUNCTIONS[cfg.function]
    logger = MetricsLogger(run_dir)
    summary: dict = {"function": cfg.function, "dim": cfg.dim, "n_problems": cfg.n_problems}
    traces: dict[str, list[CEMIterate]] = {}
    methods = {"cem": None, "dcem": cfg.temperature}
    history: dict[str, list[float]] = {}
    for method, temperature in tqdm(methods.items(), desc="optimize", unit="method"):
        iterates: list[CEMIterate] = []
        generator = torch.Generator(device=device).manual_seed(cfg.seed)
        solution = dcem(
            fn, cfg.dim, n_batch=cfg.n_problems, n_samples=cfg.n_samples, n_elites=cfg.n_elites,
            n_iters=cfg.n_iters, temperature=temperature, lower=-bound, upper=bound,
            generator=generator, callback=iterates.append, device=device,
        )
        traces[method] = iterates
        history[method] = [float(fn(it.mean).mean()) for it in iterates]
        solved = (solution.abs().amax(-1) <= cfg.tolerance).float().mean()
        summary[method] = {
            "temperature": temperature,
            "final_value_mean": float(fn(solution).mean()),
            "final_value_max": float(fn(solution).max()),
            "solved_fraction": float(solved),
        }
    for t in range(cfg.n_iters):
        for method in methods:
            logger.record(f"{method}/mean_iterate_value", history[method][t])
        logger.dump(t)
    logger.close()
    if cfg.dim == 2:
        _plot_iterates(traces, fn, bound, run_dir / "iterates.png")
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _plot_iterates(traces: dict[str, list[CEMIterate]], fn, bound: float, path: Path) -> None:
    """Samples of problem 0 at a few iterations over the contours of ``fn``, one row per method (elites darker)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_iters = len(next(iter(traces.values())))
    shown = sorted({0, 1, n_iters // 4, n_iters // 2, n_iters - 1})
    grid = torch.linspace(-bound, bound, 200)
    xx, yy = torch.meshgrid(grid, grid, indexing="xy")
    zz = fn(torch.stack([xx, yy], -1))
    fig, axes = plt.subplots(len(traces), len(shown), figsize=(3 * len(shown), 3 * len(traces)), squeeze=False)
    for row, (method, iterates) in enumerate(traces.items()):
        for col, t in enumerate(shown):
            ax = axes[row, col]
            ax.contourf(xx, yy, zz, levels=30, cmap="viridis")
            it = iterates[t]
            pts = it.samples[0].detach().cpu()
            w = it.weights[0].detach().cpu()
            ax.scatter(pts[:, 0], pts[:, 1], s=4, c="white", alpha=0.4)
            ax.scatter(pts[:, 0], pts[:, 1], s=8, c="red", alpha=w.clamp(0, 1).numpy())
            ax.plot(*it.mean[0].detach().cpu(), "k*", ms=10)
            ax.set_title(f"{method.upper()} iteration {t + 1}", fontsize=9)
            ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle("Samples (white), elite weights (red), new mean (star)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
