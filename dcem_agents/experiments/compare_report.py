"""Statistics and report files of a controller comparison (``evaluate.py --entry ...``; paper fig. 4).

Statistics of one entry's per-episode returns (:func:`summarize`): mean, sample std, median, interquartile mean
(:func:`interquartile_mean`, the 25 %-trimmed mean of rliable) and a percentile-bootstrap 95 % confidence interval of
the mean (:func:`bootstrap_ci`, a fixed-seed numpy generator, 10,000 resamples by default). Entries run on the same
environment seeds, so :func:`paired_differences` compares every pair episode by episode (a paired bootstrap).

:func:`write_report` writes ``PREFIX.json`` (the summary dict as given), ``PREFIX.md`` (:func:`markdown_table`),
``PREFIX.png`` (:func:`box_plot`, the entries side by side) and ``PREFIX_episodes.csv`` (one row per episode).
"""

from __future__ import annotations

import csv
import json
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["bootstrap_ci", "box_plot", "interquartile_mean", "markdown_table", "paired_differences", "report_paths",
           "summarize", "write_report"]


def interquartile_mean(x: Sequence[float]) -> float:
    """Mean of the middle half of ``x``: ``⌊n/4⌋`` values cut at each end of the sorted values.

    The same as ``scipy.stats.trim_mean(x, 0.25)`` and rliable's IQM.
    """
    v = np.sort(np.asarray(x, dtype=np.float64))
    if v.size == 0:
        raise ValueError("interquartile_mean of an empty sequence")
    k = int(0.25 * v.size)
    return float(v[k : v.size - k].mean())


