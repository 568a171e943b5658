"""Aggregates over the seeds of sweeps (``evaluate.py --sweep``), after Agarwal et al., "Deep RL at the Edge of the
Statistical Precipice" (NeurIPS 2021), with their library ``rliable``.

For each sweep folder (:mod:`dcem_agents.training.sweep`):

- the **learning curve**: at each evaluation step the mean over seeds of the evaluation return, with a 95 % CI band
  across seeds (:func:`~dcem_agents.evaluation.stats.bootstrap_ci`, the package's one CI of a mean); a seed whose run
  stopped early holds its last evaluation;
- the **final return** of each seed (the mean of its final evaluation's episodes), aggregated into IQM, mean, median and
  optimality gap, each with a stratified bootstrap 95 % CI (rliable: percentile, 10,000 resamples, seed 0);
- between two sweeps, the **probability of improvement** P(X > Y) with its CI (rliable).

Per-seed numbers come from each run folder's ``summary.json`` (planet, dcem, ppo and baseline runs).
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from dcem_agents.evaluation.stats import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, bootstrap_ci, convention

__all__ = ["SeedResult", "SweepResult", "aggregate_sweeps", "read_sweep", "write_seeds_report"]

#: the experiments whose run folders record learning curves and final returns
AGGREGATED_EXPERIMENTS = ("planet", "dcem", "ppo", "baseline")


@dataclasses.dataclass(frozen=True)
class SeedResult:
    """One seed's run: its evaluation curve ``[(env_steps, mean return)]`` and its final evaluation's returns."""

    seed: int
    curve: list[tuple[int, float]]
    final_returns: list[float]

    @property
    def final(self) -> float:
        """The seed's score: the mean return of its final evaluation."""
        return float(np.mean(self.final_returns))


@dataclasses.dataclass(frozen=True)
class SweepResult:
    """The finished seeds of one sweep folder, and the seeds that have no results yet."""

    path: Path
    experiment: str
    name: str
    env_id: str | None
    seeds: list[SeedResult]
    unfinished: list[int]

    @property
    def label(self) -> str:
        return f"{self.experiment}/{self.name}"


def _seed_result(experiment: str, seed: int, summary: dict[str, Any]) -> SeedResult:
    if experiment in ("planet", "dcem"):
        curve = [(int(p["env_steps"]), float(p["return_mean"])) for p in summary.get("learning_curve", [])]
        final = summary.get("eval_returns") or ([curve[-1][1]] if curve else [])
    elif experiment == "baseline":
        curve = [(int(s), float(r)) for s, r in summary.get("evaluations", [])]
        final = summary.get("final_eval", {}).get("returns") or ([curve[-1][1]] if curve else [])
    else:  # ppo: before and after fine-tuning, on the same episodes
        steps = int(summary.get("ppo_timesteps", 0))
        curve = [(s, float(np.mean(summary[k]["returns"]))) for s, k in ((0, "before"), (steps, "after"))
                 if summary.get(k, {}).get("returns")]
        final = summary.get("after", {}).get("returns", [])
    if not final:
        raise ValueError(f"seed {seed}: its summary.json has no evaluation (was evaluation switched off?)")
    return SeedResult(seed, curve, [float(r) for r in final])


def read_sweep(sweep_dir: str | Path) -> SweepResult:
    """Read the seeds of a sweep folder; seeds whose run has not written its summary are listed as unfinished.

    :raises FileNotFoundError: not a sweep folder. :raises ValueError: an experiment without learning curves.
    """
    from dcem_agents.training.sweep import SweepState, seed_dir

    sweep_dir = Path(sweep_dir)
    state = SweepState.load(sweep_dir)
    if state.experiment not in AGGREGATED_EXPERIMENTS:
        raise ValueError(f"{sweep_dir}: seeds of a {state.experiment!r} sweep are not aggregated (only "
                         f"{', '.join(AGGREGATED_EXPERIMENTS)})")
    results, unfinished = [], []
    for seed in state.seeds:
        run = seed_dir(sweep_dir, seed)
        if state.states.get(seed, {}).get("state") != "finished" or not (run / "summary.json").is_file():
            unfinished.append(seed)
            continue
        results.append(_seed_result(state.experiment, seed, json.loads((run / "summary.json").read_text())))
    env_id = state.config.get("env_id")
    if env_id is None and (config := sweep_dir / "config.yaml").is_file():
        env_id = (yaml.safe_load(config.read_text()) or {}).get("env_id")
    return SweepResult(sweep_dir, state.experiment, state.name, env_id, results, unfinished)


