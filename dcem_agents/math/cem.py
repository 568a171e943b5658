"""The cross-entropy method and its differentiable variant DCEM (Amos & Yarats 2020, alg. 1, props. 1 and 3).

:func:`dcem` minimizes a batched objective ``f: (B, N, d) -> (B, N)`` with an isotropic-per-coordinate Gaussian
sampling distribution. Each iteration

1. samples ``X = μ + σ ⊙ ε`` with the reparameterization trick (clipped to the box when bounds are given),
2. evaluates ``v = f(X)`` and, with ``normalize``, standardizes ``v`` per row,
3. computes elite weights ``I = Π_Lk(-v/τ)`` with the soft top-k :func:`~dcem_agents.math.lml.lml` (eq. 5), or the
   hard top-k indicator when ``temperature`` is ``None`` or 0 (classic CEM, eq. 2),
4. refits ``μ = Σ_i I_i X_i / k`` and ``σ² = Σ_i I_i (X_i - μ)² / k`` (prop. 3), with ``σ >= min_std``,

and the final mean is returned. Every step is differentiable, so gradients flow from the output into any parameter
of the objective (the decoder and model of the later control issues).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from dcem_agents.math.lml import lml

__all__ = ["BestSample", "check_cem_sizes", "CEMIterate", "dcem", "hard_top_k"]


@dataclass(frozen=True)
class CEMIterate:
    """What :func:`dcem` hands its ``callback`` after each iteration (shapes for B rows, N samples, d dims).

    :param iteration: 0-based iteration index.
    :param samples: ``X`` (B, N, d), after clipping to the bounds.
    :param values: objective values ``f(X)`` (B, N), as returned by the objective (before normalization).
    :param weights: elite weights ``I`` (B, N), summing to ``n_elites`` per row.
    :param mean: the refitted mean ``μ_{t+1}`` (B, d).
    :param std: the refitted std ``σ_{t+1}`` (B, d), after the floor.
    """

    iteration: int
    samples: Tensor
    values: Tensor
    weights: Tensor
    mean: Tensor
    std: Tensor


class BestSample:
    """A :func:`dcem` callback that keeps, per row, the sample of lowest objective value over all iterations.

    (D)CEM returns the final mean ``μ_T``, a point the objective never evaluated; this is the best point it did. After
    the run: ``sample`` (B, d) and ``value`` (B,), both detached. Non-finite values never win over finite ones.
    """

    def __init__(self) -> None:
        self.sample: Tensor | None = None
        self.value: Tensor | None = None

    def __call__(self, it: CEMIterate) -> None:
        inf = float("inf")
        values = torch.nan_to_num(it.values.detach(), nan=inf, posinf=inf, neginf=inf)
        value, index = values.min(-1)  # (B,)
        samples = it.samples.detach()
        sample = samples.gather(1, index[:, None, None].expand(-1, 1, samples.shape[-1]))[:, 0]  # (B, d)
        if self.value is None:
            self.sample, self.value = sample, value
        else:
            better = value < self.value
            self.sample = torch.where(better[:, None], sample, self.sample)  # type: ignore[arg-type]
            self.value = torch.where(better, value, self.value)


def hard_top_k(scores: Tensor, k: int) -> Tensor:
    """Indicator of the ``k`` largest entries of each row of ``scores`` (..., n), as a float mask of the same shape.

    Ties are broken by :func:`torch.topk`. The mask carries no gradient.
    """
    idx = scores.topk(min(k, scores.shape[-1]), dim=-1).indices
    return torch.zeros_like(scores).scatter_(-1, idx, 1.0)


def _as_tensor(value: Tensor | float | None, dim: int, device: torch.device, dtype: torch.dtype) -> Tensor | None:
    """A scalar becomes ``(dim,)``; a ``(dim,)`` or ``(B, dim)`` tensor is moved to ``device``/``dtype``."""
    if value is None:
        return None
    if not torch.is_tensor(value):  # torch.full: no host-to-device copy (CUDA graph capture allows none)
        return torch.full((dim,), float(value), device=device, dtype=dtype)
    t = value.to(device=device, dtype=dtype)
    return t.expand(dim) if t.dim() == 0 else t


def _per_sample(bound: Tensor | None) -> Tensor | None:
    """Make a ``(d,)`` or ``(B, d)`` bound broadcast against samples ``(B, N, d)``."""
    return bound.unsqueeze(-2) if bound is not None and bound.dim() == 2 else bound


def _reference_tensor(*candidates: Tensor | float | None) -> Tensor | None:
    for c in candidates:
        if torch.is_tensor(c):
            return c
    return None


def check_cem_sizes(n_samples: int, n_elites: int, n_iters: int, horizon: int = 1, where: str = "cem") -> None:
    """The one validation of a (D)CEM planner's sizes, used by every settings class and planner of the package.

    :param where: the setting's name in the message (e.g. ``planner`` for a config section).
    :raises ValueError: unless ``1 <= n_elites <= n_samples``, ``n_iters >= 1`` and ``horizon >= 1``.
    """
    if not 1 <= n_elites <= n_samples or n_iters < 1 or horizon < 1:
        raise ValueError(f"{where}: need 1 <= n_elites <= n_samples, n_iters >= 1 and horizon >= 1, got "
                         f"n_elites={n_elites}, n_samples={n_samples}, n_iters={n_iters}, horizon={horizon}")


def dcem(
    objective: Callable[[Tensor], Tensor],
    dim: int,
    *,
    n_batch: int = 1,
    n_samples: int,
    n_elites: int,
    n_iters: int,
    temperature: float | None = 1.0,
    lower: Tensor | float | None = None,
    upper: Tensor | float | None = None,
    init_mean: Tensor | None = None,
    init_std: Tensor | float | None = None,
    normalize: bool = True,
    min_std: float = 1e-3,
    generator: torch.Generator | None = None,
    noise: Tensor | None = None,
    callback: Callable[[CEMIterate], None] | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    grad_iters: int | None = None,
) -> Tensor:
    """Minimize ``objective`` with (differentiable) CEM and return the final mean (alg. 1).

    :param objective: maps samples ``(n_batch, n_samples, dim)`` to costs ``(n_batch, n_samples)``; lower is better.
    :param dim: dimension ``d`` of the search space.
    :param n_batch: number of independent problems ``B`` solved in one call.
    :param n_samples: samples ``N`` per iteration.
    :param n_elites: elites ``k`` (1 <= k <= N).
    :param n_iters: iterations ``T``.
    :param temperature: soft top-k temperature ``τ > 0`` (DCEM); ``None`` or ``0`` gives hard CEM.
    :param lower: lower bound of the box, a scalar or ``(d,)`` / ``(B, d)`` tensor; samples are clipped to it.
    :param upper: upper bound, like ``lower``.
    :param init_mean: initial mean ``(d,)`` or ``(B, d)``; defaults to the box centre, or 0 without bounds.
    :param init_std: initial std, scalar, ``(d,)`` or ``(B, d)``; defaults to half the box width, or 1.
    :param normalize: standardize the values per row before the top-k, so that ``τ`` is scale-free.
    :param min_std: floor on ``σ`` so it never collapses to 0 (e.g. when all elites are clipped to a bound).
    :param generator: random generator for the sampling noise (on the device of the computation).
    :param noise: optional pre-drawn standard normal noise ``(n_iters, n_batch, n_samples, dim)`` used instead of
        sampling; makes the output a deterministic function of the objective (used to replay a plan exactly).
    :param callback: called with a :class:`CEMIterate` after every iteration.
    :param device: device when no tensor argument fixes it (default: that of ``init_mean``, the bounds, or CPU).
    :param dtype: dtype when no tensor argument fixes it (default: that of the tensor arguments, or float32).
    :param grad_iters: differentiate through the last ``grad_iters`` iterations only (None: all). The earlier ones
        run without autograd and their mean and std enter as constants: the same output, a backward pass that costs
        ``grad_iters / n_iters`` of the full one (truncated differentiation).
    :return: the final mean ``(n_batch, dim)``, differentiable with respect to the objective's parameters.
    """
    check_cem_sizes(n_samples, n_elites, n_iters, where="dcem")
    if grad_iters is not None and not 1 <= grad_iters <= n_iters:
        raise ValueError(f"dcem: grad_iters must be in [1, n_iters={n_iters}] (or None: all), got {grad_iters}")
    if temperature is not None and temperature < 0:
        raise ValueError(f"dcem: temperature must be > 0, or None/0 for hard CEM, got {temperature}")
    if min_std <= 0:
        raise ValueError(f"dcem: min_std must be > 0, got {min_std}")

    ref = _reference_tensor(init_mean, lower, upper, init_std, noise)
    device = torch.device(device) if device is not None else (ref.device if ref is not None else torch.device("cpu"))
    dtype = dtype if dtype is not None else (ref.dtype if ref is not None else torch.get_default_dtype())
    lo = _as_tensor(lower, dim, device, dtype)
    hi = _as_tensor(upper, dim, device, dtype)

    if init_mean is not None:
        mean = init_mean.to(device=device, dtype=dtype).expand(n_batch, dim)
    elif lo is not None and hi is not None:
        mean = (0.5 * (lo + hi)).expand(n_batch, dim)
    else:
        mean = torch.zeros(n_batch, dim, device=device, dtype=dtype)
    if init_std is not None:
        std = _as_tensor(init_std, dim, device, dtype).expand(n_batch, dim)
    elif lo is not None and hi is not None:
        std = (0.5 * (hi - lo)).expand(n_batch, dim)
    else:
        std = torch.ones(n_batch, dim, device=device, dtype=dtype)
    if noise is not None and noise.shape != (n_iters, n_batch, n_samples, dim):
        raise ValueError(f"dcem: noise must have shape {(n_iters, n_batch, n_samples, dim)}, got {tuple(noise.shape)}")

    hard = temperature is None or temperature == 0
    first_differentiated = 0 if grad_iters is None else n_iters - grad_iters
    grad_mode = torch.is_grad_enabled()
    lo_s, hi_s = _per_sample(lo), _per_sample(hi)
    for t in range(n_iters):
        with torch.set_grad_enabled(grad_mode and t >= first_differentiated):  # truncated: constants before
            eps = (
                noise[t].to(device=device, dtype=dtype)
                if noise is not None
                else torch.randn(n_batch, n_samples, dim, generator=generator, device=device, dtype=dtype)
            )
            samples = mean.unsqueeze(1) + std.unsqueeze(1) * eps
            if lo is not None or hi is not None:
                samples = samples.clamp(min=lo_s, max=hi_s)
            values = objective(samples)
            if values.shape != (n_batch, n_samples):
                raise ValueError(
                    f"dcem: objective must return shape (n_batch, n_samples) = {(n_batch, n_samples)}, "
                    f"got {tuple(values.shape)}"
                )
            scores = -values
            # NaN and ±inf costs count as the worst sample of their row (an infinite score would make the
            # standardization NaN for the whole row).
            bad = ~torch.isfinite(scores)
            worst = torch.where(bad, torch.full_like(scores, float("inf")), scores).amin(-1, keepdim=True)
            worst = torch.where(torch.isinf(worst), torch.zeros_like(worst), worst)  # all costs bad: all equal
            scores = torch.where(bad, worst, scores)
            if normalize:
                scores = (scores - scores.mean(-1, keepdim=True)) / (scores.std(-1, keepdim=True, correction=0) + 1e-6)
            if hard:
                weights = hard_top_k(scores.detach(), n_elites)
            else:
                weights = lml(scores, n_elites, temperature, check_finite=False)
            w = weights.unsqueeze(-1)
            mean = (w * samples).sum(1) / n_elites
            var = (w * (samples - mean.unsqueeze(1)) ** 2).sum(1) / n_elites
            std = var.clamp_min(min_std**2).sqrt()
            if callback is not None:
                callback(CEMIterate(t, samples, values, weights, mean, std))
    return mean

