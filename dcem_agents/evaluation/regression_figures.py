"""Figures of the energy-based regression experiment (Amos & Yarats 2020, figs. 1, 5 and 6), drawn with Agg.

Each function draws one PNG and returns its path; the numbers come from :mod:`dcem_agents.experiments.regression`.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from dcem_agents.models.energy import EnergyNet  # noqa: E402

__all__ = ["plot_ablation", "plot_energy_surfaces", "plot_losses", "plot_predictions"]

COLORS = {"gd": "tab:red", "dcem": "tab:blue"}
LABELS = {"gd": "unrolled GD", "dcem": "DCEM"}
Y_RANGE = (-7.0, 7.0)


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_losses(updates: list[int], curves: dict[str, list[float]], path: Path) -> Path:
    """Full-training-set MSE against updates (fig. 5 left); ``curves`` maps ``"<method>/seed<s>"`` to values."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for method in COLORS:
        runs = [v for k, v in curves.items() if k.startswith(f"{method}/")]
        for run in runs:
            ax.plot(updates, run, color=COLORS[method], alpha=0.35 if len(runs) > 1 else 1.0, lw=1)
        if runs:
            ax.plot(updates, np.mean(runs, 0), color=COLORS[method], lw=2,
                    label=f"{LABELS[method]} ({len(runs)} seed{'s' if len(runs) > 1 else ''})")
    ax.set_yscale("log")
    ax.set_xlabel("updates")
    ax.set_ylabel("training MSE (trained inner steps)")
    ax.set_title("Convergence on the training data")
    ax.legend()
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_ablation(ablation: dict, trained_steps: int, path: Path) -> Path:
    """Test MSE against the number of inner steps used at test time (fig. 5 right), mean and min-max over seeds."""
    steps = ablation["inner_steps"]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for method in COLORS:
        stats = ablation[method]
        ax.plot(steps, stats["mean"], "o-", ms=3, color=COLORS[method], label=LABELS[method])
        if len(stats["per_seed"]) > 1:
            ax.fill_between(steps, stats["min"], stats["max"], color=COLORS[method], alpha=0.2)
    ax.axvline(trained_steps, color="k", ls=":", lw=1, label=f"trained with {trained_steps}")
    ax.set_yscale("log")
    ax.set_xlabel("inner steps at test time")
    ax.set_ylabel("test MSE")
    ax.set_title("Inner-iteration ablation")
    ax.legend()
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_energy_surfaces(energies: dict[str, EnergyNet], predictions: dict[str, Tensor], x_test: Tensor, grid: int,
                         seed: int, path: Path) -> Path:
    """Normalized, log-scaled energy surfaces over (x, y) with the target and the predictions (fig. 1).

    For each x the energy over y is scaled to [0, 1] and shown as ``log(Ẽ + 1e-6)`` clipped to [-10, 0]: lighter
    is lower energy. The dotted white line is the grid minimizer ``argmin_y E(y|x)``.

    :param predictions: per method, predictions ``(n_test, 1)`` at ``x_test`` with the trained number of steps.
    """
    xs = torch.linspace(0.0, 2 * math.pi, grid)
    ys = torch.linspace(*Y_RANGE, grid)
    xx, yy = torch.meshgrid(xs, ys, indexing="xy")  # (grid_y, grid_x)
    fig, axes = plt.subplots(1, len(energies), figsize=(5.2 * len(energies), 3.8), squeeze=False)
    for ax, (method, energy) in zip(axes[0], energies.items()):
        device = next(energy.parameters()).device
        with torch.no_grad():
            z = energy(xx.reshape(-1, 1).to(device), yy.reshape(-1, 1).to(device)).reshape(grid, grid).cpu()
        lo, hi = z.amin(0, keepdim=True), z.amax(0, keepdim=True)
        zn = ((z - lo) / (hi - lo).clamp_min(1e-12)).clamp(max=1.0)
        zl = torch.log(zn + 1e-6).clamp(-10.0, 0.0)
        cs = ax.contourf(xx.numpy(), yy.numpy(), zl.numpy(), levels=np.linspace(-10, 0, 11), cmap="Blues", alpha=0.85)
        ax.plot(xs, (xs * torch.sin(xs)).numpy(), "k", lw=2, label="target x sin x")
        ax.plot(xs, ys[z.argmin(0)].numpy(), color="w", ls=":", lw=1.2, label="argmin_y E (grid)")
        ax.plot(x_test.cpu().squeeze(1), predictions[method].cpu().squeeze(1), "--", color="tab:orange", lw=2,
                label="prediction")
        ax.set_ylim(*Y_RANGE)
        ax.set_xlim(0, 2 * math.pi)
        ax.set_xlabel("x")
        ax.set_ylabel("y")
        ax.set_title(f"{LABELS[method]} energy surface (seed {seed})")
        ax.legend(loc="lower left", fontsize=7)
        fig.colorbar(cs, ax=ax, label="log normalized energy")
    return _save(fig, path)


def plot_predictions(x_test: Tensor, predictions: dict[str, dict[int, Tensor]], path: Path) -> Path:
    """Predictions with different numbers of inner steps at test time, one panel per method (fig. 6)."""
    fig, axes = plt.subplots(1, len(predictions), figsize=(5.0 * len(predictions), 3.5), squeeze=False, sharey=True)
    x = x_test.cpu().squeeze(1)
    for ax, (method, by_steps) in zip(axes[0], predictions.items()):
        cmap = plt.get_cmap("viridis")
        n = max(len(by_steps) - 1, 1)
        ax.plot(x, x * torch.sin(x), "k", lw=2.5, label="target")
        for i, (steps, pred) in enumerate(sorted(by_steps.items())):
            ax.plot(x, pred.cpu().squeeze(1), color=cmap(i / n), lw=1.3, label=f"{steps} steps")
        ax.set_ylim(*Y_RANGE)
        ax.set_xlabel("x")
        ax.set_title(f"{LABELS[method]}: predictions vs inner steps")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    axes[0][0].set_ylabel("y")
    return _save(fig, path)
