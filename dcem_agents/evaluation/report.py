"""Report files of a controller comparison (``evaluate.py --entry ...``; paper fig. 4).

The statistics in them are those of :mod:`dcem_agents.evaluation.stats` (the package's one convention).
:func:`write_report` writes ``PREFIX.json`` (the summary dict as given), ``PREFIX.md`` (:func:`markdown_table`),
``PREFIX.png`` (:func:`box_plot`, the entries side by side; for a learning curve, :func:`curve_plot`) and
``PREFIX_episodes.csv`` (one row per episode).
"""

from __future__ import annotations

import csv
import json
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["box_plot", "curve_plot", "curve_points", "has_training_curves", "markdown_table", "paired_table",
           "report_paths", "study_table", "training_plot", "write_report"]


def report_paths(prefix: Path, training_curves: bool = False) -> dict[str, Path]:
    """The report files of ``prefix``: ``json``, ``md``, ``png`` and ``csv`` (``PREFIX_episodes.csv``), and with
    ``training_curves`` the entries' training curves (``PREFIX_training.png``)."""
    paths = {"json": Path(f"{prefix}.json"), "md": Path(f"{prefix}.md"), "png": Path(f"{prefix}.png"),
             "csv": Path(f"{prefix}_episodes.csv")}
    return paths | ({"training": Path(f"{prefix}_training.png")} if training_curves else {})


def has_training_curves(summary: dict[str, Any]) -> bool:
    """Whether any entry of a comparison summary records its training run's evaluations."""
    return any(e.get("training_curve") for e in summary["entries"])


def _fmt_steps(n: int | None) -> str:
    if n is None:
        return "–"
    return f"{n / 1e6:.2f} M" if n >= 1_000_000 else f"{n / 1e3:.0f} k" if n >= 10_000 else str(n)


def _fmt_ms(ms: float) -> str:
    """One decimal from 1 ms on, two significant digits below (a policy's forward pass takes a few hundredths)."""
    return f"{ms:.1f}" if ms >= 1.0 else f"{ms:.2g}"


def _fmt_runtime(runtime: dict[str, Any] | None) -> str:
    """`` (lean bf16 compiled)`` for a planner's runtime in the controller column; nothing for a policy that does
    not plan (or a report written before runtimes were recorded)."""
    if not runtime:
        return ""
    if runtime.get("rollout") == "reference":
        return " (reference)"
    return f" (lean {runtime.get('precision')}{' compiled' if runtime.get('compile') else ''})"


def _fmt_repeats(entries: list[dict[str, Any]]) -> str:
    repeats = sorted({e["action_repeat"] for e in entries})
    if len(repeats) == 1:
        return f"action repeat {repeats[0]}"
    return "action repeat " + ", ".join(f"{e['action_repeat']} for {e['label']}" for e in entries)


def paired_table(differences: list[dict[str, Any]], unit: str, decimals: int = 1) -> list[str]:
    """Markdown lines of a table of paired differences (:func:`~dcem_agents.evaluation.stats.paired_differences`):
    ``B − A``, the mean difference, its 95 % CI and the share of ``unit`` (episodes, states) where B is higher."""
    lines = [f"| B − A | mean difference | 95 % CI | {unit} where B is higher |", "|---|---|---|---|"]
    for d in differences:
        lines.append(f"| {d['b']} − {d['a']} | {d['mean']:+.{decimals}f} | {d['ci95'][0]:+.{decimals}f} to "
                     f"{d['ci95'][1]:+.{decimals}f} | {100 * d['b_higher']:.0f} % |")
    return lines


def _wall_time(summary: dict[str, Any]) -> str:
    """The run's wall time; for a run that reused episodes of an earlier one (a killed run resumed, or ``--extend``),
    this invocation's and the entries' evaluations in all (each entry's time adds up its invocations)."""
    reused = summary.get("reused_episodes", 0)
    if not reused:
        return f"wall time of the whole run {summary['wall_time_s']:.0f} s"
    return (f"wall time of this invocation {summary['wall_time_s']:.0f} s, which reused {reused} episodes evaluated "
            f"by an earlier one (killed and resumed, or extended with --extend); the entries' evaluations took "
            f"{sum(e['wall_time_s'] for e in summary['entries']):.0f} s in all")


