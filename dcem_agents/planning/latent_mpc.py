"""Model-predictive control in a learned latent action space on a world model: the embedded DCEM controller.

At every step :class:`LatentDCEMController` solves

    ẑ = argmin_{z ∈ [-b, b]^d}  -Σ_{t=1}^{H} r̂_t(belief, f_dec(z))                                   (eq. 8)

with DCEM over the latent space (:func:`~dcem_agents.planning.latent.latent_plan`; defaults 100 samples, 10 elites,
10 iterations, τ = 1, the paper's sect. 5.2.2) by rolling the world model out open-loop from the current belief
(:func:`~dcem_agents.planning.mpc.imagined_return_cost`), and executes the first action of ``f_dec(ẑ)``.

With ``execute_best`` (:class:`~dcem_agents.planning.latent.LatentCEMSettings`) it executes instead the first action of
the best sample the search evaluated, ``f_dec(z*)`` with ``z* = argmin`` of the model's cost over every iteration's
samples: ``ẑ``, a weighted mean of samples, is a point the model never scored, and through a nonlinear decoder the
mean of good latent points need not decode to a good plan.

With ``reuse_plan`` the plan it executed at the previous step, shifted by one step, competes with the new one under
the model's cost, and the cheaper is executed (iCEM's shifted elites): the search still starts afresh, but a good
plan is not dropped because one step's samples missed it.

Without ``reuse_plan`` it keeps no warm-start state: the action is a deterministic function of the belief and of the
sampling noise. That makes the induced policy ``π_θ(x) = f_dec(ẑ(x))_1`` (phase 3) reproducible: with the same
noise (:meth:`LatentDCEMController.draw_noise`) the same belief gives the same action, at collection time and at
update time. :meth:`plan` is the differentiable form used for learning the decoder (alg. 2) and by PPO; :meth:`act`
is the :class:`~dcem_agents.planning.mpc.Controller` interface (no gradient), so the trainer, ``evaluate.py`` and users
can swap it with :class:`~dcem_agents.planning.mpc.CEMController`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from dcem_agents.math import BestSample, CEMIterate
from dcem_agents.models.decoder import LatentActionDecoder
from dcem_agents.models.rssm import RSSM
from dcem_agents.planning.latent import LatentCEMSettings, LatentPlan, latent_plan
from dcem_agents.planning.cuda_graph import GraphCache
from dcem_agents.planning.mpc import imagined_return_cost, use_cuda_graphs
from dcem_agents.planning.runtime import DEFAULT_RUNTIME, PlannerRuntime

__all__ = ["LatentDCEMController"]


class LatentDCEMController:
    """Embedded DCEM controller: (D)CEM over ``z``, decoding action sequences with ``decoder``, scored by ``model``.

    :param model: the world model; planning runs on its device and dtype.
    :param decoder: ``f_dec: Z -> U^H``; its horizon is the planning horizon and its bounds the action box.
    :param settings: latent (D)CEM hyper-parameters (``temperature=None`` gives hard CEM in the latent space).
    :param runtime: how the planning call runs (rollout engine, precision, compilation, CUDA graphs).
    """

    def __init__(self, model: RSSM, decoder: LatentActionDecoder, settings: LatentCEMSettings | None = None,
                 runtime: PlannerRuntime = DEFAULT_RUNTIME) -> None:
        if decoder.action_dim != model.action_dim:
            raise ValueError(f"decoder action_dim {decoder.action_dim} != world model action_dim {model.action_dim}")
        self.model = model
        self.decoder = decoder
        self.settings = settings if settings is not None else LatentCEMSettings()
        self.runtime = runtime
        self.graphs = GraphCache()
        self._executed: Tensor | None = None  # the plans of the previous act() (reuse_plan), (n_envs, H, A)

    @property
    def horizon(self) -> int:
        """Planning horizon ``H`` (the decoder's)."""
        return self.decoder.horizon

    @property
    def samples_per_step(self) -> int:
        """Action sequences evaluated per planning call and environment: ``n_samples · n_iters``, and with
        ``reuse_plan`` the previous plan (and the mean plan, without ``execute_best``)."""
        s = self.settings
        scored_after = (1 if s.execute_best else 2) if s.reuse_plan else 0  # executed_plans' extra rollout
        return s.n_samples * s.n_iters + scored_after

    def noise_shape(self, n_envs: int) -> tuple[int, int, int, int]:
        """Shape ``(n_iters, n_envs, n_samples, latent_dim)`` of the standard normal noise of one planning call."""
        s = self.settings
        return (s.n_iters, n_envs, s.n_samples, self.decoder.latent_dim)

    def draw_noise(self, n_envs: int, generator: torch.Generator | None = None) -> Tensor:
        """Draw the noise of one planning call on the model's device and dtype (see :meth:`plan`)."""
        ref = next(self.model.parameters())
        return torch.randn(self.noise_shape(n_envs), generator=generator, device=ref.device, dtype=ref.dtype)

    def plan(self, belief: Tensor, generator: torch.Generator | None = None, noise: Tensor | None = None, *,
             callback: Callable[[CEMIterate], None] | None = None,
             start: tuple[Tensor, Tensor] | None = None) -> LatentPlan:
        """Solve eq. (8) from ``belief`` (B, D); differentiable w.r.t. the decoder and the model (alg. 2).

        :param generator: generator of the sampling noise, when ``noise`` is not given.
        :param noise: pre-drawn noise of shape :meth:`noise_shape` (B); the plan is then a deterministic function of
            ``belief`` and the parameters.
        :param callback: receives every iteration's :class:`~dcem_agents.math.CEMIterate`.
        :param start: resume from a sampling distribution ``(mean (B, d), std (B, d))`` reached after ``n_iters - k``
            iterations of an earlier call, with that call's last ``k`` noise slices ``noise`` (k, B, N, d): the last
            ``k`` iterations only, all differentiated (:func:`~dcem_agents.planning.latent.latent_plan`).
        :return: :class:`~dcem_agents.planning.latent.LatentPlan` with ``latent`` (B, d) and ``actions`` (B, H, A).
        """
        ref = next(self.model.parameters())
        belief = belief.to(device=ref.device, dtype=ref.dtype)
        kwargs = self.settings.as_kwargs()
        if start is not None:
            if noise is None:
                raise ValueError("a plan resumed from a start distribution needs the noise of its last iterations")
            kwargs.update(n_iters=noise.shape[0], grad_iters=None)
        return latent_plan(
            imagined_return_cost(self.model, belief, self.runtime),
            self.decoder,
            belief.shape[0],
            generator=generator,
            noise=noise,
            callback=callback,
            start=start,
            **kwargs,
        )

    def reset(self, n_envs: int) -> None:
        """Forget the executed plans (``reuse_plan``); the next :meth:`act` gets beliefs for ``n_envs``
        environments."""
        self._executed = None

    @torch.no_grad()
    def act(self, belief: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """First actions (n_envs, A) of the plans executed from the beliefs (n_envs, D) (:meth:`executed_plans`).

        With ``reuse_plan`` the plans are kept for the next call, which shifts them by one step; :meth:`reset` (start
        of new episodes) forgets them. On CUDA (``runtime.cuda_graphs``) the call replays a graph captured once per
        number of environments (and whether a previous plan is given); the noise is drawn from ``generator`` outside
        it, as :meth:`draw_noise` does.
        """
        ref = next(self.model.parameters())
        belief = belief.to(device=ref.device, dtype=ref.dtype)
        previous = None
        executed = self._executed
        if self.settings.reuse_plan and executed is not None and executed.shape[0] == belief.shape[0]:
            previous = torch.cat([executed[:, 1:], executed[:, -1:]], 1)
        if not use_cuda_graphs(self.runtime, ref.device):
            plans = self.executed_plans(belief, generator, previous=previous)
        else:
            noise = self.draw_noise(belief.shape[0], generator)
            key = (belief.shape[0], self.settings, self.runtime, previous is not None)
            if previous is None:
                plans = self.graphs.run(key, lambda b, e: self.executed_plans(b, noise=e), belief, noise)
            else:
                plans = self.graphs.run(key, lambda b, e, p: self.executed_plans(b, noise=e, previous=p), belief,
                                        noise, previous)
        self._executed = plans if self.settings.reuse_plan else None
        return plans[:, 0]

    def executed_plans(self, belief: Tensor, generator: torch.Generator | None = None, noise: Tensor | None = None,
                       previous: Tensor | None = None) -> Tensor:
        """The plans (B, H, A) the controller executes from ``belief`` (B, D) (:meth:`act` calls it without
        gradient).

        ``f_dec(ẑ)``, or with ``settings.execute_best`` the decoded best sample the search evaluated; given
        ``previous`` (B, H, A), a plan to keep (``reuse_plan``), each row keeps it when the model's cost of it is
        lower (a non-finite cost never wins).
        """
        ref = next(self.model.parameters())
        belief = belief.to(device=ref.device, dtype=ref.dtype)
        best = BestSample() if self.settings.execute_best else None
        mean_plan = self.plan(belief, generator, noise, callback=best).actions
        plans = mean_plan if best is None else self.decoder(best.sample)  # type: ignore[arg-type]  # set by the search
        if previous is None:
            return plans
        # one rollout scores the previous plan, and the mean plan too when the search did not score it
        cost = imagined_return_cost(self.model, belief, self.runtime)
        inf = float("inf")
        if best is None:
            kept, value = torch.nan_to_num(cost(torch.stack([previous, plans], 1)), nan=inf, posinf=inf,
                                           neginf=inf).unbind(1)
        else:  # BestSample's value is already +inf where the cost was not finite
            kept, value = torch.nan_to_num(cost(previous[:, None])[:, 0], nan=inf, posinf=inf, neginf=inf), best.value
        return torch.where((kept < value)[:, None, None], previous, plans)  # type: ignore[operator]
