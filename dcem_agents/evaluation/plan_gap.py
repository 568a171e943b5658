"""What a planner's plans promise against what they deliver: the model-exploitation check of a planning agent.

Every planner here maximizes the world model's predicted return of an action sequence (eq. 7 in the full action
space, eq. 8 through the latent decoder). A planner that finds sequences the model over-rates scores well in the model
and badly in the environment. This module measures that gap on real states, for several planners of one checkpoint:

1. :func:`collect_states`: run one controller for a few episodes and keep, at uniformly drawn steps, the belief the
   planner plans from and the actions that led there (``PlanState``);
2. :func:`planned_actions`: each planner plans once from each stored belief (afresh: full-space CEM without the warm
   start it has in an episode, the latent planners as always);
3. :func:`predicted_returns`: the model's return of each plan, ``Σ_t w_t r̂_t`` over the horizon (the planners'
   objective, in fp32 through :meth:`~dcem_agents.models.rssm.RSSM.imagine`);
4. :func:`open_loop_returns`: the environment's return of the same plan, executed open-loop from the same state (the
   environment is reset with the episode's seed and replays the actions that led there: MuJoCo and DeepMind Control
   are deterministic given both), summed until the horizon or the episode's end.

``predicted − real`` is the planner's over-estimate; the real open-loop returns of two planners on the same states
compare their plans as the environment sees them. Both are per state, so differences are paired.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dcem_agents.envs import make_env
from dcem_agents.evaluation.entries import Entry, EntryError
from dcem_agents.evaluation.report import paired_table, report_paths
from dcem_agents.evaluation.stats import convention, paired_differences, summarize
from dcem_agents.models.rssm import RSSM
from dcem_agents.planning.latent_mpc import LatentDCEMController
from dcem_agents.planning.mpc import CEMController, Controller
from dcem_agents.training.rollout import run_episodes

__all__ = ["PlanState", "collect_states", "measure_plan_gap", "open_loop_returns", "planned_actions",
           "predicted_returns", "write_plan_gap_report"]


@dataclass
class PlanState:
    """A state to plan from: the episode's reset ``seed``, the agent ``step`` reached, the ``prefix`` of actions that
    reached it (step, A) and the model's ``belief`` there (D,)."""

    seed: int
    step: int
    prefix: np.ndarray
    belief: Tensor


class _Recording:
    """A controller that keeps the beliefs it is asked to act on, one (n_envs, D) tensor per call."""

    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self.beliefs: list[Tensor] = []

    def reset(self, n_envs: int) -> None:
        self.controller.reset(n_envs)

    def act(self, belief: Tensor, generator: torch.Generator | None = None) -> Tensor:
        self.beliefs.append(belief.detach().clone())
        return self.controller.act(belief, generator)


def collect_states(env_id: str, action_repeat: int, model: RSSM, controller: Controller, seeds: Sequence[int],
                   n_states: int, horizon: int, rng: np.random.Generator,
                   generator: torch.Generator | None = None) -> list[PlanState]:
    """Run ``controller`` for one episode per seed (batched, no exploration noise) and draw ``n_states`` of the steps
    it planned at, uniformly without replacement, among those with at least ``horizon`` steps of the episode left
    (all steps of an episode that terminated: the open-loop return then stops where the episode did).

    :param seeds: reset seeds (E,), one episode each.
    :param horizon: the planners' horizon ``H`` (agent steps).
    :param rng: draws the steps.
    :param generator: the controller's sampling generator.
    :raises ValueError: fewer eligible steps than ``n_states``.
    """
    recording = _Recording(controller)
    envs = [make_env(env_id, action_repeat=action_repeat) for _ in seeds]
    try:
        episodes, _ = run_episodes(envs, model, recording, list(seeds), generator=generator)
    finally:
        for env in envs:
            env.close()
    eligible = [(i, t) for i, ep in enumerate(episodes)
                for t in range(len(ep.actions) if ep.terminated else max(len(ep.actions) - horizon + 1, 0))]
    if len(eligible) < n_states:
        raise ValueError(f"{len(seeds)} episodes give {len(eligible)} steps with {horizon} steps left to plan from, "
                         f"fewer than the {n_states} states asked for: run more episodes")
    picks = sorted(rng.choice(len(eligible), size=n_states, replace=False).tolist())
    return [PlanState(int(seeds[i]), t, episodes[i].actions[:t].copy(), recording.beliefs[t][i])
            for i, t in (eligible[k] for k in picks)]


