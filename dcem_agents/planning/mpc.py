"""Model-predictive control on a learned world model: PlaNet's planner, CEM over the full action space (eq. 7).

:func:`imagined_return_cost` turns a world model and the current beliefs into the controller cost
``C(u_{1:H}) = -Σ_t r̂_t`` over candidate action sequences ``(B, N, H, A) -> (B, N)``; the same cost serves the
latent controller of :mod:`dcem_agents.planning.latent`. :class:`CEMController` re-solves the problem at every step
with hard CEM (:func:`~dcem_agents.planning.action_space.action_space_plan`), warm-started from the previous plan
shifted by one step, and executes only the first action (receding horizon).

Both controllers carry a :class:`~dcem_agents.planning.runtime.PlannerRuntime` (``controller.runtime``): the rollout
engine, its precision, compilation and, on CUDA, replay of captured graphs. It changes how the cost is computed, never
the planning problem.

Every controller of this package implements :class:`Controller`: ``reset(n_envs)`` at the start of a batch of
episodes and ``act(belief, generator) -> (n_envs, A)`` once per step, for all environments in one batched call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from dcem_agents.math.cem import BestSample, CEMIterate, check_cem_sizes
from dcem_agents.models.lean_rollout import imagine_objective
from dcem_agents.models.rssm import RSSM
from dcem_agents.planning.action_space import action_space_plan
from dcem_agents.planning.cuda_graph import GraphCache
from dcem_agents.planning.runtime import DEFAULT_RUNTIME, PlannerRuntime

__all__ = ["CEMController", "Controller", "imagined_return_cost", "use_cuda_graphs"]

#: candidate action sequences (B, N, H, A) -> costs (B, N), lower is better
ActionCost = Callable[[Tensor], Tensor]


@runtime_checkable
class Controller(Protocol):
    """The interface of the MPC controllers: one batched call per step for ``n_envs`` environments."""

    def reset(self, n_envs: int) -> None:
        """Forget the warm-start state; the next :meth:`act` gets beliefs for ``n_envs`` environments."""

    def act(self, belief: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Actions (n_envs, A) for the beliefs (n_envs, D) of the world model, inside the action box."""


def imagined_return_cost(model: RSSM, belief: Tensor, runtime: PlannerRuntime = DEFAULT_RUNTIME) -> ActionCost:
    """The cost ``(B, N, H, A) -> (B, N)``: minus the sum of rewards the model predicts from ``belief`` (B, D), each
    weighted by the predicted probability that the episode still runs (the continuation head; 1 without it), plus,
    with the model's value head, the discounted value of the rollout's last belief (:meth:`Imagination.objective`).

    Each of the ``B·N`` candidate sequences is rolled out open-loop from its row's belief, mean observations fed
    back: :func:`~dcem_agents.models.lean_rollout.imagine_objective` (``runtime.rollout == "lean"``) or
    :meth:`~dcem_agents.models.rssm.RSSM.imagine` (``"reference"``, and any model that is not an
    :class:`~dcem_agents.models.rssm.RSSM` but has an ``imagine`` of the same contract).
    """

    def cost(actions: Tensor) -> Tensor:
        b, n, h, a = actions.shape
        start = belief.unsqueeze(1).expand(b, n, belief.shape[-1]).reshape(b * n, -1)
        flat = actions.reshape(b * n, h, a)
        if runtime.rollout == "reference" or not isinstance(model, RSSM):  # other models: their own imagine
            objective = model.imagine(start, flat).objective()
        else:
            objective = imagine_objective(model, start, flat, runtime.precision, runtime.chunk, runtime.compile)
        return -objective.view(b, n)

    return cost


def use_cuda_graphs(runtime: PlannerRuntime, device: torch.device) -> bool:
    """Whether a gradient-free planning call on ``device`` replays a captured graph."""
    return runtime.cuda_graphs and device.type == "cuda" and not torch.is_grad_enabled()


