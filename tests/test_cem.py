"""CEM and DCEM (alg. 1): hard limit, global minima, gradients, std floor, dtype/device, errors."""

from __future__ import annotations

import pytest
import torch

from dcem_agents import CEMIterate, ackley, dcem, rastrigin


def _gen(seed: int = 0, device: str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def _trace(**kwargs: object) -> tuple[torch.Tensor, list[CEMIterate]]:
    its: list[CEMIterate] = []
    out = dcem(callback=its.append, **kwargs)  # type: ignore[arg-type]
    return out, its


def test_low_temperature_follows_hard_cem_iterates() -> None:
    kwargs = dict(objective=lambda x: rastrigin(x), dim=2, n_batch=4, n_samples=100, n_elites=10, n_iters=8,
                  lower=-5.12, upper=5.12, dtype=torch.float64)
    hard_out, hard = _trace(temperature=None, generator=_gen(3), **kwargs)
    soft_out, soft = _trace(temperature=1e-7, generator=_gen(3), **kwargs)
    assert len(hard) == len(soft) == 8
    for h, s in zip(hard, soft):
        torch.testing.assert_close(s.weights, h.weights, atol=1e-6, rtol=0)
        torch.testing.assert_close(s.mean, h.mean, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(s.std, h.std, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(soft_out, hard_out, atol=1e-6, rtol=1e-6)
    # temperature=0 is the same as None
    zero_out = dcem(temperature=0, generator=_gen(3), **kwargs)  # type: ignore[arg-type]
    torch.testing.assert_close(zero_out, hard_out, atol=0, rtol=0)


@pytest.mark.parametrize("temperature", [None, 1.0, 0.5])
def test_rastrigin_global_minimum(temperature: float | None) -> None:
    out = dcem(rastrigin, 2, n_batch=16, n_samples=500, n_elites=50, n_iters=40, temperature=temperature,
               lower=-5.12, upper=5.12, generator=_gen(0))
    # the global minimum is x = 0; the nearest local minima are at distance ~1
    assert out.abs().max().item() < 1e-2
    assert rastrigin(out.unsqueeze(1)).max().item() < 1e-2


@pytest.mark.parametrize("temperature", [None, 1.0])
def test_ackley_global_minimum(temperature: float | None) -> None:
    out = dcem(ackley, 2, n_batch=8, n_samples=200, n_elites=20, n_iters=40, temperature=temperature,
               lower=-32.768, upper=32.768, generator=_gen(1))
    assert out.abs().max().item() < 1e-2


def test_gradient_matches_finite_differences_under_fixed_noise() -> None:
    """d(output)/dθ of a parameterized objective equals central finite differences when the noise is held fixed."""
    dim, n_iters, n, k = 3, 5, 50, 8
    noise = torch.randn(n_iters, 2, n, dim, generator=_gen(5), dtype=torch.float64)
    weights = torch.tensor([1.0, -0.5, 0.25], dtype=torch.float64)

    def solve(theta: torch.Tensor) -> torch.Tensor:
        def cost(x: torch.Tensor) -> torch.Tensor:  # (2, n, 3) -> (2, n); a shifted, tilted quartic bowl
            d = x - theta
            return (d**2).sum(-1) + 0.1 * (d**4).sum(-1) + (x * weights).sum(-1) * theta.sum()
        return dcem(cost, dim, n_batch=2, n_samples=n, n_elites=k, n_iters=n_iters, temperature=1.0,
                    init_std=2.0, noise=noise, dtype=torch.float64)

    theta = torch.tensor([0.3, -0.7, 1.1], dtype=torch.float64, requires_grad=True)
    probe = torch.randn(2, dim, generator=_gen(6), dtype=torch.float64)
    (grad,) = torch.autograd.grad((solve(theta) * probe).sum(), theta)
    eps = 1e-6
    fd = torch.zeros(dim, dtype=torch.float64)
    with torch.no_grad():
        for i in range(dim):
            e = torch.zeros(dim, dtype=torch.float64)
            e[i] = eps
            fd[i] = ((solve(theta + e) * probe).sum() - (solve(theta - e) * probe).sum()) / (2 * eps)
    assert grad.abs().max() > 1e-3  # the check is not vacuous
    torch.testing.assert_close(grad, fd, atol=1e-6, rtol=1e-5)


def test_gradgcheck_with_gradcheck() -> None:
    noise = torch.randn(3, 1, 20, 2, generator=_gen(7), dtype=torch.float64)

    def f(theta: torch.Tensor) -> torch.Tensor:
        return dcem(lambda x: ((x - theta) ** 2).sum(-1), 2, n_samples=20, n_elites=5, n_iters=3, noise=noise,
                    dtype=torch.float64)

    theta = torch.tensor([0.5, -0.2], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(f, (theta,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("temperature", [None, 1.0])
def test_std_floor_when_all_samples_are_clipped(temperature: float | None) -> None:
    """Minimizing x on [0, 1] pushes every sample onto the lower bound: σ must stop at min_std, not 0 or NaN."""
    out, its = _trace(objective=lambda x: x.sum(-1), dim=2, n_samples=50, n_elites=5, n_iters=30,
                      temperature=temperature, lower=0.0, upper=1.0, min_std=1e-3, generator=_gen(8))
    stds = torch.stack([it.std for it in its])
    assert torch.isfinite(stds).all() and torch.isfinite(out).all()
    assert (stds >= 1e-3 - 1e-12).all()
    torch.testing.assert_close(its[-1].std, torch.full((1, 2), 1e-3))
    assert out.abs().max().item() < 1e-2
    assert all(((it.samples >= 0) & (it.samples <= 1)).all() for it in its)


def test_callback_sees_each_iteration() -> None:
    out, its = _trace(objective=lambda x: (x**2).sum(-1), dim=4, n_batch=3, n_samples=30, n_elites=6, n_iters=5,
                      generator=_gen(9))
    assert [it.iteration for it in its] == list(range(5))
    for it in its:
        assert it.samples.shape == (3, 30, 4) and it.values.shape == (3, 30) and it.weights.shape == (3, 30)
        assert it.mean.shape == (3, 4) and it.std.shape == (3, 4)
        torch.testing.assert_close(it.weights.sum(-1), torch.full((3,), 6.0), atol=6e-4, rtol=0)
    torch.testing.assert_close(out, its[-1].mean)


def test_same_seed_same_result_and_different_seed_differs() -> None:
    kw = dict(objective=rastrigin, dim=2, n_samples=64, n_elites=8, n_iters=3, lower=-5.12, upper=5.12)
    a = dcem(generator=_gen(11), **kw)  # type: ignore[arg-type]
    b = dcem(generator=_gen(11), **kw)  # type: ignore[arg-type]
    c = dcem(generator=_gen(12), **kw)  # type: ignore[arg-type]
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("temperature", [1.0, None])
def test_non_finite_costs_count_as_worst(bad: float, temperature: float | None) -> None:
    def cost(x: torch.Tensor) -> torch.Tensor:  # non-finite for x0 < 0: the optimum (1, 1) is in the valid half
        v = ((x - 1) ** 2).sum(-1)
        return torch.where(x[..., 0] < 0, torch.full_like(v, bad), v)

    out = dcem(cost, 2, n_samples=100, n_elites=10, n_iters=20, init_std=3.0, temperature=temperature,
               generator=_gen(13))
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, torch.ones(1, 2), atol=5e-2, rtol=0)


def test_per_problem_bounds_and_initial_mean() -> None:
    lower = torch.tensor([[1.0, 1.0], [-3.0, -3.0]])
    upper = torch.tensor([[2.0, 2.0], [-2.0, -2.0]])
    out = dcem(lambda x: (x**2).sum(-1), 2, n_batch=2, n_samples=40, n_elites=5, n_iters=10, lower=lower,
               upper=upper, generator=_gen(14))
    # each problem's minimizer is its box corner closest to the origin
    torch.testing.assert_close(out, torch.tensor([[1.0, 1.0], [-2.0, -2.0]]), atol=2e-2, rtol=0)
    start = torch.tensor([4.0, 4.0])
    _, its = _trace(objective=lambda x: x.sum(-1) * 0, dim=2, n_samples=400, n_elites=400, n_iters=1,
                    init_mean=start, init_std=0.1, generator=_gen(15))
    torch.testing.assert_close(its[0].mean, start.unsqueeze(0), atol=3e-2, rtol=0)


def test_dtype_and_device_follow_inputs() -> None:
    f = lambda x: (x**2).sum(-1)  # noqa: E731
    assert dcem(f, 2, n_samples=10, n_elites=2, n_iters=2).dtype == torch.float32
    assert dcem(f, 2, n_samples=10, n_elites=2, n_iters=2, init_mean=torch.zeros(2, dtype=torch.float64)).dtype == torch.float64
    assert dcem(f, 2, n_samples=10, n_elites=2, n_iters=2, lower=torch.zeros(2, dtype=torch.float64), upper=1.0).dtype == torch.float64
    assert dcem(f, 2, n_samples=10, n_elites=2, n_iters=2, dtype=torch.float64).dtype == torch.float64


@pytest.mark.parametrize(
    "kwargs,match",
    [(dict(n_samples=10, n_elites=11, n_iters=2), "n_elites"), (dict(n_samples=10, n_elites=0, n_iters=2), "n_elites"),
     (dict(n_samples=10, n_elites=2, n_iters=0), "n_iters"), (dict(n_samples=10, n_elites=2, n_iters=2, temperature=-1.0), "temperature"),
     (dict(n_samples=10, n_elites=2, n_iters=2, min_std=0.0), "min_std"),
     (dict(n_samples=10, n_elites=2, n_iters=2, noise=torch.zeros(2, 1, 10, 3)), "noise")],
)
def test_bad_arguments_raise(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        dcem(lambda x: (x**2).sum(-1), 2, **kwargs)


def test_objective_of_wrong_shape_raises() -> None:
    with pytest.raises(ValueError, match="objective must return shape"):
        dcem(lambda x: (x**2).sum(), 2, n_samples=10, n_elites=2, n_iters=1)


@pytest.mark.gpu
def test_runs_on_cuda() -> None:
    theta = torch.zeros(3, device="cuda", requires_grad=True)
    out = dcem(lambda x: ((x - theta - 1) ** 2).sum(-1), 3, n_batch=4, n_samples=100, n_elites=10, n_iters=10,
               generator=_gen(0, "cuda"), device="cuda")
    assert out.device.type == "cuda"
    out.sum().backward()
    assert theta.grad is not None and theta.grad.device.type == "cuda"
    torch.testing.assert_close(out, torch.ones(4, 3, device="cuda"), atol=0.1, rtol=0)


@pytest.mark.parametrize("grad_iters", [1, 3])
def test_truncated_differentiation_is_the_last_iterations_from_a_constant_start(grad_iters: int) -> None:
    """grad_iters=k: the same output as the full solve; its gradient is that of k iterations started from the mean and
    std that the first n - k iterations reach, held constant (computed here as a separate solve)."""
    dim, n_iters, n, k = 3, 5, 40, 6
    noise = torch.randn(n_iters, 2, n, dim, generator=_gen(8), dtype=torch.float64)
    theta = torch.tensor([0.3, -0.7, 1.1], dtype=torch.float64, requires_grad=True)

    def cost(x: torch.Tensor) -> torch.Tensor:
        return ((x - theta) ** 2).sum(-1) + 0.1 * ((x - theta) ** 4).sum(-1)

    common = dict(n_batch=2, n_samples=n, n_elites=k, temperature=1.0, dtype=torch.float64)
    full = dcem(cost, dim, n_iters=n_iters, init_std=2.0, noise=noise, **common)
    truncated = dcem(cost, dim, n_iters=n_iters, init_std=2.0, noise=noise, grad_iters=grad_iters, **common)
    torch.testing.assert_close(truncated, full, atol=0, rtol=0)
    start: list[CEMIterate] = []
    with torch.no_grad():
        dcem(cost, dim, n_iters=n_iters - grad_iters, init_std=2.0, noise=noise[: n_iters - grad_iters],
             callback=start.append, **common)
    reference = dcem(cost, dim, n_iters=grad_iters, init_mean=start[-1].mean, init_std=start[-1].std,
                     noise=noise[n_iters - grad_iters :], **common)
    torch.testing.assert_close(reference, full, atol=1e-12, rtol=0)
    probe = torch.randn(2, dim, generator=_gen(9), dtype=torch.float64)
    (g_truncated,) = torch.autograd.grad((truncated * probe).sum(), theta)
    (g_reference,) = torch.autograd.grad((reference * probe).sum(), theta)
    (g_full,) = torch.autograd.grad((full * probe).sum(), theta)
    torch.testing.assert_close(g_truncated, g_reference, atol=1e-10, rtol=1e-8)
    assert (g_truncated - g_full).abs().max() > 1e-6  # truncation changes the gradient: the test can tell


def test_grad_iters_out_of_range_raises() -> None:
    with pytest.raises(ValueError, match="grad_iters must be in"):
        dcem(lambda x: (x**2).sum(-1), 2, n_samples=10, n_elites=2, n_iters=3, grad_iters=4)