@torch.no_grad()
def planned_actions(controller: Controller, beliefs: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Plan once from each belief (S, D) and return the whole plans (S, H, A), as the planner would execute them.

    Full-space CEM starts from the centre of the action box (no previous plan to shift in); the latent planners
    decode their solution ``ẑ``.

    :raises TypeError: ``controller`` is not a planner (:class:`CEMController` or :class:`LatentDCEMController`).
    """
    if isinstance(controller, LatentDCEMController):
        return controller.plan(beliefs, generator).actions
    if isinstance(controller, CEMController):
        param = next(controller.model.parameters())
        beliefs = beliefs.to(device=param.device, dtype=param.dtype)
        centre = controller.centre_plan(beliefs.shape[0], param.device, param.dtype)
        return controller.plan(beliefs, centre, generator=generator)
    raise TypeError(f"{type(controller).__name__} does not plan: plan gaps are measured for the planners of planet "
                    f"and dcem checkpoints (cem, dcem, latent-cem)")


@torch.no_grad()
def predicted_returns(model: RSSM, beliefs: Tensor, actions: Tensor) -> Tensor:
    """The model's return of each plan (S, H, A) from its belief (S, D): ``Σ_t w_t r̂_t`` (S,), fp32, with ``w_t`` the
    continuation weights (ones without the head) — the objective the planners maximize."""
    param = next(model.parameters())
    return model.imagine(beliefs.to(param), actions.to(param)).weighted_rewards().sum(-1).float()


def open_loop_returns(env_id: str, action_repeat: int, states: Sequence[PlanState], actions: Tensor) -> np.ndarray:
    """The environment's return of each plan (S, H, A) executed open-loop from its state (S,), summed until the
    horizon or the end of the episode (termination or time limit).

    The state is rebuilt by resetting with its episode's seed and replaying its prefix of actions.
    """
    plans = actions.detach().float().cpu().numpy()
    out = np.zeros(len(states))
    env = make_env(env_id, action_repeat=action_repeat)
    try:
        for k, (state, plan) in enumerate(zip(states, plans)):
            env.reset(seed=state.seed)
            for a in state.prefix:
                env.step(a)
            for a in plan:
                _, reward, terminated, truncated, _ = env.step(a)
                out[k] += float(reward)
                if terminated or truncated:
                    break
    finally:
        env.close()
    return out


def _horizon(entry: Entry) -> int:
    controller = entry.controller
    if not isinstance(controller, (CEMController, LatentDCEMController)):
        raise EntryError(f"{entry.label} ({entry.path}:{entry.controller_name}) does not plan: plan gaps are measured "
                         f"for the planners of planet and dcem checkpoints (cem, dcem, latent-cem)")
    return controller.horizon


def measure_plan_gap(entries: Sequence[Entry], seeds: Sequence[int], n_states: int, seed: int,
                     collect: int = 0) -> dict[str, Any]:
    """Collect states with ``entries[collect]`` on ``seeds``, let every entry plan from them, and compare the model's
    predicted return of every plan with its open-loop return in the environment (see the module docstring).

    :param entries: planners of one checkpoint (one world model: the beliefs are its filter's), same horizon.
    :param seeds: reset seeds of the collecting episodes (E,).
    :param n_states: states drawn among the episodes' steps (S,).
    :param seed: seeds the draw of the states and every planner's generator (each planner from the same seed).
    :param collect: which entry runs the collecting episodes.
    :return: the summary :func:`write_plan_gap_report` writes: per entry the per-state ``predicted`` and ``real``
        returns (S,), their statistics and the over-estimate ``predicted − real``; paired differences of the real
        returns; the states (episode seed, step).
    :raises EntryError: an entry that does not plan, entries of different files or horizons.
    """
    if not entries:
        raise EntryError("no planners to measure")
    files = {str(Path(e.path).resolve()) for e in entries}
    if len(files) > 1:
        raise EntryError(f"the plan gap compares planners of ONE checkpoint (the states are beliefs of its world "
                         f"model), got {', '.join(sorted(files))}")
    horizons = {e.label: _horizon(e) for e in entries}
    if len(set(horizons.values())) > 1:
        raise EntryError(f"the planners' horizons differ ({horizons}): their returns would cover different spans")
    if not 0 <= collect < len(entries):
        raise EntryError(f"collect index {collect} is not one of the {len(entries)} entries")
    horizon = next(iter(horizons.values()))
    first = entries[collect]
    assert first.model is not None and first.env_id is not None  # planners have both (checked by _horizon)
    t0 = time.perf_counter()
    states = collect_states(first.env_id, first.action_repeat, first.model, first.controller, seeds, n_states, horizon,
                            np.random.default_rng(seed), first.generator(seed))
    beliefs = torch.stack([st.belief for st in states])
    rows = []
    for e in entries:
        assert e.model is not None
        actions = planned_actions(e.controller, beliefs, e.generator(seed))
        predicted = predicted_returns(e.model, beliefs, actions).cpu().numpy().astype(np.float64)
        real = open_loop_returns(first.env_id, first.action_repeat, states, actions)  # one file: one environment
        rows.append({"label": e.label, "checkpoint": str(e.path), "controller": e.controller_name,
                     "sequences_per_plan": e.samples_per_action, "predicted": predicted.round(4).tolist(),
                     "real": real.round(4).tolist(), "predicted_stats": summarize(predicted),
                     "real_stats": summarize(real), "over_estimate": summarize(predicted - real),
                     "correlation": float(np.corrcoef(predicted, real)[0, 1]) if predicted.std() > 0 and real.std() > 0
                     else None})
    return {"env_id": first.env_id, "action_repeat": first.action_repeat, "horizon": horizon,
            "collected_with": first.label, "episode_seeds": [int(s) for s in seeds], "states": n_states, "seed": seed,
            "state_index": [[st.seed, st.step] for st in states], "statistics": convention(),
            "wall_time_s": round(time.perf_counter() - t0, 1), "entries": rows,
            "paired_real": paired_differences([r["label"] for r in rows], [r["real"] for r in rows])}


def _table(summary: dict[str, Any]) -> str:
    """The report's Markdown."""
    h, ar = summary["horizon"], summary["action_repeat"]
    lines = [f"# Plan gap on `{summary['env_id']}`: what the model predicts against what the plan gets", "",
             f"{summary['states']} states drawn from {len(summary['episode_seeds'])} episodes of "
             f"{summary['collected_with']} "
             f"(environment seeds {summary['episode_seeds'][0]} to {summary['episode_seeds'][-1]}, draw seed "
             f"{summary['seed']}). From each, every planner plans once, afresh; its whole {h}-step plan (action repeat "
             f"{ar}) is scored by the world model (predicted) and executed open-loop in the environment from the same "
             f"state (real). Wall time {summary['wall_time_s']:.0f} s.", "",
             "| planner | sequences / plan | predicted return (mean ± std) | real open-loop return (mean ± std) | "
             "over-estimate predicted − real (95 % CI) | correlation |", "|---|---|---|---|---|---|"]
    for r in summary["entries"]:
        p, q, o = r["predicted_stats"], r["real_stats"], r["over_estimate"]
        corr = "–" if r["correlation"] is None else f"{r['correlation']:.2f}"
        lines.append(f"| {r['label']} | {r['sequences_per_plan']} | {p['mean']:.2f} ± {p['std']:.2f} | "
                     f"{q['mean']:.2f} ± {q['std']:.2f} | {o['mean']:+.2f} ({o['ci95'][0]:+.2f} to "
                     f"{o['ci95'][1]:+.2f}) | {corr} |")
    if summary["paired_real"]:
        lines += ["", "Real open-loop returns, paired state by state (95 % CI: percentile bootstrap of the mean "
                      "difference):", "", *paired_table(summary["paired_real"], "states", decimals=2)]
    return "\n".join(lines) + "\n"


def _scatter(summary: dict[str, Any], path: Path) -> None:
    """Predicted against real return per state, one panel per planner, with the line ``predicted = real``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = summary["entries"]
    values = [v for r in rows for v in r["predicted"] + r["real"]]
    lo, hi = min(values), max(values)
    fig, axes = plt.subplots(1, len(rows), figsize=(3.6 * len(rows), 3.6), squeeze=False, sharex=True, sharey=True)
    for ax, r in zip(axes[0], rows):
        ax.scatter(r["real"], r["predicted"], s=8, alpha=0.6)
        ax.plot([lo, hi], [lo, hi], color="grey", lw=1, ls="--")
        ax.set_title(r["label"], fontsize=8)
        ax.set_xlabel(f"real open-loop return ({summary['horizon']} steps)", fontsize=8)
    axes[0][0].set_ylabel("model's predicted return", fontsize=8)
    fig.suptitle(f"{summary['env_id']}: plans scored by the model and by the environment", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_plan_gap_report(summary: dict[str, Any], prefix: Path) -> dict[str, str]:
    """Write ``PREFIX.json``, ``PREFIX.md`` and ``PREFIX.png`` (scatter of predicted against real); return the paths."""
    paths = {k: v for k, v in report_paths(prefix).items() if k in ("json", "md", "png")}
    paths["json"].parent.mkdir(parents=True, exist_ok=True)
    summary = {**summary, "files": {k: str(v) for k, v in paths.items()}}
    paths["json"].write_text(json.dumps(summary, indent=2))
    paths["md"].write_text(_table(summary))
    _scatter(summary, paths["png"])
    return summary["files"]