class CEMController:
    """MPC with hard CEM over full action sequences on a world model (PlaNet's planner; defaults are the paper's).

    :param model: the world model; device and dtype of the planning follow its parameters.
    :param action_low: lower action bounds (A,).
    :param action_high: upper action bounds (A,).
    :param horizon: planning horizon ``H``.
    :param n_samples: candidate sequences per iteration.
    :param n_elites: elites refitted per iteration.
    :param n_iters: CEM iterations per step.
    :param warm_start: start each step from the previous mean plan shifted by one step (new last step at the box
        centre); the std always restarts at half the box width.
    :param runtime: how the planning call runs (rollout engine, precision, compilation, CUDA graphs).
    :param execute_best: act on the best sequence the search evaluated (lowest model cost, any iteration) instead of
        the final mean plan, which the model never scores; the warm start still shifts the mean plan.
    """

    def __init__(
        self,
        model: RSSM,
        action_low: Tensor,
        action_high: Tensor,
        horizon: int = 12,
        n_samples: int = 1000,
        n_elites: int = 100,
        n_iters: int = 10,
        warm_start: bool = True,
        runtime: PlannerRuntime = DEFAULT_RUNTIME,
        execute_best: bool = False,
    ) -> None:
        check_cem_sizes(n_samples, n_elites, n_iters, horizon, where="CEMController")
        self.model = model
        self.action_low = torch.as_tensor(action_low).reshape(-1)
        self.action_high = torch.as_tensor(action_high).reshape(-1)
        self.horizon, self.n_samples, self.n_elites, self.n_iters = horizon, n_samples, n_elites, n_iters
        self.warm_start = warm_start
        self.runtime = runtime
        self.execute_best = execute_best
        self.graphs = GraphCache()
        self._plan: Tensor | None = None
        self._bounds: tuple[Tensor, Tensor] | None = None

    @property
    def samples_per_step(self) -> int:
        """Action sequences evaluated per planning call and environment: ``n_samples · n_iters``."""
        return self.n_samples * self.n_iters

    def reset(self, n_envs: int) -> None:
        """Drop the previous plans (start of new episodes for ``n_envs`` environments)."""
        self._plan = None
        self._n_envs = n_envs

    def _device_bounds(self, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """The action box on the planning device, copied there once."""
        if self._bounds is None or self._bounds[0].device != device or self._bounds[0].dtype != dtype:
            self._bounds = (self.action_low.to(device=device, dtype=dtype), self.action_high.to(device=device, dtype=dtype))
        return self._bounds

    def centre_plan(self, n_envs: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        """The centre of the action box at every step (n_envs, H, A): where a plan starts without a previous one."""
        low, high = self._device_bounds(device, dtype)
        return (0.5 * (low + high)).expand(n_envs, self.horizon, -1)

    def plan(self, belief: Tensor, init_mean: Tensor, noise: Tensor | None = None,
             generator: torch.Generator | None = None, callback: Callable[[CEMIterate], None] | None = None) -> Tensor:
        """Solve eq. (7) from ``belief`` (B, D) starting at ``init_mean`` (B, H, A); return the mean plan (B, H, A).

        :param noise: pre-drawn standard normal noise ``(n_iters, B, n_samples, H·A)``; else drawn from ``generator``.
        :param callback: receives every iteration's :class:`~dcem_agents.math.CEMIterate` (samples flattened to H·A).
        """
        low, high = self._device_bounds(belief.device, belief.dtype)
        return action_space_plan(
            imagined_return_cost(self.model, belief, self.runtime),
            self.horizon,
            low,
            high,
            belief.shape[0],
            n_samples=self.n_samples,
            n_elites=self.n_elites,
            n_iters=self.n_iters,
            temperature=None,
            init_mean=init_mean,
            generator=generator,
            noise=noise,
            callback=callback,
            device=belief.device,
            dtype=belief.dtype,
        )

    def _plan_and_first_actions(self, belief: Tensor, init_mean: Tensor, noise: Tensor | None = None,
                                generator: torch.Generator | None = None) -> Tensor:
        """The mean plan (B, H, A) with the executed first actions appended as step ``H`` (B, H + 1, A): the mean
        plan's first, or with ``execute_best`` the best evaluated sequence's."""
        best = BestSample() if self.execute_best else None
        plan = self.plan(belief, init_mean, noise, generator, callback=best)
        first = plan[:, 0] if best is None else best.sample.view_as(plan)[:, 0]  # type: ignore[union-attr]
        return torch.cat([plan, first[:, None]], 1)

    @torch.no_grad()
    def act(self, belief: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Solve eq. (7) from each belief (n_envs, D) and return the first actions (n_envs, A).

        :param generator: generator of the CEM sampling noise (on the model's device).
        """
        param = next(self.model.parameters())
        belief = belief.to(device=param.device, dtype=param.dtype)
        n_envs = belief.shape[0]
        centre = self.centre_plan(n_envs, param.device, param.dtype)
        init = centre
        if self.warm_start and self._plan is not None and self._plan.shape[0] == n_envs:
            init = torch.cat([self._plan[:, 1:], centre[:, :1]], 1)
        if use_cuda_graphs(self.runtime, param.device):
            dim = self.horizon * self.action_low.numel()
            noise = torch.randn(self.n_iters, n_envs, self.n_samples, dim, generator=generator, device=param.device,
                                dtype=param.dtype)
            key = (n_envs, self.horizon, self.n_samples, self.n_elites, self.n_iters, self.runtime, self.execute_best)
            out = self.graphs.run(key, lambda b, i, e: self._plan_and_first_actions(b, i, noise=e), belief,
                                  init.contiguous(), noise)
        else:
            out = self._plan_and_first_actions(belief, init, generator=generator)
        self._plan = out[:, :-1]
        return out[:, -1]
