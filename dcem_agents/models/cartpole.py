"""A batched, differentiable cartpole with known dynamics and cost (paper sect. 5.2.1, eq. 7).

The classic continuous-force cartpole of Barto, Sutton & Anderson (1983), in the form used by the paper's source
(``CartpoleDx`` of Amos et al. 2018): gravity 9.8, cart mass 1.0, pole mass 0.1, pole half-length 0.5, explicit
Euler steps of ``dt = 0.05`` and forces clamped to ``[-100, 100]``.

State layout ``(..., 4)``: ``(x, ẋ, θ, θ̇)`` with ``θ = 0`` upright (positive ``θ`` leans towards ``+x``).
With ``M = m_c + m_p`` and ``F`` the clamped force, one step is

    a    = (F + m_p l θ̇² sin θ) / M
    θ̈    = (g sin θ - cos θ · a) / (l (4/3 - m_p cos² θ / M))
    ẍ    = a - m_p l θ̈ cos θ / M
    x' = x + dt ẋ,   ẋ' = ẋ + dt ẍ,   θ' = θ + dt θ̇,   θ̇' = θ̇ + dt θ̈.

Per-step reward ``r_t = cos θ_t - 0.1 x_t² - 1e-5 u_t²`` (cost ``C_t = -r_t``), scored on the state *before* the
action, so a horizon-``H`` plan ``u_{1:H}`` from ``x_1 = x_init`` has return ``Σ_{t=1}^{H} r(x_t, u_t)`` (eq. 7).
The control penalty uses the commanded force (before clamping), as the paper's source does; the planners here never
command forces outside the bounds anyway.

Everything is a pure function of tensors: any leading batch shape, device and dtype follow the inputs, and
gradients flow to the actions (and the initial state).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "CartpoleParams",
    "DEFAULT_PARAMS",
    "STATE_DIM",
    "ACTION_DIM",
    "FORCE_BOUND",
    "cartpole_step",
    "cartpole_reward",
    "cartpole_rollout",
    "cartpole_return",
    "cartpole_cost",
    "sample_initial_states",
]

STATE_DIM = 4
ACTION_DIM = 1
FORCE_BOUND = 100.0


@dataclass(frozen=True)
class CartpoleParams:
    """Physical constants of the cartpole (defaults: Barto et al. 1983 as in the paper's source).

    :param gravity: g (m/s²).
    :param cart_mass: m_c (kg).
    :param pole_mass: m_p (kg).
    :param half_length: l, the distance from the pivot to the pole's centre of mass (m).
    :param dt: Euler step (s).
    :param force_bound: forces are clamped to ``[-force_bound, force_bound]`` (N).
    :param x_weight: weight of the ``-x²`` term of the reward.
    :param ctrl_weight: weight of the ``-u²`` term of the reward.
    """

    gravity: float = 9.8
    cart_mass: float = 1.0
    pole_mass: float = 0.1
    half_length: float = 0.5
    dt: float = 0.05
    force_bound: float = FORCE_BOUND
    x_weight: float = 0.1
    ctrl_weight: float = 1e-5


DEFAULT_PARAMS = CartpoleParams()


def cartpole_step(state: Tensor, force: Tensor, params: CartpoleParams = DEFAULT_PARAMS) -> Tensor:
    """One explicit Euler step of the Barto et al. (1983) dynamics (module docstring).

    :param state: ``(..., 4)`` states ``(x, ẋ, θ, θ̇)``.
    :param force: ``(..., 1)`` forces (clamped to the force bound), broadcastable against ``state[..., :1]``.
    :return: next states ``(..., 4)``.
    """
    p = params
    total_mass = p.cart_mass + p.pole_mass
    pml = p.pole_mass * p.half_length
    x, dx, th, dth = state.unbind(-1)
    f = force[..., 0].clamp(-p.force_bound, p.force_bound)
    sin, cos = torch.sin(th), torch.cos(th)
    a = (f + pml * dth * dth * sin) / total_mass
    th_acc = (p.gravity * sin - cos * a) / (p.half_length * (4.0 / 3.0 - p.pole_mass * cos * cos / total_mass))
    x_acc = a - pml * th_acc * cos / total_mass
    return torch.stack((x + p.dt * dx, dx + p.dt * x_acc, th + p.dt * dth, dth + p.dt * th_acc), -1)


def cartpole_reward(state: Tensor, force: Tensor, params: CartpoleParams = DEFAULT_PARAMS) -> Tensor:
    """Per-step reward ``cos θ - 0.1 x² - 1e-5 u²`` of ``state`` (..., 4) and ``force`` (..., 1); returns (...)."""
    return torch.cos(state[..., 2]) - params.x_weight * state[..., 0] ** 2 - params.ctrl_weight * (force**2).sum(-1)


def cartpole_rollout(
    x_init: Tensor, actions: Tensor, params: CartpoleParams = DEFAULT_PARAMS
) -> tuple[Tensor, Tensor]:
    """Roll ``actions`` out from ``x_init`` (eq. 7's constraints).

    :param x_init: ``(..., 4)`` initial states, broadcastable against ``actions[..., 0, :]``.
    :param actions: ``(..., H, 1)`` force sequences.
    :return: ``(states, rewards)``: the visited states ``x_1 .. x_{H+1}`` ``(..., H+1, 4)`` and the per-step
        rewards ``r(x_t, u_t)`` ``(..., H)``.
    """
    horizon = actions.shape[-2]
    state = x_init.expand(*actions.shape[:-2], STATE_DIM)
    states, rewards = [state], []
    for t in range(horizon):
        u = actions[..., t, :]
        rewards.append(cartpole_reward(state, u, params))
        state = cartpole_step(state, u, params)
        states.append(state)
    return torch.stack(states, -2), torch.stack(rewards, -1)


def cartpole_return(x_init: Tensor, actions: Tensor, params: CartpoleParams = DEFAULT_PARAMS) -> Tensor:
    """Summed reward ``Σ_t r(x_t, u_t)`` of ``actions`` (..., H, 1) from ``x_init`` (..., 4); returns (...).

    Same numbers as summing :func:`cartpole_rollout`'s rewards, written with as few tensor operations per step as
    possible (the planners call it with small batches, where per-operation overhead dominates).
    """
    p = params
    total_mass = p.cart_mass + p.pole_mass
    pml_m = p.pole_mass * p.half_length / total_mass
    inv_l = 1.0 / p.half_length
    mp_m = p.pole_mass / total_mass
    shape = actions.shape[:-2]
    x, dx, th, dth = (s.expand(shape) for s in x_init.unbind(-1))
    raw = actions[..., 0]
    forces = raw.clamp(-p.force_bound, p.force_bound).unbind(-1)
    total = -p.ctrl_weight * (raw * raw).sum(-1)
    for f in forces:
        sin, cos = torch.sin(th), torch.cos(th)
        total = total + (cos - p.x_weight * x * x)
        a = f / total_mass + pml_m * dth * dth * sin
        th_acc = inv_l * (p.gravity * sin - cos * a) / (4.0 / 3.0 - mp_m * cos * cos)
        x_acc = a - pml_m * th_acc * cos
        x, dx, th, dth = x + p.dt * dx, dx + p.dt * x_acc, th + p.dt * dth, dth + p.dt * th_acc
    return total


def cartpole_cost(x_init: Tensor, actions: Tensor, params: CartpoleParams = DEFAULT_PARAMS) -> Tensor:
    """Controller cost ``C(u_{1:H}; x_init) = -Σ_t r(x_t, u_t)`` (eq. 7), shape ``(...)``; lower is better."""
    return -cartpole_return(x_init, actions, params)


def sample_initial_states(
    n: int,
    generator: torch.Generator | None = None,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Draw ``n`` initial states ``(n, 4)`` from the distribution ``D`` of alg. 2 (as in the paper's source).

    Independently uniform: ``x ~ U(-0.5, 0.5)``, ``ẋ ~ U(-0.5, 0.5)``, ``θ ~ U(-π, π)`` (any pole angle, so many
    problems need a swing-up), ``θ̇ ~ U(-1, 1)``.

    :param n: number of states.
    :param generator: random generator (its device decides where the draw happens).
    :param device: device of the result (default: the generator's).
    :param dtype: dtype of the result.
    """
    gen_device = generator.device if generator is not None else torch.device("cpu")
    u = torch.rand(n, STATE_DIM, generator=generator, device=gen_device, dtype=torch.float64)
    half_widths = torch.tensor([0.5, 0.5, math.pi, 1.0], dtype=torch.float64, device=gen_device)
    states = (2.0 * u - 1.0) * half_widths
    return states.to(device=device if device is not None else gen_device, dtype=dtype)