def learning_curve(seeds: Sequence[SeedResult]) -> list[dict[str, Any]]:
    """Mean over seeds, with a bootstrap 95 % CI across seeds, at every evaluation step of any seed.

    A seed evaluated at other steps (episodes that end early move its evaluations) contributes its curve linearly
    interpolated between its evaluations. A seed whose run ended before the others' (it reached ``stop_return``, or
    it had fewer steps) holds its last evaluation from then on: that agent is what its run delivers, and without it
    the late points would average only the seeds that had not yet succeeded. ``n`` says how many seeds each point
    averages (those evaluated by then), ``held`` how many of them hold their last evaluation.
    """
    steps = sorted({s for r in seeds for s, _ in r.curve})
    points = []
    for step in steps:
        values = [float(np.interp(step, *zip(*r.curve))) for r in seeds if r.curve and r.curve[0][0] <= step]
        held = sum(1 for r in seeds if r.curve and r.curve[-1][0] < step)
        low, high = bootstrap_ci(values)
        points.append({"env_steps": step, "mean": float(np.mean(values)), "ci95": [low, high], "n": len(values),
                       "held": held})
    return points


def _rliable() -> tuple[Any, Any]:
    try:
        from rliable import library, metrics
    except ImportError as e:
        raise ImportError("aggregates across seeds need rliable: pip install -e \".[ray]\"") from e
    return library, metrics


def _interval_estimates(library: Any, scores: dict[str, Any], function: Any) -> tuple[Any, Any]:
    """rliable's stratified bootstrap with the package's resamples and seed.

    rliable 1.2's ``StratifiedBootstrap`` draws its resamples with the global ``np.random.choice``, whatever
    ``random_state`` it is given, so the same seeds gave different CIs in two processes. The global generator is seeded
    with :data:`BOOTSTRAP_SEED` for the call and put back as it was afterwards. (arch's note that ``random_state`` is
    deprecated is silenced.)"""
    saved = np.random.get_state()
    np.random.seed(BOOTSTRAP_SEED)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="random_state is deprecated", category=FutureWarning)
            return library.get_interval_estimates(scores, function, reps=BOOTSTRAP_RESAMPLES,
                                                  random_state=np.random.RandomState(BOOTSTRAP_SEED))
    finally:
        np.random.set_state(saved)


def final_aggregates(finals: Sequence[float], max_return: float | None) -> dict[str, Any]:
    """IQM, mean, median and (with ``max_return``) optimality gap of the seeds' final returns ``(n_seeds,)``, each
    ``{"value", "ci95"}`` from rliable's stratified bootstrap (one task: a bootstrap over seeds)."""
    library, metrics = _rliable()
    scores = np.asarray(finals, dtype=np.float64).reshape(-1, 1)  # (runs, tasks)
    functions = {"iqm": metrics.aggregate_iqm, "mean": metrics.aggregate_mean, "median": metrics.aggregate_median}
    if max_return is not None:
        functions["optimality_gap"] = lambda x: metrics.aggregate_optimality_gap(x, gamma=max_return)
    out = {}
    for key, function in functions.items():
        point, interval = _interval_estimates(library, {"x": scores}, lambda x, f=function: np.array([f(x)]))
        out[key] = {"value": float(point["x"][0]), "ci95": [float(interval["x"][0, 0]), float(interval["x"][1, 0])]}
    return out


def probability_of_improvement(x: Sequence[float], y: Sequence[float]) -> dict[str, Any]:
    """P(a seed of X scores above a seed of Y) (ties count half), with rliable's stratified bootstrap 95 % CI."""
    library, metrics = _rliable()
    pair = (np.asarray(x, dtype=np.float64).reshape(-1, 1), np.asarray(y, dtype=np.float64).reshape(-1, 1))
    point, interval = _interval_estimates(library, {"xy": pair},
                                          lambda a, b: np.array([metrics.probability_of_improvement(a, b)]))
    return {"value": float(point["xy"][0]), "ci95": [float(interval["xy"][0, 0]), float(interval["xy"][1, 0])]}


