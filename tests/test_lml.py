"""The LML soft top-k (eq. 4): the sum constraint, limits, gradients, argument errors, devices."""

from __future__ import annotations

import pytest
import torch

from dcem_agents import LML, lml
from dcem_agents.math.cem import hard_top_k
from dcem_agents.planning.runtime import count_operators


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("dtype,rtol", [(torch.float32, 1e-4), (torch.float64, 1e-8)])
@pytest.mark.parametrize("n", [2, 10, 1000, 100_000])
@pytest.mark.parametrize("k_frac", ["one", "half", "n-1"])
def test_sum_equals_k(dtype: torch.dtype, rtol: float, n: int, k_frac: str) -> None:
    k = {"one": 1, "half": max(1, n // 2), "n-1": n - 1}[k_frac]
    x = torch.randn(3, n, generator=_gen(n), dtype=dtype) * 3
    y = lml(x, k)
    tol = rtol * k if dtype == torch.float32 else rtol
    assert y.shape == x.shape and y.dtype == dtype
    assert torch.all(y >= 0) and torch.all(y <= 1)
    assert (y.sum(-1) - k).abs().max().item() <= tol


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.float64, 1e-8)])
@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3, 1e6])
def test_sum_large_magnitudes(dtype: torch.dtype, tol: float, scale: float) -> None:
    x = torch.randn(4, 500, generator=_gen(1), dtype=dtype) * scale + scale  # entries up to ~5e6 at scale 1e6
    for k in (1, 17, 499):
        y = lml(x, k)
        bound = tol * k if dtype == torch.float32 else tol
        assert (y.sum(-1) - k).abs().max().item() <= bound, (scale, k)


def test_leading_batch_shapes() -> None:
    x = torch.randn(2, 3, 4, 50, generator=_gen(2), dtype=torch.float64)
    y = lml(x, 5)
    assert y.shape == x.shape
    torch.testing.assert_close(y.sum(-1), torch.full((2, 3, 4), 5.0, dtype=torch.float64), atol=1e-8, rtol=0)
    # rows are independent: the batched result equals the row-by-row one
    torch.testing.assert_close(y[1, 2, 3], lml(x[1, 2, 3], 5))
    assert lml(torch.randn(30, dtype=torch.float64, generator=_gen(3)), 4).shape == (30,)


