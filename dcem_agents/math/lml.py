"""The temperature-scaled limited multi-label projection (LML), a soft and differentiable top-k.

Paper: Amos & Yarats (2020), eq. (3)-(4), prop. 2; the layer itself is from Amos, Rodríguez & Koltun (2019).

For a row ``x`` of ``n`` scores, ``lml(x, k, τ)`` solves

    y* = argmin_{0 < y < 1}  -xᵀy - τ H_b(y)   s.t.  1ᵀy = k,                                  (eq. 4)

whose KKT conditions give ``y = σ((x + ν) / τ)`` with one scalar dual variable ``ν`` per row, chosen so that the
entries sum to ``k``. ``ν`` is found by a vectorized bracketing search (bisection on the univariate dual with a
fixed iteration budget, multi-point for small inputs, then safeguarded Newton steps), so the forward pass never synchronizes with the host.

The backward pass differentiates the optimality conditions implicitly, in closed form and O(n). With
``h = y (1 - y)`` and incoming gradient ``g``:

    dν = ⟨h, g⟩ / Σh,        dx = h ⊙ (g - dν) / τ.

As ``τ → 0`` the output approaches the hard top-k indicator of ``x`` for distinct entries (prop. 2).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["LML", "lml"]

# Bits of bracket reduction, then Newton steps (quadratic convergence, clamped into the bracket) that polish the
# last digits. The bracket width is at most (x_(k) - x_(k+1)) + τ log(k (n - k)); the bisection takes it to about the
# dtype's own resolution of ν (24 bits for float32, 53 for float64, plus 7 bits of margin for a 100-wide bracket), so
# that the Newton steps start where they converge. Fewer bits for float32 are fewer kernels per call, which is what a
# planning call on a GPU pays for.
_BISECTION_BITS = {torch.float64: 60, torch.float32: 32, torch.bfloat16: 16, torch.float16: 20}
_NEWTON_STEPS = 3
_MAX_FAN = 256  # most points per bracketing step
# a step evaluates at most this many sigmoids when fan > 2: a CPU pays for each, a GPU for each kernel launch
_FAN_ELEMENTS = {"cpu": 2**16, "cuda": 2**22}


def _check_args(x: Tensor, k: float, temperature: float, check_finite: bool) -> int:
    """Validate the arguments of :func:`lml` and return ``k`` as an ``int``."""
    if isinstance(k, bool) or not isinstance(k, (int, float)) or isinstance(k, float) and not k.is_integer():
        raise ValueError(f"lml: k must be a whole number of elements to select, got k={k!r}")
    if k < 1:
        raise ValueError(f"lml: k must be at least 1, got k={k!r}")
    if not isinstance(temperature, (int, float)) or not temperature > 0 or math.isinf(temperature):
        raise ValueError(f"lml: temperature must be a finite number > 0, got temperature={temperature!r}")
    if x.dim() < 1 or x.shape[-1] < 1:
        raise ValueError(f"lml: x must have shape (..., n) with n >= 1, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"lml: x must be a floating-point tensor, got dtype {x.dtype}")
    if check_finite and bool(torch.isnan(x).any()):
        raise ValueError("lml: x contains NaN; the projection is undefined for NaN scores")
    return int(k)


def _solve_dual(x: Tensor, k: int, temperature: float) -> tuple[Tensor, Tensor]:
    """Find ν of shape (B, 1) with ``Σ_i σ((x_i + ν)/τ) = k`` for each row of ``x`` (B, n), where 1 <= k < n.

    The search runs on ``x' = x - x_(k)`` (x_(k) the k-th largest entry of the row) so that the entries near the
    threshold keep full precision even when ``|x|`` is large. Returns ``(x', ν')`` with ν' relative to that shift:
    the solution is ``σ((x' + ν')/τ)``.

    Bracket (both ends proven by counting): at ``ν_lo = -τ log(n - k)`` at most k - 1 entries are above 1/2 and the
    other n - k + 1 are at most 1/(n - k + 1), so Σy <= k; at ``ν_hi = (x_(k) - x_(k+1)) + τ log k`` the top k + 1
    entries are at least k/(k + 1), so Σy >= k.
    """
    n = x.shape[-1]
    tau = temperature
    x_k = torch.kthvalue(x, n - k + 1, dim=-1, keepdim=True).values  # k-th largest
    x_k1 = torch.kthvalue(x, n - k, dim=-1, keepdim=True).values  # (k+1)-th largest
    lo = torch.full_like(x_k, -tau * math.log(n - k))
    hi = (x_k - x_k1) + tau * math.log(k)
    shifted = x - x_k
    # Multi-point bracketing: each step evaluates the dual at `fan - 1` interior points and keeps the sub-interval
    # that brackets the root, gaining log2(fan) bits per step. Small problems (the planner's rows of ~100 samples) are
    # bound by per-operation overhead, so they use up to 256-way steps (4 steps instead of 32 for float32); large ones
    # stay at plain bisection (fan 2), which does the least arithmetic. A GPU affords far wider steps than a CPU.
    fan = 2
    budget = _FAN_ELEMENTS.get(x.device.type, _FAN_ELEMENTS["cpu"])
    while fan < _MAX_FAN and 2 * fan * x.numel() <= budget:
        fan *= 2
    steps = math.ceil(_BISECTION_BITS.get(x.dtype, 60) / math.log2(fan))
    grid = torch.arange(1, fan, device=x.device, dtype=x.dtype) / fan  # (fan - 1,)
    for _ in range(steps):
        points = torch.lerp(lo, hi, grid)  # (B, fan - 1), increasing
        totals = torch.sigmoid((shifted.unsqueeze(1) + points.unsqueeze(-1)) / tau).sum(-1)  # (B, fan - 1)
        idx = (totals < k).sum(-1, keepdim=True)  # Σy increases with ν: the root lies after `idx` points
        ends = torch.cat([lo, points, hi], -1)  # (B, fan + 1)
        lo, hi = ends.gather(-1, idx), ends.gather(-1, idx + 1)
    nu = 0.5 * (lo + hi)
    for _ in range(_NEWTON_STEPS):
        y = torch.sigmoid((shifted + nu) / tau)
        residual = y.sum(-1, keepdim=True) - k
        slope = (y * (1 - y)).sum(-1, keepdim=True) / tau
        step = residual / slope.clamp_min(torch.finfo(x.dtype).tiny)
        nu = torch.clamp(nu - step, lo, hi)
    return shifted, nu


class _LMLFunction(torch.autograd.Function):
    """Forward: the dual search. Backward: the closed-form implicit derivative (module docstring)."""

    @staticmethod
    def forward(ctx, x: Tensor, k: int, temperature: float) -> Tensor:  # type: ignore[override]
        shape = x.shape
        n = shape[-1]
        flat = x.reshape(-1, n)
        if k >= n:
            y = torch.ones_like(flat)
        else:
            shifted, nu = _solve_dual(flat, k, temperature)
            y = torch.sigmoid((shifted + nu) / temperature)
        y = y.reshape(shape)
        ctx.save_for_backward(y)
        ctx.temperature = temperature
        return y

    @staticmethod
    def backward(ctx, grad_y: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        (y,) = ctx.saved_tensors
        h = y * (1 - y)
        h_sum = h.sum(-1, keepdim=True).clamp_min(torch.finfo(y.dtype).tiny)
        d_nu = (h * grad_y).sum(-1, keepdim=True) / h_sum
        grad_x = h * (grad_y - d_nu) / ctx.temperature
        return grad_x, None, None


def lml(x: Tensor, k: int, temperature: float = 1.0, *, check_finite: bool = True) -> Tensor:
    """Soft top-k: project each row of ``x`` onto the interior of the LML polytope (eq. 4).

    :param x: scores of shape ``(..., n)``, any floating dtype and device; larger scores are selected.
    :param k: how many entries to select, a whole number >= 1. For ``k >= n`` every entry is selected and the result
        is all ones (the polytope ``L_{n,n}`` is the single point 1; larger ``k`` is clamped to ``n``); its gradient
        is zero.
    :param temperature: ``τ > 0``; ``τ → 0`` approaches the hard top-k indicator (prop. 2), large ``τ`` spreads the
        weight towards ``k/n`` everywhere.
    :param check_finite: raise on NaN in ``x``. This check is the only host synchronization; hot loops that already
        guarantee finite inputs (e.g. :func:`dcem_agents.dcem`) turn it off.
    :return: ``y`` of the shape, dtype and device of ``x``, in ``(0, 1)`` with ``y.sum(-1) == k``; differentiable
        with respect to ``x`` by implicit differentiation.
    :raises ValueError: for ``k < 1``, a non-integer ``k``, ``temperature <= 0`` or NaN in ``x``.
    """
    k_int = _check_args(x, k, temperature, check_finite)
    return _LMLFunction.apply(x, k_int, float(temperature))


class LML(nn.Module):
    """Module form of :func:`lml` with a fixed ``k`` and temperature: ``(..., n) -> (..., n)``."""

    def __init__(self, k: int, temperature: float = 1.0) -> None:
        super().__init__()
        _check_args(torch.zeros(1), k, temperature, check_finite=False)
        self.k = int(k)
        self.temperature = float(temperature)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the soft top-k to the last dimension of ``x``."""
        return lml(x, self.k, self.temperature)

    def extra_repr(self) -> str:
        return f"k={self.k}, temperature={self.temperature}"