def _default_max_return(env_id: str | None) -> float | None:
    """1000 for DeepMind Control (rewards in [0, 1] over 1,000 steps); unknown elsewhere."""
    return 1000.0 if env_id is not None and env_id.startswith("dm_control/") else None


def aggregate_sweeps(sweeps: Sequence[SweepResult], *, max_return: float | None = None,
                     threshold: float | None = None) -> dict[str, Any]:
    """The report of ``evaluate.py --sweep``: per sweep its seeds, curve and aggregates; pairwise P(improvement).

    :param max_return: the best possible return, for the optimality gap (default: 1000 on DeepMind Control, else none).
    :param threshold: also report the share of seeds whose final return reaches it, and the median environment steps
        at which their evaluation curve first reached it.
    """
    report: dict[str, Any] = {"sweeps": [], "pairs": [], "convention": {
        **convention(), "across_seeds": {"final_return": "mean of the seed's final evaluation episodes",
                                         "aggregates": "rliable stratified bootstrap, percentile, 95 %",
                                         "resamples": BOOTSTRAP_RESAMPLES, "seed": BOOTSTRAP_SEED}}}
    for sweep in sweeps:
        if not sweep.seeds:
            raise ValueError(f"{sweep.path}: no seed has finished yet")
        gamma = max_return if max_return is not None else _default_max_return(sweep.env_id)
        finals = [r.final for r in sweep.seeds]
        entry: dict[str, Any] = {
            "label": sweep.label, "path": str(sweep.path), "experiment": sweep.experiment, "env_id": sweep.env_id,
            "seeds": [r.seed for r in sweep.seeds], "unfinished_seeds": sweep.unfinished, "final_returns": finals,
            "max_return": gamma, "aggregates": final_aggregates(finals, gamma),
            "learning_curve": learning_curve(sweep.seeds),
            "curves": {str(r.seed): [[s, v] for s, v in r.curve] for r in sweep.seeds},
        }
        if threshold is not None:
            reached = [next((s for s, v in r.curve if v >= threshold), None) for r in sweep.seeds]
            hit = [s for s in reached if s is not None]
            entry["threshold"] = {"return": threshold,
                                  "share_of_seeds_final": float(np.mean([f >= threshold for f in finals])),
                                  "share_of_seeds_ever": len(hit) / len(reached),
                                  "median_env_steps_to_reach": float(np.median(hit)) if hit else None}
        report["sweeps"].append(entry)
    entries = report["sweeps"]
    labels = [e["label"] for e in entries]
    for e, sweep in zip(entries, sweeps):
        if labels.count(e["label"]) > 1:  # two sweeps of one preset: name them by folder
            e["label"] = sweep.path.name
    seen: dict[str, int] = {}
    for e in entries:  # the same folder twice: number them
        seen[e["label"]] = seen.get(e["label"], 0) + 1
        if seen[e["label"]] > 1:
            e["label"] = f"{e['label']} ({seen[e['label']]})"
    for i, a in enumerate(entries):
        for b in entries[i + 1:]:
            report["pairs"].append({"x": a["label"], "y": b["label"],
                                    "probability_of_improvement": probability_of_improvement(a["final_returns"],
                                                                                             b["final_returns"])})
    return report