def bootstrap_ci(x: Sequence[float], *, level: float = 0.95, n_resamples: int = 10_000,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the mean of ``x``.

    :param x: the sample (n,).
    :param level: coverage of the interval.
    :param n_resamples: bootstrap resamples of size n, drawn with replacement.
    :param seed: seed of the numpy generator (the interval is a deterministic function of ``x`` and ``seed``).
    :return: ``(low, high)``; ``(x_0, x_0)`` for a single value.
    """
    v = np.asarray(x, dtype=np.float64)
    if v.size == 0 or not 0 < level < 1 or n_resamples < 1:
        raise ValueError(f"bootstrap_ci needs a non-empty sample, 0 < level < 1 and n_resamples >= 1, got n={v.size}, "
                         f"level={level}, n_resamples={n_resamples}")
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples)
    chunk = max(1, 2_000_000 // v.size)  # bounded memory for long samples
    for i in range(0, n_resamples, chunk):
        m = min(chunk, n_resamples - i)
        means[i : i + m] = v[rng.integers(0, v.size, size=(m, v.size))].mean(1)
    alpha = 0.5 * (1.0 - level)
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(low), float(high)


def summarize(returns: Sequence[float], *, n_resamples: int = 10_000, seed: int = 0) -> dict[str, Any]:
    """``mean``, ``std`` (ddof 1; 0 for one value), ``median``, ``iqm``, ``ci95`` (bootstrap), ``min``, ``max``."""
    v = np.asarray(returns, dtype=np.float64)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0, "median": float(np.median(v)),
            "iqm": interquartile_mean(v), "ci95": list(bootstrap_ci(v, n_resamples=n_resamples, seed=seed)),
            "min": float(v.min()), "max": float(v.max())}


def paired_differences(labels: Sequence[str], returns: Sequence[Sequence[float]], *, n_resamples: int = 10_000,
                       seed: int = 0) -> list[dict[str, Any]]:
    """Episode-by-episode differences ``B − A`` for every pair of entries ``A`` before ``B``.

    Episode ``i`` of every entry starts from the same environment seed, so the difference of two entries is estimated
    from the per-episode differences ``d_i = R_B,i − R_A,i``: their mean, a percentile-bootstrap 95 % interval of that
    mean (:func:`bootstrap_ci` on ``d``) and the fraction of episodes in which ``B`` scored higher.

    :param labels: the entries' labels (E,).
    :param returns: the entries' per-episode returns (E, n), episode ``i`` on the same seed in every entry.
    :return: one dict per pair ``(a, b, mean, ci95, b_higher)``, in the order (0, 1), (0, 2), ..., (1, 2), ...
    """
    r = [np.asarray(x, dtype=np.float64) for x in returns]
    if len(labels) != len(r) or len({x.size for x in r}) > 1:
        raise ValueError(f"paired_differences needs one label per entry and the same episodes in every entry, got "
                         f"{len(labels)} labels and episode counts {[x.size for x in r]}")
    out = []
    for i in range(len(r)):
        for j in range(i + 1, len(r)):
            d = r[j] - r[i]
            out.append({"a": labels[i], "b": labels[j], "mean": float(d.mean()),
                        "ci95": list(bootstrap_ci(d, n_resamples=n_resamples, seed=seed)),
                        "b_higher": float((d > 0).mean())})
    return out


def report_paths(prefix: Path) -> dict[str, Path]:
    """The report files of ``prefix``: ``json``, ``md``, ``png`` and ``csv`` (``PREFIX_episodes.csv``)."""
    return {"json": Path(f"{prefix}.json"), "md": Path(f"{prefix}.md"), "png": Path(f"{prefix}.png"),
            "csv": Path(f"{prefix}_episodes.csv")}


def _fmt_steps(n: int | None) -> str:
    if n is None:
        return "–"
    return f"{n / 1e6:.2f} M" if n >= 1_000_000 else f"{n / 1e3:.0f} k" if n >= 10_000 else str(n)


def _fmt_ms(ms: float) -> str:
    """One decimal from 1 ms on, two significant digits below (a policy's forward pass takes a few hundredths)."""
    return f"{ms:.1f}" if ms >= 1.0 else f"{ms:.2g}"


def markdown_table(summary: dict[str, Any]) -> str:
    """The entries of a comparison summary as a markdown table, with a header line and the column meanings."""
    e0 = summary["entries"][0]
    lines = [
        f"# Controller comparison on `{summary['env_id']}`",
        "",
        f"{summary['episodes']} episodes per entry on the same initial states (environment seeds {summary['seed']} to "
        f"{summary['seed'] + summary['episodes'] - 1}), {summary['n_envs']} environments in parallel with one batched "
        f"planning call per step, device {summary['device']}; wall time of the whole run "
        f"{summary['wall_time_s']:.0f} s.",
        "",
        "| entry | checkpoint | controller | return mean ± std | median | IQM | 95 % CI of the mean | episodes "
        "| training env steps | samples / action | ms / action |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in summary["entries"]:
        s = e["stats"]
        lines.append(
            f"| {e['label']} | `{e['checkpoint']}` | {e['kind']}:{e['controller']} | {s['mean']:.1f} ± {s['std']:.1f} "
            f"| {s['median']:.1f} | {s['iqm']:.1f} | {s['ci95'][0]:.1f} – {s['ci95'][1]:.1f} | {e['episodes']} "
            f"| {_fmt_steps(e['train_env_steps'])} | {e['samples_per_action']} | {_fmt_ms(e['ms_per_action'])} |"
        )
    lines += [
        "",
        f"Returns are sums of environment rewards per episode (action repeat {e0['action_repeat']}). IQM: "
        f"interquartile mean. 95 % CI: percentile bootstrap of the mean ({summary['bootstrap']['resamples']} "
        f"resamples, seed {summary['bootstrap']['seed']}). Samples / action: action sequences the planner evaluates "
        "per planning call and environment (samples × iterations; 0: a policy that does not plan). ms / action: the "
        "controller's wall time per action (planning, or a policy's forward pass), a batched call's time divided by "
        "the environments it acts for.",
    ]
    if summary.get("paired_differences"):
        lines += ["", "Paired differences (episode by episode on the same seeds; 95 % CI: percentile bootstrap of the mean "
                  "difference):", "", "| B − A | mean difference | 95 % CI | episodes where B is higher |",
                  "|---|---|---|---|"]
        for d in summary["paired_differences"]:
            lines.append(f"| {d['b']} − {d['a']} | {d['mean']:+.1f} | {d['ci95'][0]:+.1f} to {d['ci95'][1]:+.1f} "
                         f"| {100 * d['b_higher']:.0f} % |")
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


def write_report(summary: dict[str, Any], prefix: Path) -> dict[str, Path]:
    """Write ``PREFIX.json``, ``PREFIX.md``, ``PREFIX.png`` and ``PREFIX_episodes.csv``; return their paths."""
    paths = report_paths(prefix)
    paths["json"].parent.mkdir(parents=True, exist_ok=True)
    paths["json"].write_text(json.dumps(summary, indent=2))
    paths["md"].write_text(markdown_table(summary))
    box_plot(summary, paths["png"])
    with paths["csv"].open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["entry", "checkpoint", "controller", "episode", "env_seed", "return", "agent_steps"])
        for e in summary["entries"]:
            for i, (ret, steps) in enumerate(zip(e["returns"], e["agent_steps"])):
                writer.writerow([e["label"], e["checkpoint"], e["controller"], i, summary["seed"] + i, ret, steps])
    return paths
