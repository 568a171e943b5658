"""The one statistics convention of the package: every return summary, confidence interval and paired comparison.

- **std**: the sample standard deviation (``ddof=1``; 0 for a single value).
- **95 % CI of a mean**: percentile bootstrap (:func:`bootstrap_ci`: 10,000 resamples, a fixed-seed numpy generator,
  so an interval is a deterministic function of the sample).
- **IQM**: the interquartile mean (rliable's 25 %-trimmed mean, :func:`interquartile_mean`).
- **paired differences**: episodes that start from the same environment seed are compared episode by episode
  (:func:`paired_differences`, a bootstrap of the mean difference).

:func:`summarize` is what every results file of the package reports for a sample of episode returns.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["BOOTSTRAP_RESAMPLES", "BOOTSTRAP_SEED", "bootstrap_ci", "convention", "interquartile_mean",
           "paired_differences", "summarize"]

#: resamples of every bootstrap interval, and the seed of its generator
BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED = 10_000, 0


def convention() -> dict[str, Any]:
    """The statistics convention, as stored in results files next to the numbers it produced."""
    return {"std_ddof": 1, "ci": {"method": "percentile bootstrap of the mean", "level": 0.95,
                                  "resamples": BOOTSTRAP_RESAMPLES, "seed": BOOTSTRAP_SEED}}


def interquartile_mean(x: Sequence[float]) -> float:
    """Mean of the middle half of ``x``: ``⌊n/4⌋`` values cut at each end of the sorted values.

    The same as ``scipy.stats.trim_mean(x, 0.25)`` and rliable's IQM.
    """
    v = np.sort(np.asarray(x, dtype=np.float64))
    if v.size == 0:
        raise ValueError("interquartile_mean of an empty sequence")
    k = int(0.25 * v.size)
    return float(v[k : v.size - k].mean())


def bootstrap_ci(x: Sequence[float], *, level: float = 0.95, n_resamples: int = BOOTSTRAP_RESAMPLES,
                 seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
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


def summarize(returns: Sequence[float], *, n_resamples: int = BOOTSTRAP_RESAMPLES,
              seed: int = BOOTSTRAP_SEED) -> dict[str, Any]:
    """``mean``, ``std`` (ddof 1; 0 for one value), ``median``, ``iqm``, ``ci95`` (bootstrap), ``min``, ``max``."""
    v = np.asarray(returns, dtype=np.float64)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0, "median": float(np.median(v)),
            "iqm": interquartile_mean(v), "ci95": list(bootstrap_ci(v, n_resamples=n_resamples, seed=seed)),
            "min": float(v.min()), "max": float(v.max())}


def paired_differences(labels: Sequence[str], returns: Sequence[Sequence[float]], *,
                       n_resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> list[dict[str, Any]]:
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