def _markdown(report: dict[str, Any]) -> str:
    def ci(d: dict[str, Any]) -> str:
        return f"{d['value']:.1f} [{d['ci95'][0]:.1f}, {d['ci95'][1]:.1f}]"

    lines = ["# Across seeds: " + ", ".join(f"{e['label']} ({len(e['seeds'])} seeds)" for e in report["sweeps"]), "",
             "| sweep | seeds | IQM | mean | median | optimality gap |", "|---|---|---|---|---|---|"]
    for e in report["sweeps"]:
        a = e["aggregates"]
        gap = ci(a["optimality_gap"]) if "optimality_gap" in a else "n/a"
        lines.append(f"| {e['label']} | {len(e['seeds'])} | {ci(a['iqm'])} | {ci(a['mean'])} | {ci(a['median'])} "
                     f"| {gap} |")
    lines += ["", "Median: rliable's, the median over tasks of each task's mean over seeds; with one task it is the "
              "mean. The seeds' own final returns: " + "; ".join(
                  f"{e['label']}: " + ", ".join(f"{v:.1f}" for v in e["final_returns"]) for e in report["sweeps"]) + "."]
    if any("threshold" in e for e in report["sweeps"]):
        lines += ["", "| sweep | return reached | seeds at the end | seeds ever | median env steps to reach |",
                  "|---|---|---|---|---|"]
        for e in report["sweeps"]:
            t = e.get("threshold")
            if t:
                steps = "never" if t["median_env_steps_to_reach"] is None else f"{t['median_env_steps_to_reach']:,.0f}"
                lines.append(f"| {e['label']} | {t['return']:g} | {t['share_of_seeds_final']:.0%} | "
                             f"{t['share_of_seeds_ever']:.0%} | {steps} |")
    if report["pairs"]:
        lines += ["", "| X | Y | P(X > Y) [95 % CI] |", "|---|---|---|"]
        for p in report["pairs"]:
            pi = p["probability_of_improvement"]
            lines.append(f"| {p['x']} | {p['y']} | {pi['value']:.2f} [{pi['ci95'][0]:.2f}, {pi['ci95'][1]:.2f}] |")
    for e in report["sweeps"]:
        lines += ["", f"Learning curve of {e['label']} (evaluation return, mean over seeds):", "",
                  "| env steps | mean | 95 % CI | seeds | of which hold their last evaluation |", "|---|---|---|---|---|"]
        lines += [f"| {p['env_steps']:,} | {p['mean']:.1f} | {p['ci95'][0]:.1f} – {p['ci95'][1]:.1f} | {p['n']} "
                  f"| {p.get('held', 0)} |" for p in e["learning_curve"]]
    lines += ["", "Final return: each seed's final-evaluation mean. Aggregates and P(X > Y): rliable's stratified "
              "bootstrap, 95 % percentile CIs; curve bands: bootstrap across seeds; a seed whose run ended before a curve point "
              "(stop_return reached, or its last episode ended earlier) holds its last evaluation."]
    return "\n".join(lines) + "\n"


def _figure(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (curves, bars) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, 2]})
    for i, e in enumerate(report["sweeps"]):
        pts = e["learning_curve"]
        x = [p["env_steps"] for p in pts]
        curves.plot(x, [p["mean"] for p in pts], color=f"C{i}", marker="o", markersize=3,
                    label=f"{e['label']} ({len(e['seeds'])} seeds)")
        curves.fill_between(x, [p["ci95"][0] for p in pts], [p["ci95"][1] for p in pts], color=f"C{i}", alpha=0.25)
        for j, metric in enumerate(("iqm", "mean", "median")):
            a = e["aggregates"][metric]
            y = j + 0.25 * i - 0.125 * (len(report["sweeps"]) - 1)
            bars.errorbar(a["value"], y, xerr=[[a["value"] - a["ci95"][0]], [a["ci95"][1] - a["value"]]], fmt="o",
                          color=f"C{i}", capsize=3)
    curves.set_xlabel("environment steps")
    curves.set_ylabel("evaluation return")
    curves.set_title("mean over seeds, 95 % CI band (a stopped seed holds its last evaluation)", fontsize=10)
    curves.legend(fontsize=8)
    bars.set_yticks(range(3), ["IQM", "mean", "median"])
    bars.set_xlabel("final return (95 % CI, stratified bootstrap)")
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def write_seeds_report(report: dict[str, Any], prefix: str | Path) -> dict[str, Path]:
    """Write ``PREFIX.json``, ``PREFIX.md`` (tables) and ``PREFIX.png`` (curves and aggregates); return the paths."""
    prefix = Path(prefix)
    paths = {ext: prefix.with_name(prefix.name + f".{ext}") for ext in ("json", "md", "png")}
    prefix.parent.mkdir(parents=True, exist_ok=True)
    paths["json"].write_text(json.dumps(report, indent=2))
    paths["md"].write_text(_markdown(report))
    _figure(report, paths["png"])
    return paths
