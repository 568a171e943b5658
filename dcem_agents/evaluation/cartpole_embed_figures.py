"""Figures of the cartpole embedding experiment: analogues of the paper's fig. 3 and fig. 10 (Agg backend).

- :func:`plot_iterates`: from one initial state, the sampled action sequences of full-space CEM (expert) and of
  latent DCEM at a few iterations (elite weight as colour), plus the latent samples over the cost surface ``C(z)``.
- :func:`plot_cost_surfaces`: the learned latent cost surface ``C(f_dec(z); x_init)`` for a few initial states.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from dcem_agents.math import CEMIterate
from dcem_agents.models.decoder import LatentActionDecoder
from dcem_agents.planning.latent import ActionCost, latent_cost_surface

__all__ = ["plot_iterates", "plot_cost_surfaces"]

_SHOWN_ITERS = (0, 1, 4, 9)
_MAX_LINES = 100


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@torch.no_grad()
def plot_iterates(cfg: Any, decoder: LatentActionDecoder, planners: dict, cost: ActionCost, x_init: Tensor, path: Path,
                  expert: str, latent: str = "latent_dcem") -> Path:
    """Fig. 3: CEM over the full action space vs DCEM over the learned latent space, from ``x_init`` (1, 4).

    :param planners: name -> ``(settings, plan)`` with ``plan(x_init, generator, on_iterate)``, holding ``expert``
        (the full-space planner) and ``latent``.
    :param cost: the controller cost of ``x_init``: actions (1, N, H, A) -> costs (1, N).
    """
    plt = _pyplot()
    traces: dict[str, list[CEMIterate]] = {"full": [], "latent": []}
    for key, name in (("full", expert), ("latent", latent)):
        planners[name][1](x_init, torch.Generator(device=x_init.device).manual_seed(0), traces[key].append)
    grid, surface = latent_cost_surface(cost, decoder, 1, latent_bound=cfg.latent_bound)
    shown = [t for t in _SHOWN_ITERS if t < min(len(traces["full"]), len(traces["latent"]))]
    fig, axes = plt.subplots(3, len(shown), figsize=(3.2 * len(shown), 8.4), squeeze=False)
    steps = torch.arange(1, cfg.horizon + 1)
    for col, t in enumerate(shown):
        for row, key in enumerate(("full", "latent")):
            it = traces[key][t]
            samples = it.samples[0]
            actions = samples.reshape(samples.shape[0], -1) if key == "full" else decoder(samples)[..., 0]
            weights = it.weights[0].clamp(0, 1)
            shown_idx = torch.arange(min(samples.shape[0], _MAX_LINES))  # samples are i.i.d.: the first ones suffice
            order = shown_idx[torch.argsort(weights[shown_idx])]  # draw the highest-weighted last, on top
            ax = axes[row, col]
            for i in order.tolist():
                w = float(weights[i])
                ax.plot(steps, actions[i].cpu(), color=plt.cm.viridis(w), alpha=0.25 + 0.6 * w, lw=0.8)
            ax.set_ylim(-105, 105)
            label = f"{'full CEM' if key == 'full' else 'latent DCEM'}, {samples.shape[0]} samples"
            ax.set_title(f"{label}\niteration {t + 1}", fontsize=8)
            if col == 0:
                ax.set_ylabel("force u_t")
        ax = axes[2, col]
        ax.contourf(grid[..., 0].cpu(), grid[..., 1].cpu(), (-surface[0]).cpu(), levels=30, cmap="Blues_r")
        z = traces["latent"][t].samples[0].cpu()
        w = traces["latent"][t].weights[0].clamp(0, 1).cpu()
        ax.scatter(z[:, 0], z[:, 1], s=6, c="white", alpha=0.5)
        ax.scatter(z[:, 0], z[:, 1], s=10, c="red", alpha=w.numpy())
        ax.set_title(f"latent samples on C(z), iteration {t + 1}", fontsize=8)
        ax.set_xticks([]), ax.set_yticks([])
    for ax in axes[1]:
        ax.set_xlabel("time step")
    fig.suptitle(f"Cartpole, one initial state: up to {_MAX_LINES} sampled action sequences per panel (colour = elite "
                 "weight, viridis: yellow = 1) and the latent cost surface (lighter = lower cost)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


@torch.no_grad()
def plot_cost_surfaces(cfg: Any, decoder: LatentActionDecoder, cost: ActionCost, x_init: Tensor, path: Path) -> Path:
    """Fig. 10: the learned cost surface ``C(f_dec(z); x_init)`` for each state of ``x_init`` (B, 4) under ``cost``
    (actions (B, N, H, A) -> costs (B, N))."""
    plt = _pyplot()
    grid, surface = latent_cost_surface(cost, decoder, x_init.shape[0], latent_bound=cfg.latent_bound,
                                        resolution=80)
    n = x_init.shape[0]
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.2), squeeze=False)
    for i in range(n):
        ax = axes[0, i]
        cs = ax.contourf(grid[..., 0].cpu(), grid[..., 1].cpu(), surface[i].cpu(), levels=30, cmap="Blues")
        fig.colorbar(cs, ax=ax, fraction=0.046)
        best = surface[i].flatten().argmin()
        ax.plot(*grid.reshape(-1, 2)[best].cpu(), "r*", ms=9)
        x = x_init[i].cpu()
        title = f"x={x[0]:.2f} ẋ={x[1]:.2f}\nθ={x[2]:.2f} θ̇={x[3]:.2f}; min C={float(surface[i].min()):.2f}"
        ax.set_title(title, fontsize=8)
        ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle("Learned latent cost surfaces C(z) (lighter = lower cost, star = grid minimum)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