def test_ties_are_shared_equally() -> None:
    x = torch.tensor([[1.0, 1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    y = lml(x, 2)
    torch.testing.assert_close(y.sum(-1), torch.full((2,), 2.0, dtype=torch.float64), atol=1e-8, rtol=0)
    torch.testing.assert_close(y[0, :3], y[0, :1].expand(3))  # tied entries get equal weight
    torch.testing.assert_close(y[1], torch.full((5,), 0.4, dtype=torch.float64), atol=1e-8, rtol=0)


def test_k_at_least_n_selects_everything() -> None:
    x = torch.randn(3, 4, generator=_gen(4), requires_grad=True)
    for k in (4, 9):
        y = lml(x, k)
        torch.testing.assert_close(y, torch.ones(3, 4))
        y.sum().backward()
        torch.testing.assert_close(x.grad, torch.zeros(3, 4))
        x.grad = None


@pytest.mark.parametrize("k,tau", [(1, 1.0), (3, 0.5), (7, 2.0)])
def test_gradcheck_float64(k: int, tau: float) -> None:
    x = torch.randn(3, 9, generator=_gen(k), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: lml(t, k, tau), (x,), eps=1e-6, atol=1e-6)


def _reference_lml(x: torch.Tensor, k: int, tau: float) -> torch.Tensor:
    """An independent LML: ``y = σ((x + ν)/τ)`` with ``ν`` found by plain bisection on ``Σy = k`` (float64, rows of x).

    The bracket holds the root by construction: at ``ν = -max(x) - 60τ`` every entry is below e^-60 (Σy < k), at
    ``ν = -min(x) + 60τ`` every entry is above 1 - e^-60 (Σy > k for k < n). 200 halvings reach float64 resolution."""
    x = x.to(torch.float64)
    lo = -x.amax(-1, keepdim=True) - 60 * tau
    hi = -x.amin(-1, keepdim=True) + 60 * tau
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        below = torch.sigmoid((x + mid) / tau).sum(-1, keepdim=True) < k
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    return torch.sigmoid((x + 0.5 * (lo + hi)) / tau)


@pytest.mark.parametrize("k,tau,scale", [(6, 0.7, 1.0), (2, 0.3, 3.0), (15, 2.0, 1.0)])
def test_backward_matches_finite_differences_of_a_bisection_reference(k: int, tau: float, scale: float) -> None:
    """The custom backward (implicit differentiation) against the Jacobian of an independent solver, by central
    differences: a sign or scale error in the backward, or a wrong ν, shows here (the reference shares no code)."""
    n, eps = 20, 1e-5
    x = torch.randn(5, n, generator=_gen(5), dtype=torch.float64) * scale
    g = torch.randn(5, n, generator=_gen(6), dtype=torch.float64)
    # the forward pass agrees with the reference
    torch.testing.assert_close(lml(x, k, tau), _reference_lml(x, k, tau), atol=1e-12, rtol=0)
    # reference Jacobian J[b, i, j] = dy_i / dx_j by central differences, all perturbations in one batch
    step = eps * torch.eye(n, dtype=torch.float64)  # (j, n)
    up = _reference_lml(x[:, None, :] + step, k, tau)  # (5, j, n)
    down = _reference_lml(x[:, None, :] - step, k, tau)
    jac = ((up - down) / (2 * eps)).transpose(1, 2)  # (5, i, j)
    xr = x.clone().requires_grad_()
    y = lml(xr, k, tau)
    (grad,) = torch.autograd.grad(y, xr, g, retain_graph=True)
    torch.testing.assert_close(grad, torch.einsum("bij,bi->bj", jac, g), atol=1e-8, rtol=1e-6)
    # and the whole Jacobian, one basis vector at a time
    rows = torch.stack([torch.autograd.grad(y, xr, torch.eye(n, dtype=torch.float64)[i].expand(5, n),
                                            retain_graph=True)[0] for i in range(n)], 1)  # (5, i, j)
    torch.testing.assert_close(rows, jac, atol=1e-8, rtol=1e-6)
    assert jac.abs().max() > 1e-2  # the comparison is not between two zeros


def test_low_temperature_approaches_hard_top_k() -> None:
    # distinct entries with gaps of at least 0.1, so the error bound ~exp(-gap / (2τ)) is tiny at τ = 1e-3
    x = torch.stack([torch.randperm(40, generator=_gen(7 + i)) for i in range(8)]).to(torch.float64) * 0.1
    hard = hard_top_k(x, 5)
    errors = [(lml(x, 5, tau) - hard).abs().max().item() for tau in (1.0, 0.1, 0.01, 1e-3)]
    assert errors == sorted(errors, reverse=True)
    assert errors[-1] < 1e-6


def test_high_temperature_spreads_towards_k_over_n() -> None:
    x = torch.randn(2, 10, generator=_gen(8), dtype=torch.float64)
    torch.testing.assert_close(lml(x, 3, 1e6), torch.full((2, 10), 0.3, dtype=torch.float64), atol=1e-5, rtol=0)


def test_module_form() -> None:
    layer = LML(k=3, temperature=0.5)
    x = torch.randn(4, 12, generator=_gen(9))
    torch.testing.assert_close(layer(x), lml(x, 3, 0.5))
    assert "k=3" in repr(layer)


@pytest.mark.parametrize(
    "k,tau,match",
    [(0, 1.0, "at least 1"), (-2, 1.0, "at least 1"), (2.5, 1.0, "whole number"), (True, 1.0, "whole number"),
     (2, 0.0, "temperature"), (2, -1.0, "temperature"), (2, float("inf"), "temperature")],
)
def test_bad_arguments_raise(k: object, tau: float, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        lml(torch.randn(5), k, tau)  # type: ignore[arg-type]


def test_nan_raises() -> None:
    x = torch.randn(2, 5)
    x[1, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        lml(x, 2)


def test_integer_valued_float_k_is_accepted() -> None:
    x = torch.randn(6, dtype=torch.float64, generator=_gen(10))
    torch.testing.assert_close(lml(x, 2.0), lml(x, 2))


@pytest.mark.gpu
def test_cuda_matches_cpu_without_sync() -> None:
    x = torch.randn(64, 1000, generator=_gen(11), dtype=torch.float64)
    y_cpu = lml(x, 10)
    xc = x.cuda().requires_grad_()
    torch.cuda.set_sync_debug_mode("error")  # any host-device synchronization inside the search raises
    try:
        y = lml(xc, 10, check_finite=False)
        y.sum().backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert y.device.type == "cuda"
    torch.testing.assert_close(y.cpu(), y_cpu, atol=1e-8, rtol=0)


def test_a_float32_planner_row_takes_few_operators_and_the_same_answer_as_float64() -> None:
    # One DCEM iteration's elites (100 samples, 10 elites): the search runs 4 256-way steps for float32 (32 bits)
    # and 3 Newton steps. A planning call on a GPU pays per kernel, so the budget is tested; the float32 answer must
    # still be the float64 one to float32 rounding.
    x = torch.randn(1, 100, generator=_gen(12)) * 3
    y = lml(x, 10, check_finite=False)
    ops = count_operators(lambda: lml(x, 10, check_finite=False))
    assert ops <= 100, ops  # 129 with at most 32-way steps, 184 with the 60-bit search of float64
    y64 = lml(x.double(), 10)
    assert (y.double() - y64).abs().max().item() < 1e-6
    assert abs(y.sum().item() - 10) < 1e-5