def markdown_table(summary: dict[str, Any]) -> str:
    """The entries of a comparison summary as a markdown table, with a header line and the column meanings."""
    lines = [
        f"# Controller comparison on `{summary['env_id']}`",
        "",
        f"{summary['episodes']} episodes per entry on the same initial states (environment seeds {summary['seed']} to "
        f"{summary['seed'] + summary['episodes'] - 1}), {summary['n_envs']} environments in parallel with one batched "
        f"planning call per step, device {summary['device']}; {_wall_time(summary)}.",
        "",
        "| entry | checkpoint | controller | return mean ± std | median | IQM | 95 % CI of the mean | episodes "
        "| training env steps | samples / action | ms / action |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in summary["entries"]:
        s = e["stats"]
        lines.append(
            f"| {e['label']} | `{e['checkpoint']}` | {e['kind']}:{e['controller']}{_fmt_runtime(e.get('planner_runtime'))} "
            f"| {s['mean']:.1f} ± {s['std']:.1f} "
            f"| {s['median']:.1f} | {s['iqm']:.1f} | {s['ci95'][0]:.1f} – {s['ci95'][1]:.1f} | {e['episodes']} "
            f"| {_fmt_steps(e['train_env_steps'])} | {e['samples_per_action']} | {_fmt_ms(e['ms_per_action'])} |"
        )
    lines += [
        "",
        f"Returns are sums of environment rewards per episode ({_fmt_repeats(summary['entries'])}). IQM: "
        f"interquartile mean. 95 % CI: percentile bootstrap of the mean ({summary['bootstrap']['resamples']} "
        f"resamples, seed {summary['bootstrap']['seed']}). Samples / action: action sequences the planner evaluates "
        "per planning call and environment (samples × iterations; 0: a policy that does not plan). ms / action: the "
        "controller's wall time per action (planning, or a policy's forward pass), a batched call's time divided by "
        "the environments it acts for.",
    ]
    if summary.get("paired_differences"):
        lines += ["", "Paired differences (episode by episode on the same seeds; 95 % CI: percentile bootstrap of the mean "
                  "difference):", "", *paired_table(summary["paired_differences"], "episodes")]
    if summary.get("curve"):
        first = summary["entries"][0]["label"]
        lines += ["", f"Learning curve ({summary['curve']['x']}; the gain is the paired difference to {first}):", "",
                  "| steps | return mean | 95 % CI | gain (paired) | 95 % CI of the gain | episodes higher |",
                  "|---|---|---|---|---|---|"]
        for p in summary["curve"]["points"]:
            gain = ("–", "–", "–") if p["gain"] is None else (
                f"{p['gain']:+.1f}", f"{p['gain_ci95'][0]:+.1f} to {p['gain_ci95'][1]:+.1f}", f"{100 * p['higher']:.0f} %")
            lines.append(f"| {p['steps']} | {p['mean']:.1f} | {p['ci95'][0]:.1f} – {p['ci95'][1]:.1f} | "
                         + " | ".join(gain) + " |")
    if summary.get("study"):
        lines += ["", *study_table(summary)]
    if has_training_curves(summary):
        where = summary.get("files", {}).get("training", "PREFIX_training.png")
        lines += ["", f"Learning curves of the training runs behind the entries: `{where}`."]
    for v in summary.get("videos", []):
        lines.append(f"\nVideo of **{v['label']}** (seed {v['seed']}, return {v['return']:.1f}): `{v['path']}`")
    return "\n".join(lines) + "\n"


def box_plot(summary: dict[str, Any], path: Path) -> None:
    """Box plot of the per-episode returns of every entry side by side (points: episodes; triangle: mean)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = summary["entries"]
    data = [np.asarray(e["returns"], dtype=np.float64) for e in entries]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.9 * len(entries) + 1.5), 4.0))
    ax.boxplot(data, showmeans=True, widths=0.55, showfliers=False)
    ax.set_xticks(range(1, len(entries) + 1), ["\n".join(textwrap.wrap(e["label"], 18)) for e in entries])
    rng = np.random.default_rng(0)  # fixed jitter
    for i, d in enumerate(data, start=1):
        ax.scatter(i + rng.uniform(-0.15, 0.15, d.size), d, s=9, alpha=0.45, color="tab:blue", zorder=3)
    ax.set_ylabel("episode return")
    ax.set_title(f"{summary['env_id']}: {summary['episodes']} episodes per controller", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def _overrides(values: dict[str, Any]) -> str:
    return ", ".join(f"`{k}={json.dumps(v)}`" for k, v in values.items()) or "(the common settings only)"


def study_table(summary: dict[str, Any]) -> list[str]:
    """The markdown lines of a study's arms (``summary["study"]``): one row per arm, its overrides and paired gain."""
    st = summary["study"]
    means = {e["label"]: e["stats"]["mean"] for e in summary["entries"]}
    lines = [f"## Study `{st['name']}`: each arm against {st['against']}", "",
             f"Base preset `{st['base']}`, seed {st['seed']}, common overrides: {_overrides(st['common'])}.", "",
             "| arm | its overrides | return mean | gain (paired) | 95 % CI of the gain | episodes higher |",
             "|---|---|---|---|---|---|"]
    for arm, row in st["arms"].items():
        lo, hi = row["gain_ci95"]
        lines.append(f"| {arm} | {_overrides(row['overrides'])} | {means[arm]:.1f} | {row['gain']:+.1f} "
                     f"| {lo:+.1f} to {hi:+.1f} | {100 * row['higher']:.0f} % |")
    return lines


def curve_points(summary: dict[str, Any], steps: Sequence[int]) -> list[dict[str, Any]]:
    """The points of a learning curve: one per entry (at ``steps``), its mean and 95 % CI, and its paired difference
    to the first entry (``gain``, ``gain_ci95``, ``higher``: the share of episodes where it scored higher; None for
    the first), read from the summary's ``entries`` and ``paired_differences``."""
    entries = summary["entries"]
    pairs = {d["b"]: d for d in summary["paired_differences"] if d["a"] == entries[0]["label"]}
    points = []
    for k, (e, s) in enumerate(zip(entries, steps)):
        d = pairs.get(e["label"]) if k else None
        points.append({"steps": int(s), "label": e["label"], "mean": e["stats"]["mean"], "ci95": e["stats"]["ci95"],
                       "gain": None if d is None else d["mean"], "gain_ci95": None if d is None else d["ci95"],
                       "higher": None if d is None else d["b_higher"]})
    return points


def curve_plot(summary: dict[str, Any], path: Path) -> None:
    """A learning curve: mean return with its 95 % CI against steps (left), and the paired gain over the first point
    with its 95 % CI (right; above the zero line is a measured improvement)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = summary["curve"]["points"]
    x = np.array([p["steps"] for p in pts], dtype=np.float64)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10.0, 3.8))
    mean = np.array([p["mean"] for p in pts])
    lo, hi = np.array([p["ci95"][0] for p in pts]), np.array([p["ci95"][1] for p in pts])
    left.plot(x, mean, "o-", color="tab:blue")
    left.fill_between(x, lo, hi, color="tab:blue", alpha=0.2, label="95 % CI of the mean")
    left.set_ylabel("episode return")
    left.set_title(f"{summary['env_id']}: {summary['episodes']} episodes per point", fontsize=10)
    gains = [(p["steps"], p["gain"], *p["gain_ci95"]) for p in pts if p["gain"] is not None]
    if gains:
        g = np.array(gains, dtype=np.float64)
        right.errorbar(g[:, 0], g[:, 1], yerr=[g[:, 1] - g[:, 2], g[:, 3] - g[:, 1]], fmt="o-", capsize=4,
                       color="tab:green", label="paired gain, 95 % CI")
    right.axhline(0.0, color="black", lw=0.8)
    right.set_xlim(left.get_xlim())  # the same step axis as the curve, the start included
    right.set_ylabel(f"return − {pts[0]['label']} (same episodes)")
    right.set_title("paired gain over the start", fontsize=10)
    for ax in (left, right):
        ax.set_xlabel(summary["curve"]["x"])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def training_plot(summary: dict[str, Any], path: Path) -> None:
    """The training runs behind the entries: evaluation return against environment steps, one line per file that
    records its evaluations (entries of the same file share it; phase 2 continues phase 1's step count)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.0, 4.0))
    seen: set[str] = set()
    for i, e in enumerate(summary["entries"]):
        if not e.get("training_curve") or e["checkpoint"] in seen:
            continue
        seen.add(e["checkpoint"])
        pts = np.asarray(e["training_curve"], dtype=np.float64)
        ax.plot(pts[:, 0], pts[:, 1], "o-", markersize=3, color=f"C{i}", label=e["label"])
    ax.set_xlabel("environment steps (all phases)")
    ax.set_ylabel("evaluation return (training run)")
    ax.set_title(f"{summary['env_id']}: learning curves of the runs behind the entries", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def write_report(summary: dict[str, Any], prefix: Path) -> dict[str, Path]:
    """Write ``PREFIX.json``, ``PREFIX.md``, ``PREFIX.png`` and ``PREFIX_episodes.csv``; return their paths."""
    paths = report_paths(prefix, has_training_curves(summary))
    paths["json"].parent.mkdir(parents=True, exist_ok=True)
    paths["json"].write_text(json.dumps(summary, indent=2))
    paths["md"].write_text(markdown_table(summary))
    (curve_plot if summary.get("curve") else box_plot)(summary, paths["png"])
    if "training" in paths:
        training_plot(summary, paths["training"])
    with paths["csv"].open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["entry", "checkpoint", "controller", "episode", "env_seed", "return", "agent_steps"])
        for e in summary["entries"]:
            for i, (ret, steps) in enumerate(zip(e["returns"], e["agent_steps"])):
                writer.writerow([e["label"], e["checkpoint"], e["controller"], i, summary["seed"] + i, ret, steps])
    return paths
